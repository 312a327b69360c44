"""Evaluation against the forward limit: ``explain.py verify`` and training-time validation, cold and warm.

One run prints, for one pair set (default: the 6,000 LFW pairs, 7,701 distinct images):

- ``bare forward``: the model's batched forward of every distinct face and its mirror (flip TTA) on faces
  already decoded into memory, under inference mode: the time evaluation cannot go below;
- ``verify cold`` / ``verify warm``: the wall time of the whole ``explain.py verify`` command (start-up, set
  loading, decoding in ``--workers`` DataLoader workers, forwards, metrics) with an empty face cache, then again
  with the cache it filled, in ``--rounds`` rounds, each after its own bare forward; with ``--align mtcnn`` the
  landmark cache is copied in first, so *cold* means no decoded face is cached (detection itself is measured in
  BENCHMARKS.md, "Face detection and alignment");
- with ``--train-config``: the validation a training epoch of that config runs (its model and data module built
  as ``train.py fit`` builds them, ``Trainer.validate`` in this process): cold (``prepare_data`` filling an empty
  face cache, then the validation: a fit's first epoch) and ``--rounds`` warm rounds (every later epoch),
  interleaved with the bare forward of that config's model (its grid, flip TTA); then the whole
  ``train.py validate`` command cold and warm (start-up and model construction included);
- with ``--compare SPEC [SPEC ...]``: ``explain.py compare`` of those models on the same set, cold (its own
  empty face cache) and warm, in ``--rounds`` rounds, each after the models' own bare forwards; its
  verification part is the ``[compare] verification of <SPEC> on <set>: N pairs scored in S s`` lines it logs
  (the explainers and latency it also runs are left out: ``--methods random --pairs 2 --steps 2``), beside
  each model's bare forward;
- the ratios to the bare forward. Evaluation on a CPU runs a BatchNorm-folded copy of the model
  (``evaluate.forward_copy``), so the bare forward is timed with the same copy (and, as a row of its own, with
  the model as loaded).

With ``--forward-variants N`` it prints instead the bare forward of the first N distinct faces with the model
as loaded, BatchNorm folded, channels-last, and both, in interleaved rounds (``--rounds``), the evidence for
``forward_copy``; with ``--batch-sweep N``, the folded model's bare forward of the first N distinct faces at each
of ``--batch-sizes`` faces per forward, with each pass's page faults, the evidence for the CPU's
``evaluate.default_batch_size``.

    .venv/bin/python benchmarks/bench_eval.py [--model mobilefacenet:../shared/weights/mobilefacenet_128d.pt] \
        [--data lfw:../shared/data/lfw] [--align none|mtcnn] [--threads 2] [--workers 1] \
        [--train-config configs/real/kz25_xcos_mobilefacenet.yaml] [--compare SPEC SPEC] \
        [--forward-variants 1024 | --batch-sweep 768]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import re
import resource
import sqlite3
import statistics
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
from xcos_lightning.cpu_allocator import retain_freed_memory  # noqa: E402
from xcos_lightning.datamodules.face_cache import DistinctImages  # noqa: E402
from xcos_lightning.datamodules.pairs_file import load_pair_set  # noqa: E402
from xcos_lightning.evaluate import default_batch_size, embed, faces_to_images, forward_copy  # noqa: E402
from xcos_lightning.io.spec import INPUT_SIZE, input_size, load_model  # noqa: E402
from xcos_lightning.models.device import set_channels_last  # noqa: E402
from xcos_lightning.models.fusion import fast_model  # noqa: E402

SCORED = re.compile(r"\[compare\] verification of (.+) on \S+: \d+ pairs scored in ([\d.]+) s")


def timed(command: list[str], env: dict) -> tuple[float, str]:
    """(wall seconds, stderr) of ``command`` run from the repository root."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - start, done.stderr


def model_forward(model: torch.nn.Module):
    """What evaluation computes per image with flip TTA: an xCos model's grid, else the embedding."""
    if hasattr(model, "maps_from_grids"):
        return lambda x: model.grid(x, flip_tta=True)
    return lambda x: embed(model, x, flip=True)


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


