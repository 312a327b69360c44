"""LFW-style ``pairs.txt`` + identity folders -> :class:`PairSet`, and the ``data SPEC`` resolver.

``pairs.txt``: an optional header line ("10 300": 10 folds x 300 matched + 300 mismatched pairs, or
"1100": 1100 matched + 1100 mismatched as in pairsDevTrain.txt), then one pair per line, fields split by
tabs or spaces: ``name i j`` (matched) or ``name1 i name2 j`` (mismatched). Image ``i`` of ``name`` is
``root/name/name_%04d.jpg``. Indices may be written as floats with a zero fraction ("672."), as in
kz_celeb25's ``*_pairs.txt``.

A plain pairs list (``list:`` SPEC, for sets whose files are not named ``name_0001.jpg``): one pair per line,
``path_a path_b same`` (fields split by tabs when the line has one, so paths may hold spaces; else by spaces),
``same`` one of ``1 0 true false same diff genuine impostor``; paths relative to the list's folder (or to
``root`` in ``list:<root>:<file>``) or absolute; blank lines and lines starting with ``#`` are skipped.
"""
from __future__ import annotations

import re
from pathlib import Path

from xcos_lightning.align import FaceAligner
from xcos_lightning.datamodules.pair_set import PairSet
from xcos_lightning.datamodules.verification_bin import load_bin
from xcos_lightning.errors import DataFormatError

# The deep-funneled LFW images are 250x250 with the face roughly centred; a 120 px square around the
# centre (125, 125) holds the face about as tightly as a 112x112 aligned template after resizing.
LFW_CROP = 120
LFW_CENTER = (125.0, 125.0)

_INDEX = re.compile(r"\d{1,9}(\.0*)?")  # nine digits: far more images than any identity has


def _index(field: str, where: str) -> int:
    if not _INDEX.fullmatch(field):
        raise DataFormatError(f"{where}: image number {field[:20]!r} is not a whole number")
    return int(field.split(".")[0])


def _name(field: str, where: str) -> str:
    if field in (".", "..") or "/" in field or "\\" in field:
        raise DataFormatError(f"{where}: identity name {field[:40]!r} must be a plain folder name")
    return field


