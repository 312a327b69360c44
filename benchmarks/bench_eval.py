"""Evaluation against the forward limit: ``explain.py verify`` and training-time validation, cold and warm.

One run prints, for one pair set (default: the 6,000 LFW pairs, 7,701 distinct images):

- ``bare forward``: the model's batched forward of every distinct face and its mirror (flip TTA) on faces
  already decoded into memory, under inference mode: the time evaluation cannot go below;
- ``verify cold`` / ``verify warm``: the wall time of the whole ``explain.py verify`` command (start-up, set
  loading, decoding in ``--workers`` DataLoader workers, forwards, metrics) with an empty face cache, then again
  with the cache it filled; with ``--align mtcnn`` the landmark cache is copied in first, so *cold* means no
  decoded face is cached (detection itself is measured in BENCHMARKS.md, "Face detection and alignment");
- with ``--train-config``: ``train.py validate`` of that config (the training-time validation, same set)
  cold and warm, beside the bare forward of that config's model (its grid, flip TTA);
- the ratios to the bare forward.

    .venv/bin/python benchmarks/bench_eval.py [--model mobilefacenet:../shared/weights/mobilefacenet_128d.pt] \
        [--data lfw:../shared/data/lfw] [--align none|mtcnn] [--threads 2] [--workers 1] \
        [--train-config configs/real/kz25_xcos_mobilefacenet.yaml]
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from xcos_lightning.align import default_cache_dir  # noqa: E402
from xcos_lightning.align.cache import CACHE_FILE  # noqa: E402
from xcos_lightning.cli.face_args import make_aligner  # noqa: E402
from xcos_lightning.datamodules.face_cache import DistinctImages  # noqa: E402
from xcos_lightning.datamodules.pairs_file import load_pair_set  # noqa: E402
from xcos_lightning.evaluate import default_batch_size, embed, faces_to_images  # noqa: E402
from xcos_lightning.io.spec import input_size, load_model  # noqa: E402


def timed(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


@torch.inference_mode()
def bare_forward(fn, faces: torch.Tensor, batch: int) -> float:
    """Seconds of ``fn`` over ``faces`` uint8 ``(M, H, W, 3)`` in batches (conversion to float included)."""
    fn(faces_to_images(faces[:batch], torch.device("cpu")))  # warm-up: allocator, oneDNN kernels
    start = time.perf_counter()
    for i in range(0, len(faces), batch):
        fn(faces_to_images(faces[i:i + batch], torch.device("cpu")))
    return time.perf_counter() - start


def copy_landmarks(folder: Path) -> None:
    """The user's landmark cache into ``folder`` (SQLite's backup API: consistent while others write)."""
    source = default_cache_dir() / CACHE_FILE
    if source.exists():
        with sqlite3.connect(source) as src, sqlite3.connect(folder / CACHE_FILE) as dst:
            src.backup(dst)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mobilefacenet:../shared/weights/mobilefacenet_128d.pt")
    parser.add_argument("--data", default="lfw:../shared/data/lfw")
    parser.add_argument("--align", default="none")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--train-config", default=None, help="also time train.py validate of this config")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    model = load_model(args.model).eval()
    size = input_size(model)
    align = argparse.Namespace(align=args.align, on_miss="crop", min_face_size=20, cache_dir=None, no_cache=False)
    pair_set = load_pair_set(args.data, size=size, aligner=make_aligner(align, size))
    faces = torch.stack([item["face"] for item in DistinctImages(pair_set)])  # decoded once, outside the timing
    batch = 2 * default_batch_size("cpu")
    rows = [("bare forward, verify's model", bare_forward(lambda x: embed(model, x, flip=True), faces, batch))]
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        cache.mkdir()
        copy_landmarks(cache)
        verify = [sys.executable, "explain.py", "verify", "--model", args.model, "--data", args.data, "--align",
                  args.align, "--on-miss", "crop", "--num-workers", str(args.workers), "--cache-dir", str(cache)]
        rows += [("explain.py verify, cold", timed(verify, env)), ("explain.py verify, warm", timed(verify, env))]
        if args.train_config:
            from lightning import LightningDataModule

            from xcos_lightning.cli.train import XCosCLI
            from xcos_lightning.module import XCosModule
            # the config's model as train.py builds it (parsed and instantiated, nothing run)
            sys.argv[1:] = []  # LightningCLI reads args= only
            cli = XCosCLI(XCosModule, LightningDataModule, subclass_mode_data=True, auto_configure_optimizers=False,
                          save_config_callback=None, run=False,
                          args=["--config", args.train_config, "--trainer.logger", "false"])
            grid_model = cli.model.model.eval()
            rows.append(("bare forward, the config's model (grid)",
                         bare_forward(lambda x: grid_model.grid(x, flip_tta=True), faces, batch)))
            validate = [sys.executable, "train.py", "validate", "--config", args.train_config,
                        "--data.val_sets", json.dumps({"lfw": args.data}),
                        "--data.face_cache", str(Path(tmp) / "val_faces"), "--trainer.logger", "false",
                        "--trainer.callbacks", "[]", "--trainer.enable_progress_bar", "false"]
            env_val = {**env, "XCOS_CACHE_DIR": str(cache)}
            rows += [("train.py validate, cold", timed(validate, env_val)),
                     ("train.py validate, warm", timed(validate, env_val))]
    load = os.getloadavg()
    print(f"{args.data}: {len(pair_set)} pairs, {len(faces)} distinct faces of {size[0]}x{size[1]}, align "
          f"{args.align}; {args.threads} threads, {args.workers} decoding workers; load after {load[0]:.1f}\n")
    print("| row | seconds | x bare forward |\n| --- | --- | --- |")
    for name, seconds in rows:
        base = rows[3][1] if "validate" in name else rows[0][1]
        print(f"| {name} | {seconds:.1f} | {seconds / base:.2f}x |")


if __name__ == "__main__":
    main()