def forward_variants(model: torch.nn.Module, faces: torch.Tensor, batch: int, rounds: int) -> None:
    """Bare forward of ``faces`` with ``model`` as loaded, folded, channels-last and both, interleaved rounds."""
    variants = {"as loaded": model, "BatchNorm folded": fast_model(model, channels_last=False),
                "channels-last": set_channels_last(copy.deepcopy(model), True),
                "folded + channels-last": fast_model(model, channels_last=True)}
    times = {name: [] for name in variants}
    for _ in range(rounds):
        for name, net in variants.items():
            times[name].append(bare_forward(model_forward(net), faces, batch))
    base = statistics.median(times["as loaded"])
    print(f"{len(faces)} faces (+ mirrors), {batch} per forward, {rounds} interleaved rounds\n")
    print("| forward | median s | ms per face (2 views) | x as loaded | rounds (s) |\n| --- | --- | --- | --- | --- |")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"| {name} | {med:.2f} | {1000 * med / len(faces):.2f} | {med / base:.2f}x | "
              f"{', '.join(f'{v:.2f}' for v in values)} |")


def batch_sweep(model: torch.nn.Module, faces: torch.Tensor, sizes: list[int], rounds: int) -> None:
    """Bare forward of ``faces`` with the folded ``model`` at each number of faces per forward (``sizes``),
    interleaved rounds, with the process's minor page faults per pass (why the CPU batch is small)."""
    fn = model_forward(forward_copy(model))
    times, faults = {b: [] for b in sizes}, {b: [] for b in sizes}
    for _ in range(rounds):
        for b in sizes:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            times[b].append(bare_forward(fn, faces, b))
            faults[b].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(f"{len(faces)} faces (+ mirrors), BatchNorm folded, {rounds} interleaved rounds\n")
    print("| faces per forward | ms per face (median) | minor page faults per pass (median) | rounds (s) |\n"
          "| --- | --- | --- | --- |")
    for b in sizes:
        print(f"| {b} | {1000 * statistics.median(times[b]) / len(faces):.2f} | {statistics.median(faults[b]):,.0f} | "
              f"{', '.join(f'{v:.2f}' for v in times[b])} |")


def distinct_faces(args: argparse.Namespace, size: tuple[int, int], limit: int | None = None):
    """(pair set, uint8 faces ``(M, H, W, 3)`` of its first ``limit`` (default all) distinct images) of ``--data``
    at ``size``, decoded once."""
    align = argparse.Namespace(align=args.align, on_miss="crop", min_face_size=20, cache_dir=None, no_cache=False)
    pair_set = load_pair_set(args.data, size=size, aligner=make_aligner(align, size))
    images = DistinctImages(pair_set)
    return pair_set, torch.stack([images[k]["face"] for k in range(min(limit or len(images), len(images)))])


def epoch_validation(args: argparse.Namespace, faces: torch.Tensor, batch: int, face_cache: Path):
    """(rows, median bare forward seconds, summary line) of the validation a training epoch of ``--train-config``
    runs, timed in this process: the config's model and data module as ``train.py fit`` builds them, then
    ``Trainer.validate`` (set-up, DataLoader workers, forwards of the folded copy, metrics), interleaved with the
    bare forward of the same model, ``--rounds`` warm rounds.

    *Cold* is the first epoch of a fit with an empty face cache: ``prepare_data`` (once per fit: decode, align
    and cache every face) plus the validation; *warm* is every later epoch's (and a later fit's) validation. The
    imports and the model's construction are left out: a fit pays them once, not per epoch (the whole-command
    rows include them)."""
    from lightning import LightningDataModule

    from xcos_lightning.cli.train import XCosCLI
    from xcos_lightning.module import XCosModule
    sys.argv[1:] = []  # LightningCLI reads args= only
    cli = XCosCLI(XCosModule, LightningDataModule, subclass_mode_data=True, auto_configure_optimizers=False,
                  save_config_callback=None, run=False,
                  args=["--config", args.train_config, "--trainer.logger", "false", "--trainer.callbacks", "[]",
                        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
                        "--data.val_sets", json.dumps({"lfw": args.data}), "--data.face_cache", str(face_cache)])
    trainer, module, data = cli.trainer, cli.model, cli.datamodule

    def bare() -> float:  # what validation_step runs: the grid of the folded copy, flip TTA
        return bare_forward(model_forward(forward_copy(module.model.eval())), faces, batch)

    def validate() -> float:
        start = time.perf_counter()
        trainer.validate(module, datamodule=data, verbose=False)
        return time.perf_counter() - start

    first = bare()
    start = time.perf_counter()
    data.prepare_data()
    prepare = time.perf_counter() - start
    cold = prepare + validate()
    rows = [("bare forward, the config's model (grid, BatchNorm folded), round 1", first, first),
            (f"epoch validation, cold (prepare_data {prepare:.1f} s + validation)", cold, first)]
    ratios, references = [], [first]
    for r in range(args.rounds):
        reference, seconds = bare(), validate()
        ratios.append(seconds / reference)
        references.append(reference)
        rows += [(f"bare forward, the config's model, warm round {r + 1}", reference, reference),
                 (f"epoch validation, warm round {r + 1}", seconds, reference)]
    summary = (f"epoch validation, warm / bare forward per round: {', '.join(f'{x:.3f}' for x in ratios)}; "
               f"median {statistics.median(ratios):.3f}x")
    return rows, statistics.median(references), summary


