"""A small TOML writer for the profile layout: scalars, lists of scalars, tables, arrays of tables.

tomllib only reads; profiles are written back by this, and `save_profile` re-reads what it wrote.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any


def _toml_value(v: Any, key: str) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"{key}: {v} cannot be stored")
        r = repr(v)
        return r if any(c in r for c in ".en") else r + ".0"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x, key) for x in v) + "]"
    raise ValueError(f"{key}: values of type {type(v).__name__} cannot be stored in a profile")


def dumps_toml(d: Mapping[str, Any]) -> str:
    """Serialise nested dicts (two levels, plus arrays of tables) to TOML that tomllib reads back."""
    lines: list[str] = []

    def scalars(m: Mapping[str, Any], prefix: str) -> None:
        for k, v in m.items():
            if isinstance(v, Mapping) or (
                isinstance(v, list) and v and all(isinstance(x, Mapping) for x in v)
            ):
                continue
            if v is None:
                continue
            lines.append(f"{k} = {_toml_value(v, prefix + k)}")

    def tables(m: Mapping[str, Any], prefix: str) -> None:
        for k, v in m.items():
            if isinstance(v, Mapping):
                lines.append("")
                lines.append(f"[{prefix}{k}]")
                scalars(v, f"{prefix}{k}.")
                tables(v, f"{prefix}{k}.")
            elif isinstance(v, list) and v and all(isinstance(x, Mapping) for x in v):
                for item in v:
                    lines.append("")
                    lines.append(f"[[{prefix}{k}]]")
                    scalars(item, f"{prefix}{k}.")

    scalars(d, "")
    tables(d, "")
    return "\n".join(lines).lstrip("\n") + "\n"
