"""Exceptions raised for bad input; each message names the file or value at fault and what to fix."""


class XCosError(Exception):
    """Base class of every error this package raises on purpose."""


class DataFormatError(XCosError, ValueError):
    """A data file (``.rec``, ``.idx``, ``.bin``, ``pairs.txt``, image) is malformed or inconsistent."""


class UnsafeFileError(XCosError):
    """A file would execute code or load objects outside the allowed types (crafted pickle, checkpoint)."""


class VerificationSetError(DataFormatError):
    """A pair set cannot measure verification (all genuine, all impostor, image paired with itself)."""


class ModelSpecError(XCosError, ValueError):
    """A model SPEC (checkpoint path or ``<format>:<path>``) cannot be resolved or loaded."""