def verify_rounds(args: argparse.Namespace, model: torch.nn.Module, faces: torch.Tensor, batch: int, tmp: Path,
                  env: dict) -> tuple[list, str]:
    """(rows, summary line) of ``--rounds`` interleaved rounds, each: the bare forward of the folded copy (what
    verify runs), then the whole ``explain.py verify`` command cold (a face cache of the round's own, holding
    only the landmarks) and warm (the same command again), both compared with that round's bare forward (the
    machine's load moves between rounds; a ratio within one round is what the targets are about). Round 1
    also times the model as loaded."""
    folded, rows, ratios = model_forward(forward_copy(model)), [], {"cold": [], "warm": []}
    for r in range(1, args.rounds + 1):
        bare = bare_forward(folded, faces, batch)
        rows.append((f"bare forward, verify's model (BatchNorm folded: what verify runs), round {r}", bare, bare))
        if r == 1:
            rows.append(("bare forward, verify's model as loaded, round 1",
                         bare_forward(model_forward(model), faces, batch), bare))
        cache = tmp / f"verify_cache{r}"
        cache.mkdir()
        copy_landmarks(cache)
        verify = [sys.executable, "explain.py", "verify", "--model", args.model, "--data", args.data, "--align",
                  args.align, "--on-miss", "crop", "--num-workers", str(args.workers), "--cache-dir", str(cache)]
        for run in ("cold", "warm"):
            seconds = timed(verify, env)[0]
            ratios[run].append(seconds / bare)
            rows.append((f"explain.py verify, {run}, round {r}", seconds, bare))
    summary = "\n".join(f"explain.py verify {run} / bare forward per round: {', '.join(f'{x:.3f}' for x in v)}; "
                        f"median {statistics.median(v):.3f}x" for run, v in ratios.items())
    return rows, summary


