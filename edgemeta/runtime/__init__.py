"""The device runtime: numpy + onnxruntime only (importing it never imports torch; a test checks)."""

from edgemeta.contract.bundle import BundleError
from edgemeta.contract.preprocess import InputError
from edgemeta.runtime.classifier import FewShotClassifier
from edgemeta.runtime.ensemble import HeadEnsemble
from edgemeta.runtime.loaded_bundle import Bundle

__all__ = ["Bundle", "BundleError", "FewShotClassifier", "HeadEnsemble", "InputError"]
