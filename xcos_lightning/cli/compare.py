"""``explain.py compare``: several models side by side in one table (markdown + CSV).

    explain.py compare runs/kz25_xcos/checkpoints/last.ckpt runs/kz25_arcface/checkpoints/last.ckpt \\
        --data lfw:../shared/data/lfw --methods random,corrrise,xcos --pairs 20 --out runs/compare [--json]

- ``SPEC``: model SPECs (``.ckpt``, ``<format>:<path>``, ``module:function``), one table column each.
- ``--data``: pair set SPECs (repeatable). Verification accuracy on each (``explain.py verify``'s protocol:
  flip TTA, 10 contiguous folds, mean +- std in %): the cosine of the embeddings, and the xCos score for xCos
  models. ``--verify-pairs N`` scores N genuine + N impostor pairs per set (seeded, in file order) instead
  of all of them.
- Faithfulness (the engine of ``explain.py benchmark``, ``xcos_lightning.metrics.protocols``, on the FIRST
  ``--data`` set, ``--pairs`` genuine + impostor pairs, each model at its own EER threshold on those pairs):
  per method deletion/insertion AUC, S-RISE flip fractions, DPR FMR/FNMR AUC, explainer seconds per pair.
  Methods take benchmark's options (``name:key=value``). Methods of the xCos score (``xcos``,
  ``gradcam:score=xcos``, ...) are skipped (``n/a``) for models without the xCos head.
- Parameters, and latency per pair: median wall time (``--latency-repeats`` timed runs after 3 warm-up runs)
  of scoring the first set's first pair, both faces in one batch, no flip (xCos models: ``xcos_maps``, i.e.
  S, W and the xCos score).
- ``--out``: ``table.md``, ``table.csv`` (one row per metric, one column per model), ``results.json`` and
  ``report.html`` (one self-contained page: the table, each model's curves and its maps of 2 genuine and 2
  impostor pairs, images inline).
  The markdown goes to stdout; ``--json`` adds one line ``{SPEC: {metric: value}}``. Progress on stderr.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xcos_lightning.cli.benchmark import EXAMPLES
from xcos_lightning.cli.benchmark import log as benchmark_log
from xcos_lightning.cli.benchmark_report import (COLUMNS, IDENTIFICATION_COLUMNS, PLOTS, example_figures, figure_html,
                                                 html_table, json_safe, write_report)
from xcos_lightning.datamodules.pair_set import PairSet
from xcos_lightning.cli.face_args import add_align_args, add_size_args, face_size, make_aligner, make_face_cache
from xcos_lightning.datamodules.pairs_file import load_pair_set
from xcos_lightning.errors import DataFormatError
from xcos_lightning.evaluate import default_batch_size, model_device, score_pair_set
from xcos_lightning.explain.registry import explains_xcos, list_explainers, parse_method
from xcos_lightning.metrics.faithfulness import FILLS
from xcos_lightning.explain.figure import line_plot
from xcos_lightning.metrics.protocols import (DEFAULT_PROTOCOLS, PairSetResults, ProtocolConfig, evaluate_pair_set,
                                              select_pairs)
from xcos_lightning.metrics.verification import kfold_accuracy
from xcos_lightning.models.device import prepare_for_device
from xcos_lightning.io.spec import MODEL_SPEC_HELP, load_model

FOLDS = 10
WARMUP = 3


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``compare`` on an ``argparse`` subparsers object."""
    parser = subparsers.add_parser("compare", help="several models in one table: accuracy, faithfulness, latency",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", metavar="SPEC", nargs="+", help=f"one column per model; {MODEL_SPEC_HELP}")
    parser.add_argument("--data", required=True, action="append",
                        help="pair set SPEC (repeatable); faithfulness runs on the first")
    parser.add_argument("--methods", default="random,corrrise", help="comma-separated explainers (default "
                        "random,corrrise; xcos applies to xCos models only)")
    parser.add_argument("--pairs", type=int, default=20, help="genuine and as many impostor pairs for the "
                        "faithfulness protocols (default 20)")
    parser.add_argument("--verify-pairs", type=int, default=None,
                        help="genuine and as many impostor pairs per set for accuracy (default: all pairs)")
    parser.add_argument("--out", required=True, type=Path, help="folder for table.md, table.csv, results.json")
    parser.add_argument("--steps", type=int, default=20, help="fraction steps of the protocols (default 20)")
    parser.add_argument("--fill", choices=FILLS, default="zero", help="deletion/insertion canvas (default zero)")
    parser.add_argument("--sides", choices=("a", "both"), default="a", help="perturb A only or A and B (default a)")
    parser.add_argument("--n-masks", type=int, default=None, help="masks of the mask methods (corrrise, rise, srise)")
    parser.add_argument("--seed", type=int, default=0, help="pair selection, patches and explainer seeds")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="pairs per forward pass of the accuracy runs (default: 4 on a CPU, 256 on a GPU); "
                             "the explainers and faithfulness protocols use their device default, as in benchmark")
    parser.add_argument("--num-workers", type=int, default=1,
                        help="image-decoding workers of the accuracy runs (default 1)")
    parser.add_argument("--pair-batch", type=int, default=8, help="pairs explained per call (default 8)")
    parser.add_argument("--latency-repeats", type=int, default=20, help="timed runs per model (default 20)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:i] (default auto)")
    parser.add_argument("--json", action="store_true", help="print {SPEC: {metric: value}} as the last line")
    add_size_args(parser)
    add_align_args(parser)
    return parser


