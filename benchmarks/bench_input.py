"""Input pipeline throughput: decode + augment images/s per worker of the training data sets, beside bare JPEG decoding.

Real data (``--data``, default ``../shared/data/kz_celeb25``): its ``training/`` identity folders (112 x 112
JPEGs) and the ``.rec`` files of ``validation/`` and ``testing/`` (the same kind of JPEG records as
MS1M-ArcFace's ``train.rec``; kz_celeb25 ships no training ``.rec``; a missing ``.rec`` is left out, as on
the GPU machine, where only ``training/`` travels). Rows, images per second of one
process on one thread (``torch``, OpenCV and the decoders single-threaded: what one DataLoader worker does):

- ``bare decode, PIL``: ``Image.open(bytes).convert("RGB")`` to a uint8 array, the decoder every reader of
  the package uses (``datamodules/image_io.py``), on JPEG bytes already in memory;
- ``bare decode, torchvision CPU``: ``torchvision.io.decode_jpeg`` of the same bytes, one image per call;
- ``<set>, decode``: a data set item without augmentation (read, decode, size check, float tensor);
- ``<set>, decode + augment``: the same with ``train_transform`` (flip, affine, colour jitter);
- ``training pairs``: items of ``FaceTrainPairs`` (what the training DataLoader's workers compute: two
  augmented images per item, the augmentation reseeded per item), counted in images;
- ``FaceDataModule loader, W workers``: batches of the real training loader (``--batch`` pairs, ``--workers``
  workers, pinned memory on CUDA machines) drawn by the main process, in images/s overall and per worker,
  timed from the first batch (worker start-up, reported apart, excluded);
- with ``--gpu``: ``torchvision.io.decode_jpeg`` on a CUDA device, ``--gpu-batch`` images per call (lists of
  byte tensors), synchronised, plus the host-to-device copy of the bytes.

``--consume R`` (e.g. a GPU step's images/s) adds the number of workers of each row that would feed
``R`` images/s (R divided by the row's per-worker rate; workers scale only while the node has cores).
Each row runs ``--rounds`` times over ``--images`` images (cycled); the table gives medians.

    .venv/bin/python benchmarks/bench_input.py [--data ../shared/data/kz_celeb25] [--images 400] [--rounds 3] \
        [--workers 2] [--batch 32] [--consume 5000] [--gpu]
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import time
from itertools import cycle, islice
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
import torchvision
from PIL import Image

from xcos_lightning.datamodules.face_data import FaceDataModule, FaceTrainPairs, open_train_set
from xcos_lightning.datamodules.transforms import train_transform

REPO = Path(__file__).resolve().parents[1]


def rate(fn: Callable[[], int], rounds: int) -> float:
    """Median images/s of ``rounds`` calls of ``fn`` (which returns how many images it handled)."""
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        count = fn()
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def jpeg_bytes(args: argparse.Namespace) -> list[bytes]:
    """The encoded training images: ``--images`` files of the identity folders, read once into memory."""
    files = sorted((args.data / "training").glob("*/*.jpg"))
    if not files:
        raise SystemExit(f"no training JPEGs under {args.data / 'training'} (see --data)")
    step = max(1, len(files) // args.images)
    return [p.read_bytes() for p in files[::step][:args.images]]


def decode_pil(blobs: list[bytes]) -> int:
    for blob in blobs:
        with Image.open(io.BytesIO(blob)) as img:
            np.asarray(img.convert("RGB"))
    return len(blobs)


def decode_torchvision(tensors: list[torch.Tensor]) -> int:
    for data in tensors:
        torchvision.io.decode_jpeg(data)
    return len(tensors)


def decode_gpu(tensors: list[torch.Tensor], batch: int, device: torch.device) -> int:
    for start in range(0, len(tensors), batch):
        torchvision.io.decode_jpeg(tensors[start:start + batch], device=device)
    torch.cuda.synchronize(device)
    return len(tensors)


def items(dataset, indices: list[int], images_per_item: int = 1) -> Callable[[], int]:
    def run() -> int:
        for i in indices:
            dataset[i]
        return images_per_item * len(indices)

    return run


def loader_rate(args: argparse.Namespace, train: Path) -> tuple[float, float]:
    """(images/s of the training loader after its first batch, seconds to the first batch)."""
    data = FaceDataModule(str(train), batch_size=args.batch, num_workers=args.workers, seed=0)
    data.setup("fit")
    loader = data.train_dataloader()
    batches = max(2, 2 * args.images // (2 * args.batch))
    start = time.perf_counter()
    stream = iter(loader)
    next(stream)
    first = time.perf_counter()
    taken = sum(1 for _ in islice(stream, batches - 1))
    elapsed = time.perf_counter() - first
    del stream
    return 2 * args.batch * taken / elapsed, first - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = Path(os.environ.get("XCOS_SHARED", REPO.parent / "shared"))
    parser.add_argument("--data", type=Path, default=shared / "data/kz_celeb25")
    parser.add_argument("--images", type=int, default=400, help="images per round of each row")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="workers of the FaceDataModule loader row (0: none)")
    parser.add_argument("--batch", type=int, default=32, help="pairs per batch of the loader row")
    parser.add_argument("--consume", type=float, default=None, help="images/s a training step takes (workers column)")
    parser.add_argument("--gpu", action="store_true", help="also decode on the GPU (torchvision.io.decode_jpeg)")
    parser.add_argument("--gpu-batch", type=int, default=256, help="images per GPU decode call")
    args = parser.parse_args()
    if args.gpu and not torch.cuda.is_available():
        parser.error("--gpu: no CUDA device")
    torch.set_num_threads(1)
    cv2.setNumThreads(1)

    blobs = jpeg_bytes(args)
    tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
    rows: dict[str, float] = {
        "bare decode, PIL": rate(lambda: decode_pil(blobs), args.rounds),
        "bare decode, torchvision CPU": rate(lambda: decode_torchvision(tensors), args.rounds),
    }
    if args.gpu:
        device = torch.device("cuda")
        decode_gpu(tensors, args.gpu_batch, device)  # warm-up: nvJPEG handles, allocations
        rows[f"bare decode, torchvision CUDA, batches of {args.gpu_batch}"] = rate(
            lambda: decode_gpu(tensors, args.gpu_batch, device), args.rounds)
        rows["bare decode, torchvision CUDA, incl. bytes host-to-device"] = rate(
            lambda: decode_gpu([t.to(device) for t in tensors], args.gpu_batch, device), args.rounds)

    sets = {"identity folders": args.data / "training",
            "RecordIO validation.rec": args.data / "validation/validation.rec",
            "RecordIO testing.rec": args.data / "testing/testing.rec"}
    missing = [str(path) for name, path in sets.items() if not path.exists()]
    if str(sets["identity folders"]) in missing:
        raise SystemExit(f"no identity folders at {sets['identity folders']} (see --data)")
    sets = {name: path for name, path in sets.items() if path.exists()}
    sizes = {}
    for name, path in sets.items():
        plain = open_train_set(path)
        augmented = open_train_set(path, transform=train_transform(0))
        sizes[name] = len(plain)
        indices = list(islice(cycle(range(len(plain))), args.images))
        rows[f"{name}, decode"] = rate(items(plain, indices), args.rounds)
        rows[f"{name}, decode + augment"] = rate(items(augmented, indices), args.rounds)
    pairs = FaceTrainPairs(open_train_set(sets["identity folders"], transform=train_transform(0)), seed=0)
    keys = list(range(args.images // 2))
    rows["training pairs (identity folders), per item"] = rate(items(pairs, keys, images_per_item=2), args.rounds)
    loader = None
    if args.workers > 0:
        total, startup = loader_rate(args, sets["identity folders"])
        loader = (total, startup)

    print(f"data {args.data} ({', '.join(f'{k}: {v} images' for k, v in sizes.items())}); {len(blobs)} JPEGs of "
          f"{np.mean([len(b) for b in blobs]) / 1024:.1f} KiB on average; one thread; {args.rounds} rounds of "
          f"{args.images} images; torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"Pillow {Image.__version__}, OpenCV {cv2.__version__}; {os.cpu_count()} CPUs; load average "
          f"{os.getloadavg()[0]:.1f}" + (f"; not found, left out: {', '.join(missing)}" if missing else "") + "\n")
    extra = f" | workers for {args.consume:,.0f} images/s" if args.consume else ""
    print(f"| row | images/s per worker{extra} |\n|---|---|" + ("---|" if args.consume else ""))
    for name, value in rows.items():
        need = f" | {args.consume / value:.1f}" if args.consume else ""
        print(f"| {name} | {value:,.0f}{need} |")
    if loader is not None:
        total, startup = loader
        need = f" | {args.consume / (total / args.workers):.1f}" if args.consume else ""
        print(f"| FaceDataModule loader, {args.workers} workers: {total:,.0f} images/s in all | "
              f"{total / args.workers:,.0f}{need} |")
        print(f"\nloader start-up (workers spawned, first batch of {2 * args.batch} images): {startup:.2f} s; "
              f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
