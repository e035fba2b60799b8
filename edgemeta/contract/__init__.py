"""The contract between workstation and device: the bundle format and the preprocessing it names."""

from edgemeta.contract.bundle import (FORMAT_NAME, FORMAT_VERSION, BundleError, read_bundle,
                                      verify, write_bundle, zip_bundle)
from edgemeta.contract.preprocess import InputError, default_spec

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "BundleError", "InputError", "default_spec",
           "read_bundle", "verify", "write_bundle", "zip_bundle"]
