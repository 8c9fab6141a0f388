"""tuneassist: Smith's hyperparameter checklist for CNNs, as a terminal assistant."""

__version__ = "0.1.0"