def log(message: str) -> None:
    print(f"[compare] {message}", file=sys.stderr, flush=True)


def parse_methods(text: str) -> list[str]:
    """Method tokens (``name[:key=value...]``, as in benchmark) of ``--methods``, each once."""
    methods = list(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    try:
        unknown = sorted({parse_method(m)[0] for m in methods} - set(list_explainers()))
    except ValueError as err:
        raise DataFormatError(f"--methods {text!r}: {err}") from err
    if not methods or unknown:
        raise DataFormatError(f"--methods {text!r}: unknown or missing methods {unknown or methods}; "
                              f"choose from {list_explainers()}")
    return methods


def accuracy(spec: str, model: nn.Module, pair_set: PairSet, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """``{"cos": {"acc", "acc_std"}, ["xcos": ...]}``: 10-fold accuracy in ``[0, 1]`` with flip TTA. Logs the
    scoring's wall time (decoding or cache reads, forwards, scores), the verification part of compare."""
    start = time.perf_counter()
    scores = score_pair_set(model, pair_set, args.batch_size or default_batch_size(model_device(model)), flip=True,
                            num_workers=args.num_workers, desc=f"accuracy {pair_set.name}", cache=make_face_cache(args))
    labels = scores.pop("label")
    log(f"verification of {spec} on {pair_set.name}: {len(labels)} pairs scored in {time.perf_counter() - start:.1f} s")
    return {kind: kfold_accuracy(s, labels, FOLDS) for kind, s in scores.items()}


def latency_ms(model: nn.Module, pair_set: PairSet, repeats: int, device: torch.device) -> float:
    """Median milliseconds to score the set's first pair (one batch of both faces, no flip)."""
    item = pair_set[0]
    img_a, img_b = item["img_a"][None].to(device), item["img_b"][None].to(device)

    def score() -> None:
        if getattr(model, "has_xcos", False):
            model.xcos_maps(img_a, img_b)
        else:
            emb_a, emb_b = model(torch.cat([img_a, img_b])).float().chunk(2)
            F.cosine_similarity(emb_a, emb_b, dim=1)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # time the kernels, not their launch

    times = []
    with torch.no_grad():
        for n in range(WARMUP + repeats):
            start = time.perf_counter()
            score()
            if n >= WARMUP:
                times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def compare_model(spec: str, sets: dict[str, PairSet], faith_set: PairSet, methods: list[str],
                  args: argparse.Namespace, device: torch.device) -> tuple[dict[str, float | bool], PairSetResults]:
    """(flat ``{metric: value}`` of one model, its faithfulness measurement). Metric names are hierarchical:
    ``parameters``, ``xcos_head``, ``latency_ms_per_pair``, ``verify/<set>/acc_<cos|xcos>[_std]`` (in
    ``[0, 1]``; accuracy on ``sets``), ``faithfulness/threshold`` and ``explain/<method>/<metric>`` (on
    ``faith_set``); ``nan`` where a metric does not apply."""
    model = prepare_for_device(load_model(spec), device).eval()
    xcos = bool(getattr(model, "has_xcos", False))
    row: dict[str, float | bool] = {"parameters": float(sum(p.numel() for p in model.parameters())),
                                    "xcos_head": xcos}
    row["latency_ms_per_pair"] = latency_ms(model, next(iter(sets.values())), args.latency_repeats, device)
    for name, pair_set in sets.items():
        measured = accuracy(spec, model, pair_set, args)
        for kind in ("cos", "xcos"):
            m = measured.get(kind, {"acc": math.nan, "acc_std": math.nan})
            row[f"verify/{name}/acc_{kind}"], row[f"verify/{name}/acc_{kind}_std"] = m["acc"], m["acc_std"]
    usable = [m for m in methods if xcos or not explains_xcos(*parse_method(m))]
    config = ProtocolConfig(protocols=DEFAULT_PROTOCOLS, steps=args.steps, fills=(args.fill,), sides=args.sides,
                            seed=args.seed, pair_batch=args.pair_batch)
    options = {"seed": args.seed} | ({} if args.n_masks is None else {"n_masks": args.n_masks})
    measured = evaluate_pair_set(model, faith_set, usable, config, pairs=args.pairs, explainer_options=options,
                                 device=device, log=benchmark_log, examples=EXAMPLES)
    results = measured.metrics
    row["faithfulness/threshold"] = measured.info["threshold"]
    for method in methods:
        for _, key, _ in (c for c in COLUMNS if c not in IDENTIFICATION_COLUMNS):
            row[f"explain/{method}/{key}"] = results.get(method, {}).get(key, math.nan)
    return row, measured


LABELS = {key: f"{column} {arrow}".strip() for column, key, arrow in COLUMNS}


def label(metric: str) -> str:
    """Table label of a metric name: ``verify/lfw:x/acc_cos`` -> ``lfw:x: acc cos %``, ``explain/m/k`` ->
    ``m: <benchmark column> <arrow>``."""
    head, _, key = metric.rpartition("/")
    if metric.startswith("verify/"):
        return f"{head[len('verify/'):]}: acc {key[len('acc_'):]} %"
    if metric.startswith("explain/"):
        return f"{head[len('explain/'):]}: {LABELS[key]}"
    return {"parameters": "parameters", "xcos_head": "xCos head", "latency_ms_per_pair": "latency ms/pair",
            "faithfulness/threshold": "faithfulness threshold (EER)"}[metric]


def _cell(metric: str, row: dict[str, float | bool]) -> str:
    value = row[metric]
    if isinstance(value, bool):
        return "yes" if value else "no"
    if math.isnan(value):
        return "n/a"
    if metric == "parameters":
        return f"{value / 1e6:.3g} M"
    if metric.startswith("verify/"):
        return f"{100 * value:.2f} +- {100 * row[metric + '_std']:.2f}"
    return f"{value:.4g}"


def markdown_table(table: dict[str, dict[str, float | bool]]) -> str:
    """One row per metric (std folded into the accuracy rows), one column per model."""
    specs = list(table)
    metrics = [m for m in table[specs[0]] if not m.endswith("_std")]
    lines = ["| metric | " + " | ".join(f"`{s}`" for s in specs) + " |", "|---" * (len(specs) + 1) + "|"]
    lines += ["| " + " | ".join([label(m)] + [_cell(m, table[s]) for s in specs]) + " |" for m in metrics]
    return "\n".join(lines)


def write_report_html(out: Path, table: dict[str, dict[str, float | bool]], measured: dict[str, PairSetResults],
                      settings: dict) -> Path:
    """``out/report.html``: the table (cells tagged ``data-model`` / ``data-metric``), each model's
    deletion/insertion curves (one line per method) and its example pairs' maps; self-contained."""
    specs = list(table)
    metrics = [m for m in table[specs[0]] if not m.endswith("_std")]
    rows = [[(label(m), {})] + [(_cell(m, table[s]), {"data-model": s, "data-metric": m}) for s in specs]
            for m in metrics]
    sections = [("Models", html_table(["metric", *specs], rows))]
    with tempfile.TemporaryDirectory() as tmp:
        for spec, result in measured.items():
            plots = []
            for file, key, title, xlabel, ylabel in PLOTS:
                head = key.split("/")[0]
                fractions = f"{head}/fractions" if head in ("dpr", "identification") else "fractions"
                lines = {m: (c[fractions], c[key]) for m, c in result.curves.items() if key in c}
                if lines:
                    path = line_plot(lines, Path(tmp) / f"{len(plots)}.png", title=title, xlabel=xlabel,
                                     ylabel=ylabel)
                    plots.append(figure_html(path, f"{spec}: {title}"))
            sections.append((f"Curves: {spec}", "\n".join(plots) or "<p>no curves</p>"))
            sections.append((f"Example maps: {spec}", example_figures(result.examples, result.info["threshold"])))
        return write_report(out / "report.html", "explain.py compare", settings["summary"], sections)


def write_outputs(out: Path, table: dict[str, dict[str, float | bool]], settings: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(settings["summary"] + "\n\n" + markdown_table(table) + "\n")
    specs = list(table)
    with open(out / "table.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["metric", *specs])
        writer.writerows([r, *(table[s][r] for s in specs)] for r in table[specs[0]])
    (out / "results.json").write_text(json.dumps(json_safe({"settings": settings, "models": table}), indent=1))


def run(args: argparse.Namespace) -> int:
    """Compare every model SPEC; 0 on success (bad input raises ``XCosError``)."""
    methods = parse_methods(args.methods)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    sets: dict[str, PairSet] = {}
    size = face_size(args)  # one face size for every model compared: --size, else the template's
    aligner = make_aligner(args, size, device)
    for spec in dict.fromkeys(args.data):  # every set is checked (and aligned) before any model runs
        pair_set = load_pair_set(spec, size=size, crop=args.crop, aligner=aligner)
        if args.verify_pairs is not None:
            fewest = int(min(pair_set.labels.sum(), (~pair_set.labels).sum()))
            if not 1 <= args.verify_pairs <= fewest:
                raise DataFormatError(f"--verify-pairs {args.verify_pairs}: {spec} has {int(pair_set.labels.sum())} "
                                      f"genuine and {int((~pair_set.labels).sum())} impostor pairs; choose 1..{fewest}")
            pair_set = pair_set.subset(select_pairs(pair_set.labels, args.verify_pairs, args.seed))
        if len(pair_set) < FOLDS:
            raise DataFormatError(f"{spec}: {len(pair_set)} pairs; {FOLDS}-fold accuracy needs at least {FOLDS}")
        sets[spec] = pair_set
    # The faithfulness pairs come from the full first set, not from its --verify-pairs subset.
    first_spec = next(iter(sets))
    faith_set = (load_pair_set(first_spec, size=size, crop=args.crop, aligner=aligner) if args.verify_pairs is not None
                 else sets[first_spec])
    table, measured = {}, {}
    for n, spec in enumerate(dict.fromkeys(args.models), 1):
        log(f"model {n}/{len(args.models)}: {spec}")
        start = time.perf_counter()
        table[spec], measured[spec] = compare_model(spec, sets, faith_set, methods, args, device)
        log(f"model {n}/{len(args.models)} done in {time.perf_counter() - start:.1f} s")
    summary = (f"accuracy: flip TTA, {FOLDS} folds, on {', '.join(f'{s} ({len(p)} pairs)' for s, p in sets.items())}; "
               f"faithfulness: {args.pairs} genuine + {args.pairs} impostor pairs of {first_spec} (seed "
               f"{args.seed}) at each model's EER threshold, steps {args.steps}, fill {args.fill}; latency: median "
               f"of {args.latency_repeats} runs, one pair, no flip, on {device}")
    settings = {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"},
                "summary": summary}
    write_outputs(args.out, table, settings)
    write_report_html(args.out, table, measured, settings)
    log(f"wrote {args.out}/table.md, table.csv, results.json and report.html")
    print(summary + "\n\n" + markdown_table(table))
    if args.json:
        print(json.dumps(json_safe(table)))
    return 0
