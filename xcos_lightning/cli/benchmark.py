"""``explain.py benchmark``: every faithfulness protocol for a list of explainers, one model, one pair set.

    explain.py benchmark --model mobilefacenet:mfn.pt --data lfw:/data/lfw --methods random,corrrise \\
        --pairs 50 --out runs/bench [--steps 20] [--fill zero|mean|blur] [--n-masks 500] [--seed 0] [--json]

- Methods: registry names, each optionally with constructor options, ``name:key=value:key=value``
  (e.g. ``corrrise:correlation=spearman``, ``occlusion:stride=16:patch_sizes=16/32``, ``xcos:map=W``;
  ``/`` separates the items of a tuple); the token is the row's name, so one method can take several rows.

- Pairs: ``--pairs`` genuine and as many impostor pairs drawn without replacement (``--seed``), in index order.
- Decisions: by the embedding cosine, or with ``--score xcos`` by an xCos model's xCos score.
- Threshold: ``--threshold`` if given, else the EER threshold (FAR = FRR, interpolated on the ROC) of the
  model's plain score (no flip augmentation, as the explainers score pairs) on the selected clean pairs,
  centred in the gap between the clean scores around it (same clean decisions, robust to float noise).
- Perturbed forwards of the protocols run through ``fast_embedding(model)`` (BatchNorm folded, the same
  function up to float rounding).
- Per method (``xcos_lightning.metrics.protocols``, the engine ``compare`` and the training monitor share):
  Deletion/Insertion AUC % on genuine pairs (similarity order: signed map descending, accuracy =
  acceptance) and impostor pairs (dissimilarity order: signed map ascending, accuracy = rejection), ties
  broken by a permutation seeded per pair; S-RISE flip fractions (grid of ``--steps``, refined to the
  pixel), split by clean decision; DPR FMR/FNMR AUC % on the patched versions of the same pairs (27 patches
  of 16 px, ``--seed``; donor identities from the image folders when the set has them); seconds per pair =
  explainer wall time on the clean pairs. Methods of the xCos score (``xcos``) are centred on the xCos
  score's own EER threshold on the same pairs.
- ``--protocols identification`` (opt-in; needs identity folders): image A of each chosen genuine pair is a
  probe, the other images of the chosen pairs the gallery; each probe is explained against its ``--top-k``
  gallery candidates (similarity maps averaged), and Deletion/Insertion AUC % is measured on rank-1 accuracy.
- Paired comparison: for each ``--baseline`` method (default ``random``) among the methods, each method minus
  the baseline, metric by metric, as the mean per-pair difference with a 95 % paired-bootstrap interval
  (``--bootstrap`` resamples; ``xcos_lightning.metrics.bootstrap``).
- ``--out``: ``table.md`` (and the comparison), ``table.csv``, ``per_pair.csv``, ``results.json`` (settings,
  metrics, comparison, curves), PNG curves and ``report.html`` (one self-contained page: the tables, the
  curves, every method's maps of the first 2 genuine and 2 impostor pairs, the comparisons; images inline).
  The markdown table goes to stdout; ``--json`` adds one line ``{method: {metric: value}}`` at the end.
  Progress goes to stderr.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from xcos_lightning.cli.benchmark_report import (COLUMNS, benchmark_report, compare_with_baseline, comparison_table,
                                                 json_safe, markdown_table, write_outputs)
from xcos_lightning.cli.face_args import add_align_args, add_size_args, face_size, make_aligner
from xcos_lightning.datamodules.pairs_file import load_pair_set
from xcos_lightning.errors import DataFormatError
from xcos_lightning.explain.registry import list_explainers, parse_method
from xcos_lightning.io.spec import MODEL_SPEC_HELP, load_model
from xcos_lightning.metrics.faithfulness import FILLS
from xcos_lightning.metrics.protocols import DEFAULT_PROTOCOLS, PROTOCOLS, ProtocolConfig, evaluate_pair_set
from xcos_lightning.models.device import prepare_for_device

EXAMPLES = 2  # genuine and impostor pairs drawn in report.html
# Reported as NaN in the table when a protocol did not run (or a group had no pairs).
EXTRA_KEYS = ("flip_unflipped_match", "flip_unflipped_nonmatch", "dpr_fmr_patched", "dpr_fnmr_patched",
              "identification_rank1")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", required=True, help=MODEL_SPEC_HELP)
    parser.add_argument("--data", required=True,
                        help="pair set SPEC: set.bin | lfw:<folder> | pairs:<root>:<file> | list:[<root>:]<file>")
    parser.add_argument("--methods", required=True, help="comma-separated explainers, e.g. random,corrrise")
    parser.add_argument("--pairs", type=int, default=50, help="genuine pairs, and as many impostor pairs (default 50)")
    parser.add_argument("--out", type=Path, default=None, help="folder for table.md/.csv, results.json and plots")
    parser.add_argument("--protocols", default=",".join(DEFAULT_PROTOCOLS),
                        help=f"comma-separated subset of {','.join(PROTOCOLS)} "
                             f"(default {','.join(DEFAULT_PROTOCOLS)}); the others are NaN")
    parser.add_argument("--top-k", type=int, default=3,
                        help="identification: gallery candidates each probe is explained against (default 3)")
    parser.add_argument("--steps", type=int, default=20, help="fraction steps n, p = k/n (default 20 = 5%%)")
    parser.add_argument("--fill", choices=FILLS, default="zero", help="deletion/insertion canvas (default zero)")
    parser.add_argument("--extra-fills", default="",
                        help=f"more canvases ({','.join(FILLS)}) scored on the same maps, as extra columns "
                        "'<metric>_<fill>' (default none)")
    parser.add_argument("--sides", choices=("a", "both"), default="a",
                        help="deletion/insertion on image A only or on A and B in turn (default a)")
    parser.add_argument("--n-masks", type=int, default=None, help="masks of the mask methods (corrrise, rise, "
                        "srise; default: the method's own)")
    parser.add_argument("--seed", type=int, default=0, help="pair selection, patches, tie order and explainer seeds")
    parser.add_argument("--threshold", type=float, default=None,
                        help="fixed decision threshold (default: EER threshold on the selected clean pairs)")
    parser.add_argument("--score", choices=("cos", "xcos"), default="cos",
                        help="verifier of every decision: the embedding cosine (default) or, for an xCos model, "
                             "the xCos score")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per forward pass (default: 8 on CPU, 64 on GPU)")
    parser.add_argument("--pair-batch", type=int, default=8, help="pairs explained per call (default 8)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:i] (default auto)")
    parser.add_argument("--json", action="store_true", help="print {method: {metric: value}} as the last line")
    parser.add_argument("--baseline", default="random",
                        help="comma-separated methods every other is compared with, pair by pair, those among "
                             "--methods (default random)")
    parser.add_argument("--bootstrap", type=int, default=1000,
                        help="bootstrap resamples for the 95%% intervals of those differences (default 1000; 0: none)")
    add_size_args(parser)
    add_align_args(parser)
    return parser


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``benchmark`` on an ``argparse`` subparsers object; ``func`` is set to ``run``."""
    parser = subparsers.add_parser("benchmark", help="faithfulness protocols for several explainers",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def log(message: str) -> None:
    print(f"[benchmark] {message}", file=sys.stderr, flush=True)


def split_list(text: str | list[str]) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]`` (lists pass through)."""
    return text if isinstance(text, list) else [t.strip() for t in text.split(",") if t.strip()]


def protocol_config(args: argparse.Namespace) -> ProtocolConfig:
    """The engine's settings from this command's options (``ValueError`` names a bad one)."""
    return ProtocolConfig(protocols=tuple(split_list(args.protocols)), steps=args.steps,
                          fills=(args.fill, *split_list(args.extra_fills)), sides=args.sides, seed=args.seed,
                          top_k=args.top_k, pair_batch=args.pair_batch, batch_size=args.batch_size, score=args.score)


def explainer_options(args: argparse.Namespace) -> dict:
    """Options every method gets (``build_explainer``: ``n_masks`` and ``seed`` only where they apply)."""
    options = {"seed": args.seed, "batch_size": args.batch_size}
    if args.n_masks is not None:
        options["n_masks"] = args.n_masks
    return options


def table_rows(metrics: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Each method's scalars with NaN for every table column it lacks (protocol not run, group without pairs)."""
    keys = [key for _, key, _ in COLUMNS] + list(EXTRA_KEYS)
    return {m: {**{k: math.nan for k in keys}, **row} for m, row in metrics.items()}


