"""The contract between workstation and device: the bundle format and the preprocessing it names."""

from edgemeta.contract.bundle import FORMAT_NAME, FORMAT_VERSION, read_bundle, verify, write_bundle, zip_bundle
from edgemeta.contract.preprocess import default_spec
from edgemeta.errors import BundleError, InputError

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "BundleError", "InputError", "default_spec",
           "read_bundle", "verify", "write_bundle", "zip_bundle"]
