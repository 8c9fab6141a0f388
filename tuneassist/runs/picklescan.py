"""A torch-free check of a checkpoint before anything loads it: archive CRCs and pickle opcodes.

Nothing is executed: the opcodes are only listed. The UI and `runs resume` use it to refuse a bad
checkpoint at once with a clear reason; the worker's torch.load(weights_only=True) stays the gate.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

_TORCH_DTYPE = re.compile(
    r"(u?int\d*|float\d*(_\w+)?|bfloat16|half|double|bool|complex\d*|cfloat|cdouble|chalf|bcomplex32|"
    r"bits\w+|q(u)?int\w+|long|short)"
)
_SAFE_BUILTINS = {"set", "frozenset", "bytearray", "complex", "slice"}


def _safe_global(module: str, name: str) -> bool:
    """Whether a pickle global is one a tensors-only checkpoint uses (torch's weights_only set, in kind)."""
    if (module, name) in (("collections", "OrderedDict"), ("torch._tensor", "_rebuild_from_type_v2")):
        return True
    if module in ("builtins", "__builtin__"):  # pickle protocol 2 writes the Python 2 name
        return name in _SAFE_BUILTINS
    if module == "torch._utils":
        return name.startswith("_rebuild_")
    if module in ("torch", "torch.cuda"):
        return (
            name.endswith(("Storage", "Tensor"))
            or name in ("Size", "device", "dtype")
            or _TORCH_DTYPE.fullmatch(name) is not None
        )
    return False


def checkpoint_problem(path: Path) -> str | None:
    """Why a checkpoint must not be loaded (truncated, damaged, or pickling more than tensors), or None.

    Torch-free, and it executes nothing: the zip archive's CRCs are checked and the pickle's opcodes are
    only listed, never run. The UI and `runs resume` use it to refuse a bad checkpoint at once with a
    clear reason; the worker's own load (torch.load weights_only=True) stays the real safety gate.
    """
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
            if bad is not None:
                return f"is damaged (bad checksum in {bad})"
            pkls = [n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
            if len(pkls) != 1:
                return "is not a PyTorch checkpoint (no data.pkl inside)"
            data = zf.read(pkls[0])
    except FileNotFoundError:
        return "does not exist"
    except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError):
        return "is truncated or damaged (not a complete archive; a write was cut short)"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    return _pickle_problem(data)


def _pickle_problem(data: bytes) -> str | None:
    """Why a pickle holds more than tensors (or is unreadable), or None; its opcodes are only listed.

    Walk the opcodes with a shadow stack (values kept for strings only), as pickletools.dis does, so
    STACK_GLOBAL's module and name are the real operands, not just the last strings seen.
    """
    import pickletools

    mark = object()
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    strings = ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING")
    try:
        for op, arg, _pos in pickletools.genops(data):
            name = op.name
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                if not _safe_global(module, attr):
                    return f"holds a pickled object ({module}.{attr}), not just tensors"
            elif name == "STACK_GLOBAL":
                named = (stack[-2], stack[-1]) if len(stack) >= 2 else (None, None)
                if not (isinstance(named[0], str) and isinstance(named[1], str)):
                    return "holds a pickled object (a global it names indirectly), not just tensors"
                if not _safe_global(*named):
                    return f"holds a pickled object ({named[0]}.{named[1]}), not just tensors"
            if name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                memo[len(memo) if name == "MEMOIZE" else int(arg or 0)] = stack[-1] if stack else None
                continue
            before, after = op.stack_before, op.stack_after
            if pickletools.markobject in before or (name == "POP" and stack and stack[-1] is mark):
                while stack and stack[-1] is not mark:
                    stack.pop()
                if stack:
                    stack.pop()
                n_pop = before.index(pickletools.markobject) if pickletools.markobject in before else 0
            else:
                n_pop = len(before)
            top = stack[-1] if stack else None
            del stack[max(0, len(stack) - n_pop) :]
            if name in strings:
                stack.append(arg)
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo.get(int(arg or 0)))
            elif name == "DUP":
                stack.extend([top, top])
            else:
                stack.extend(mark if x is pickletools.markobject else None for x in after)
    except Exception as e:  # noqa: BLE001 - any parse failure means the pickle is damaged
        return f"is damaged (unreadable pickle: {type(e).__name__})"
    return None