def run(args: argparse.Namespace) -> int:
    """Run the benchmark described by parsed ``args``; 0 on success. Bad input raises an ``XCosError``
    (``DataFormatError`` for the options), which ``explain.py`` reports in one line with exit code 2."""
    methods = split_list(args.methods)
    fills = split_list(args.extra_fills)
    if set(fills) - set(FILLS) or args.fill in fills:
        raise DataFormatError(f"--extra-fills {','.join(fills)!r}: choose from {','.join(FILLS)}, other than --fill")
    protocols = split_list(args.protocols)
    if not protocols or set(protocols) - set(PROTOCOLS):
        raise DataFormatError(f"--protocols {','.join(protocols)!r}: choose from {','.join(PROTOCOLS)}")
    try:
        unknown = sorted({parse_method(m)[0] for m in methods} - set(list_explainers()))
        config = protocol_config(args)
    except ValueError as exc:
        raise DataFormatError(str(exc)) from exc
    if not methods or unknown:
        raise DataFormatError(f"unknown or missing methods {unknown or methods}; choose from {list_explainers()}")
    return _run(args, methods, config)


def _run(args: argparse.Namespace, methods: list[str], config: ProtocolConfig) -> int:
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    model = prepare_for_device(load_model(args.model), device).eval()
    size = face_size(args, model)
    pair_set = load_pair_set(args.data, size=size, crop=args.crop, aligner=make_aligner(args, size, device))
    measured = evaluate_pair_set(model, pair_set, methods, config, pairs=args.pairs,
                                 threshold=args.threshold, explainer_options=explainer_options(args), device=device,
                                 log=log, examples=EXAMPLES if args.out is not None else 0)
    results, per_pair, info = table_rows(measured.metrics), measured.per_pair, measured.info
    settings = {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}, **info}
    baselines = [b for b in split_list(args.baseline) if b in per_pair] if args.bootstrap > 0 else []
    comparison = {b: compare_with_baseline(per_pair, b, args.bootstrap, args.seed) for b in baselines
                  if len(per_pair) > 1}
    if args.out is not None:
        write_outputs(args.out, results, measured.curves, settings, per_pair, comparison)
        benchmark_report(args.out, results, settings, comparison, measured.examples)
        log(f"wrote {args.out}/table.md, table.csv, per_pair.csv, results.json, report.html and the plots")
    print(info["summary"] + "\n\n" + markdown_table(results))
    for baseline, rows in comparison.items():
        print("\n" + comparison_table(rows, baseline))
    if args.json:
        print(json.dumps(json_safe(results)))
    return 0
