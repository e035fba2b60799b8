"""The device runtime: numpy + onnxruntime only (importing it never imports torch; a test checks)."""

from edgemeta.errors import BundleError, EdgemetaError, InputError, NotFittedError, StateError
from edgemeta.runtime.classifier import FewShotClassifier
from edgemeta.runtime.loaded_bundle import Bundle

__all__ = ["Bundle", "BundleError", "EdgemetaError", "FewShotClassifier", "HeadEnsemble", "InputError",
           "NotFittedError", "StateError"]


def __getattr__(name: str) -> object:
    """``HeadEnsemble`` is imported on first use: a classifier's start-up never needs it."""
    if name == "HeadEnsemble":
        from edgemeta.runtime.ensemble import HeadEnsemble

        return HeadEnsemble
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