def parse_pairs(path: str | Path) -> list[tuple[str, int, str, int]]:
    """``(name_a, i, name_b, j)`` per pair line, in file order (matched pairs have ``name_a == name_b``)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: cannot read the pairs file as UTF-8 text ({exc})") from exc
    lines = [line.rstrip("\r") for line in text.split("\n")]
    expected = None
    first = lines[0].split() if lines else []
    if first and len(first) <= 2 and all(_INDEX.fullmatch(f) and "." not in f for f in first):
        expected = 2 * int(first[0]) * (int(first[1]) if len(first) == 2 else 1)
        lines[0] = ""
    pairs = []
    for n, line in enumerate(lines, 1):
        fields, where = line.split(), f"{path}:{n}"
        if not fields:
            continue
        if len(fields) == 3:
            name = _name(fields[0], where)
            pairs.append((name, _index(fields[1], where), name, _index(fields[2], where)))
        elif len(fields) == 4:
            pairs.append((_name(fields[0], where), _index(fields[1], where),
                          _name(fields[2], where), _index(fields[3], where)))
        else:
            raise DataFormatError(f"{where}: expected 'name i j' or 'name1 i name2 j', got {line[:80]!r}")
    if not pairs:
        raise DataFormatError(f"{path}: no pair lines found")
    if expected is not None and expected != len(pairs):
        raise DataFormatError(f"{path}: header {' '.join(first)!r} announces {expected} pairs but the file "
                              f"lists {len(pairs)}; the file is cut or merged from several")
    return pairs


def require_images(paths: list[Path], listed_in: Path, named_by: str, hint: str) -> None:
    """Raise one DataFormatError counting the files of ``paths`` (listed in ``listed_in``, a ``named_by``) that
    do not exist and naming the first five, then ``hint``."""
    missing = sorted({p for p in paths if not p.is_file()})
    if missing:
        raise DataFormatError(f"{listed_in}: {len(missing)} images named by the {named_by} are missing, e.g. "
                              f"{[str(p) for p in missing[:5]]}; {hint}")


_SAME = {"1": True, "true": True, "same": True, "genuine": True,
         "0": False, "false": False, "diff": False, "different": False, "impostor": False}


def read_pairs_list(list_path: str | Path, root: str | Path | None = None, size: int = 112, crop: int | None = None,
                    check: bool = True) -> PairSet:
    """PairSet of a plain pairs list (module docstring); every image must exist.

    Raises DataFormatError (line number) for malformed lines or labels, DataFormatError listing the first
    missing images and their count, VerificationSetError (with ``check``) for sets that cannot measure
    verification.
    """
    list_path = Path(list_path)
    root = list_path.parent if root is None else Path(root)
    try:
        text = list_path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{list_path}: cannot read the pairs list as UTF-8 text ({exc})") from exc
    sources, labels = [], []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [f.strip() for f in line.split("\t")] if "\t" in line else line.split()
        if len(fields) != 3:
            raise DataFormatError(f"{list_path}:{n}: expected 'path_a path_b same', got {line[:80]!r}")
        same = _SAME.get(fields[2].lower())
        if same is None:
            raise DataFormatError(f"{list_path}:{n}: label {fields[2][:20]!r} is not one of {' '.join(_SAME)}")
        sources += [root / fields[0], root / fields[1]]
        labels.append(same)
    if not labels:
        raise DataFormatError(f"{list_path}: no pair lines found")
    require_images(sources, list_path, "pairs list", f"paths are relative to {root}")
    pair_set = PairSet(sources, labels, str(list_path), size, crop)
    return pair_set.check() if check else pair_set


def read_pairs_file(pairs_path: str | Path, root: str | Path, size: int = 112, crop: int | None = None,
                    crop_center: tuple[float, float] | None = None, ext: str = ".jpg",
                    check: bool = True) -> PairSet:
    """PairSet of the images named by ``pairs_path`` under ``root``; every image must exist.

    Raises DataFormatError (line number) for malformed lines, DataFormatError listing the first missing
    images and their count, VerificationSetError (with ``check``) for sets that cannot measure verification.
    """
    pairs_path, root = Path(pairs_path), Path(root)
    pairs = parse_pairs(pairs_path)
    sources = [root / name / f"{name}_{i:04d}{ext}" for a, i, b, j in pairs for name, i in ((a, i), (b, j))]
    require_images(sources, pairs_path, "pairs file", f"looked under {root}: check the root folder and extension")
    pair_set = PairSet(sources, [a == b for a, _, b, _ in pairs], str(pairs_path), size, crop, crop_center)
    return pair_set.check() if check else pair_set


def load_pair_set(spec: str, size: int = 112, crop: int | None = None, check: bool = True,
                  aligner: FaceAligner | None = None, num_workers: int = 0) -> PairSet:
    """Resolve a ``data SPEC`` into a PairSet of ``size`` x ``size`` faces.

    - ``path/to/set.bin``: insightface verification ``.bin`` (already aligned; ``crop`` optional).
    - ``lfw:<folder>``: ``<folder>/pairs.txt`` + identity folders of 250x250 deep-funneled LFW; unless
      ``crop`` is given, a 120 px square around (125, 125) is cut, then resized to ``size``.
    - ``pairs:<root>:<pairs file>``: any LFW-style pairs file over identity folders under ``root``.
    - ``list:<file>`` or ``list:<root>:<file>``: a plain pairs list ``path_a path_b same`` (module docstring).

    With ``aligner`` every image's face is detected (``num_workers`` decoding workers; landmarks cached) and
    warped onto the template; the crop above is then only the fallback of images without a face.
    """
    if spec.startswith("lfw:"):
        folder = Path(spec[len("lfw:"):])
        pair_set = read_pairs_file(folder / "pairs.txt", folder, size, LFW_CROP if crop is None else crop,
                                   LFW_CENTER, check=check)
    elif spec.startswith("pairs:"):
        fields = spec.split(":", 2)
        if len(fields) != 3 or not fields[1] or not fields[2]:
            raise DataFormatError(f"data spec {spec!r}: expected 'pairs:<root>:<pairs file>'")
        pair_set = read_pairs_file(fields[2], fields[1], size, crop, check=check)
    elif spec.startswith("list:"):
        fields = spec[len("list:"):].split(":", 1)
        if not all(fields):
            raise DataFormatError(f"data spec {spec!r}: expected 'list:<file>' or 'list:<root>:<file>'")
        root, path = (None, fields[0]) if len(fields) == 1 else fields
        pair_set = read_pairs_list(path, root, size, crop, check=check)
    elif spec.endswith(".bin"):
        pair_set = load_bin(spec, size, crop, check=check)
    else:
        raise DataFormatError(f"data spec {spec!r}: expected a .bin path, 'lfw:<folder>' or "
                              "'pairs:<root>:<pairs file>'")
    return pair_set if aligner is None else pair_set.align(aligner, num_workers)
