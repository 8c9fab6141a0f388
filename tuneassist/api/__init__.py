"""The Python API: the checklist's readings for your own model, data and training loop.

People who already have a training script call these from it, as they would fastai's ``lr_find`` or
torch-lr-finder::

    import tuneassist
    result = tuneassist.range_test(model, optimizer, train_loader, val_loader=val_loader)
    print(result.plot())               # the terminal plot `tuneassist lr-find` prints
    print(result.suggestion.explanation)

    with tuneassist.track(name="my-net", hparams={"batch_size": 128}) as run:
        ...
        run.log(step, lr=lr, train_loss=loss)   # shows in `tuneassist runs`, `runs watch`, the TUI

This package imports torch only inside `range_test` (the other functions are numpy and SQLite only),
so `import tuneassist` stays torch-free for the UI, as the layering in DESIGN.md requires. One module
per function: `lr_range_test` (with the model state it saves in `model_state`), `curve_files`
(`read_curve`) and `tracking` (`track`); `diagnose` and `suggest_lr` are the advisor's own.
"""

from tuneassist import _API
from tuneassist.advisor.diagnosis import Diagnosis, diagnose  # noqa: F401
from tuneassist.advisor.lr_range import LRSuggestion, suggest_lr  # noqa: F401
from tuneassist.api.curve_files import read_curve, read_range_test  # noqa: F401
from tuneassist.api.lr_range_test import RangeTestResult, range_test  # noqa: F401
from tuneassist.api.tracking import TrackedRun, track  # noqa: F401

# The imports above are the exports (ruff cannot read a computed __all__).
__all__ = list(_API)  # one list: what the package re-exports lazily is what this module exports