def compare_rounds(args: argparse.Namespace, faces: torch.Tensor, batch: int, tmp: Path, env: dict) -> tuple[list, str]:
    """(rows, summary line) of ``--rounds`` interleaved rounds of ``explain.py compare`` of the ``--compare``
    models, each: every model's bare forward (folded copy), then compare cold (a face cache of the round's own,
    not verify's, holding only the landmarks) and warm; its verification part (the times it logs per model) is
    compared with that round's bare forwards."""
    models = {spec: model_forward(forward_copy(load_model(spec).eval())) for spec in args.compare}
    rows, ratios = [], {"cold": [], "warm": []}
    for r in range(1, args.rounds + 1):
        bares = {spec: bare_forward(fn, faces, batch) for spec, fn in models.items()}
        total = sum(bares.values())
        rows += [(f"bare forward, `{spec}` (BatchNorm folded), round {r}", t, t) for spec, t in bares.items()]
        rows.append((f"bare forward, all compared models, round {r}", total, total))
        cache = tmp / f"compare_cache{r}"
        cache.mkdir()
        copy_landmarks(cache)
        compare = [sys.executable, "explain.py", "compare", *args.compare, "--data", args.data, "--methods",
                   "random", "--pairs", "2", "--steps", "2", "--latency-repeats", "1", "--out",
                   str(tmp / f"compare{r}"), "--align", args.align, "--on-miss", "crop", "--num-workers",
                   str(args.workers), "--cache-dir", str(cache)]
        for run in ("cold", "warm"):
            wall, log = timed(compare, env)
            scored = {spec: float(t) for spec, t in SCORED.findall(log)}
            if set(scored) != set(args.compare):
                sys.exit(f"compare logged verification times of {sorted(scored)}, expected {args.compare}")
            ratios[run].append(sum(scored.values()) / total)
            rows += [(f"explain.py compare {run}, verification of `{spec}`, round {r}", t, bares[spec])
                     for spec, t in scored.items()]
            rows += [(f"explain.py compare {run}, verification of all models, round {r}", sum(scored.values()), total),
                     (f"explain.py compare {run}, whole command (with 2-pair explainers, latency), round {r}", wall,
                      total)]
    summary = "\n".join(f"explain.py compare {run}, verification of all models / their bare forwards per round: "
                        f"{', '.join(f'{x:.3f}' for x in v)}; median {statistics.median(v):.3f}x"
                        for run, v in ratios.items())
    return rows, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mobilefacenet:../shared/weights/mobilefacenet_128d.pt")
    parser.add_argument("--data", default="lfw:../shared/data/lfw")
    parser.add_argument("--align", default="none")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--train-config", default=None, help="also time train.py validate of this config")
    parser.add_argument("--compare", nargs="+", metavar="SPEC", default=None,
                        help="also time explain.py compare of these models (its verification part)")
    parser.add_argument("--skip-verify", action="store_true", help="leave out the verify rows")
    parser.add_argument("--forward-variants", type=int, default=None, metavar="N",
                        help="only compare the bare forward variants of --model on N distinct faces")
    parser.add_argument("--batch-sweep", type=int, default=None, metavar="N",
                        help="only time the folded --model's bare forward of N distinct faces at --batch-sizes")
    parser.add_argument("--batch-sizes", default="8,16,32,64,128", help="faces per forward for --batch-sweep")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds of --forward-variants, of verify (bare forward, cold, warm) and "
                             "warm rounds of the epoch validation")
    args = parser.parse_args()
    retain_freed_memory()  # as explain.py and train.py do: the bare forward runs under the commands' allocator
    torch.set_num_threads(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    model = load_model(args.model).eval()
    size = input_size(model)
    pair_set, faces = distinct_faces(args, size, args.forward_variants or args.batch_sweep)  # outside the timing
    batch = 2 * default_batch_size("cpu")
    if args.forward_variants:
        return forward_variants(model, faces, batch, args.rounds)
    if args.batch_sweep:
        return batch_sweep(model, faces, [int(b) for b in args.batch_sizes.split(",")], args.rounds)
    rows = []  # (name, seconds, bare forward seconds it is compared with)
    summaries = []  # lines: per-round ratios and their medians
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        cache.mkdir()
        copy_landmarks(cache)
        if not args.skip_verify:
            verify_rows, summary = verify_rounds(args, model, faces, batch, Path(tmp), env)
            rows += verify_rows
            summaries.append(summary)
        if args.compare:
            _, cmp_faces = (pair_set, faces) if size == INPUT_SIZE else distinct_faces(args, INPUT_SIZE)
            compare_rows, summary = compare_rounds(args, cmp_faces, batch, Path(tmp), env)
            rows += compare_rows
            summaries.append(summary)
        if args.train_config:
            os.environ["XCOS_CACHE_DIR"] = str(cache)  # the copied landmarks; faces go to the folders named below
            epoch_rows, bare, summary = epoch_validation(args, faces, batch, Path(tmp) / "epoch_faces")
            rows += epoch_rows
            summaries.append(summary)
            validate = [sys.executable, "train.py", "validate", "--config", args.train_config,
                        "--data.val_sets", json.dumps({"lfw": args.data}),
                        "--data.face_cache", str(Path(tmp) / "val_faces"), "--trainer.logger", "false",
                        "--trainer.callbacks", "[]", "--trainer.enable_progress_bar", "false"]
            rows += [("train.py validate, cold (whole command)", timed(validate, env)[0], bare),
                     ("train.py validate, warm (whole command)", timed(validate, env)[0], bare)]
    load = os.getloadavg()
    print(f"{args.data}: {len(pair_set)} pairs, {len(faces)} distinct faces of {size[0]}x{size[1]}, align "
          f"{args.align}; {args.threads} threads, {args.workers} decoding workers; load after {load[0]:.1f}\n")
    print("| row | seconds | x its bare forward |\n| --- | --- | --- |")
    for name, seconds, base in rows:
        print(f"| {name} | {seconds:.1f} | {seconds / base:.2f}x |")
    print("", *summaries, sep="\n")


if __name__ == "__main__":
    main()
