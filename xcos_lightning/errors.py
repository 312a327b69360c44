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


def error_message(exc: BaseException) -> str:
    """The message to print for ``exc``: its own text, or, for an exception a DataLoader worker raised, the
    worker's original message instead of torch's re-raised text ("Caught DataFormatError in DataLoader worker
    process 0. Original Traceback (most recent call last): ..." plus the worker's whole traceback)."""
    text = str(exc)
    head, marker, trace = text.partition("\nOriginal Traceback (most recent call last):\n")
    if not (marker and head.startswith(f"Caught {type(exc).__name__} ")):
        return text
    # traceback.format_exception ends with "<module>.<qualname>: <message>" (the message may span lines)
    name = type(exc).__qualname__ if type(exc).__module__ == "builtins" else \
        f"{type(exc).__module__}.{type(exc).__qualname__}"
    start = trace.rfind(f"\n{name}: ")
    return trace[start + len(name) + 3:].strip() if start >= 0 else text
