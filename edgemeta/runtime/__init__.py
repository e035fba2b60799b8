"""The device runtime: numpy + onnxruntime only (importing it never imports torch; a test checks)."""

from edgemeta.errors import BundleError, EdgemetaError, InputError, NotFittedError, StateError
from edgemeta.runtime.classifier import FewShotClassifier
from edgemeta.runtime.ensemble import HeadEnsemble
from edgemeta.runtime.loaded_bundle import Bundle

__all__ = ["Bundle", "BundleError", "EdgemetaError", "FewShotClassifier", "HeadEnsemble", "InputError",
           "NotFittedError", "StateError"]
