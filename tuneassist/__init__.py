"""tuneassist: Smith's hyperparameter checklist for CNNs, as a terminal assistant.

The Python API (`range_test`, `suggest_lr`, `diagnose`, `track`, `read_curve`) lives in
`tuneassist.api` and is loaded on first use, so `import tuneassist` never imports torch (the UI
stays torch-free; only `range_test` loads it, when called).
"""

from typing import Any

__version__ = "0.1.0"

_API = (
    "Diagnosis",
    "LRSuggestion",
    "RangeTestResult",
    "TrackedRun",
    "diagnose",
    "range_test",
    "read_curve",
    "suggest_lr",
    "track",
)
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    """`tuneassist.range_test` and the rest of the API, imported from tuneassist.api when first used."""
    if name in _API or name == "api":
        import importlib

        api = importlib.import_module("tuneassist.api")  # not `from tuneassist import api`: that asks here
        return api if name == "api" else getattr(api, name)
    raise AttributeError(f"module 'tuneassist' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
