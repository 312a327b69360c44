"""Read insightface verification ``.bin`` files (lfw.bin, cfp_fp.bin, agedb_30.bin, ...) without trusting them.

A ``.bin`` is a pickle of ``(list of 2N encoded images as bytes, list of N bools)``; pair ``i`` is items
``2i`` and ``2i+1``. Unpickling runs whatever callables the file names, so this reader refuses every
global except the two a bytes/bool list can need: Python 3 pickles at protocol <= 2 store ``bytes`` as
``_codecs.encode(latin-1 text, "latin1")`` and empty bytes as ``bytes()``. Protocol >= 3 (and Python 2
files, whose ``str`` loads as bytes) need no global at all.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path

from xcos_lightning.datamodules.pair_set import PairSet
from xcos_lightning.errors import DataFormatError, UnsafeFileError


class _Refused(Exception):
    """Raised inside unpickling; turned into UnsafeFileError naming the file."""


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused(f"_codecs.encode({type(text).__name__}, {encoding!r:.40}) "
                       "(pickles store bytes only as encode(str, 'latin1'))")
    return text.encode("latin1")


def _empty_bytes(*args: object) -> bytes:
    # pickle writes bytes() only for b""; arguments would let a file allocate arbitrary memory
    if args:
        raise _Refused(f"bytes() with arguments {args!r:.60}")
    return b""


_ALLOWED = {("_codecs", "encode"): _latin1_bytes, ("builtins", "bytes"): _empty_bytes,
            ("__builtin__", "bytes"): _empty_bytes}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise _Refused(f"global {module}.{name}")

    def persistent_load(self, pid: object) -> object:
        raise _Refused(f"persistent id {str(pid)[:60]!r}")


def _unpickle(path: Path) -> object:
    try:
        # encoding="bytes": Python 2 files store images as str, which must load as bytes, not text
        return _RestrictedUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except _Refused as exc:
        raise UnsafeFileError(f"{path}: refused to load {exc}: a verification .bin holds only bytes and "
                              "bools, so this file was made by other code or crafted to run code; "
                              "do not unpickle it") from None
    except Exception as exc:  # corrupt pickles raise UnpicklingError, EOFError, ValueError, MemoryError, ...
        raise DataFormatError(f"{path}: not a readable verification .bin ({type(exc).__name__}: {exc}); "
                              "re-download or re-create it") from exc


def load_bin(path: str | Path, size: int = 112, crop: int | None = None,
             crop_center: tuple[float, float] | None = None, check: bool = True) -> PairSet:
    """Load a ``.bin`` as a :class:`PairSet` named by its path; ``check`` raises on unusable pair sets.

    Raises UnsafeFileError for pickles that name any other global (nothing is executed), DataFormatError
    for anything else that is not ``(2N bytes, N bools)``, VerificationSetError (with ``check``) for
    all-genuine / all-impostor sets and self-pairs.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: verification .bin not found")
    obj = _unpickle(path)
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2 and all(isinstance(x, (list, tuple)) for x in obj)):
        raise DataFormatError(f"{path}: expected a pickled (images, issame) pair of lists, got {type(obj).__name__}")
    images, issame = obj
    if not all(isinstance(b, (bytes, bytearray)) for b in images):
        raise DataFormatError(f"{path}: the image list holds non-bytes items; expected encoded JPEG/PNG bytes")
    if not all(type(x) in (bool, int) and x in (0, 1) for x in issame):
        raise DataFormatError(f"{path}: the issame list holds values other than True/False")
    if len(images) != 2 * len(issame):
        raise DataFormatError(f"{path}: {len(images)} images for {len(issame)} pairs; expected twice as many images")
    pairs = PairSet([bytes(b) for b in images], [bool(x) for x in issame], str(path), size, crop, crop_center)
    return pairs.check() if check else pairs
