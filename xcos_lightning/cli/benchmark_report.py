"""The benchmark's outputs: results table, paired comparisons with a baseline, CSV/JSON files and plots."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from torch import Tensor

from xcos_lightning.metrics.bootstrap import Difference, paired_difference
from xcos_lightning.metrics.faithfulness import FILLS
from xcos_lightning.metrics.plots import line_plot

# (column, JSON metric name, direction) of the results table; identification's columns apart for compare.
IDENTIFICATION_COLUMNS = (("id del", "identification_deletion", "↓"),
                          ("id ins", "identification_insertion", "↑"))
COLUMNS = (
    ("del gen", "deletion_genuine", "↓"), ("ins gen", "insertion_genuine", "↑"),
    ("del imp", "deletion_impostor", "↓"), ("ins imp", "insertion_impostor", "↑"),
    ("flip del match", "flip_deletion_match", "↓"), ("flip ins match", "flip_insertion_match", "↓"),
    ("flip del nonmatch", "flip_deletion_nonmatch", "↓"), ("flip ins nonmatch", "flip_insertion_nonmatch", "↓"),
    ("DPR FMR", "dpr_fmr_auc", "↓"), ("DPR FNMR", "dpr_fnmr_auc", "↓"), *IDENTIFICATION_COLUMNS,
    ("s/pair", "seconds_per_pair", ""),
)
PLOTS = (  # file, curve key, title, x label, y label
    ("deletion_genuine", "genuine/deletion", "Deletion, genuine pairs (similarity maps)", "fraction deleted",
     "accuracy"),
    ("insertion_genuine", "genuine/insertion", "Insertion, genuine pairs (similarity maps)", "fraction inserted",
     "accuracy"),
    ("deletion_impostor", "impostor/deletion", "Deletion, impostor pairs (dissimilarity maps)", "fraction deleted",
     "accuracy"),
    ("insertion_impostor", "impostor/insertion", "Insertion, impostor pairs (dissimilarity maps)", "fraction inserted",
     "accuracy"),
    ("dpr_fmr", "dpr/fmr", "DPR on patched pairs: FMR", "fraction of pixels restored", "FMR"),
    ("dpr_fnmr", "dpr/fnmr", "DPR on patched pairs: FNMR", "fraction of pixels restored", "FNMR"),
    ("identification_deletion", "identification/deletion", "Identification deletion (probe vs top-K gallery)",
     "fraction deleted", "rank-1 accuracy"),
    ("identification_insertion", "identification/insertion", "Identification insertion (probe vs top-K gallery)",
     "fraction inserted", "rank-1 accuracy"),
)


def markdown_table(results: dict[str, dict[str, float]]) -> str:
    """One row per method; the columns of ``COLUMNS`` (each with the ``_<fill>`` copies of extra fills)
    that hold a number for some method."""
    columns = [(f"{column} {suffix}".strip(), f"{key}_{suffix}".rstrip("_"), arrow)
               for column, key, arrow in COLUMNS for suffix in ("", *FILLS)]
    columns = [c for c in columns if any(not math.isnan(r.get(c[1], math.nan)) for r in results.values())]
    head = "| method | " + " | ".join(f"{c} {arrow}".strip() for c, _, arrow in columns) + " |"
    rule = "|---" * (len(columns) + 1) + "|"
    rows = ["| " + " | ".join([m] + [_fmt(r.get(key)) for _, key, _ in columns]) + " |" for m, r in results.items()]
    return "\n".join([head, rule, *rows])


def _fmt(value: float) -> str:
    return "nan" if value is None or math.isnan(value) else f"{value:.4g}"


def json_safe(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def write_outputs(out: Path, results: dict, curves: dict, settings: dict, per_pair: dict | None = None,
                  comparison: dict | None = None) -> None:
    """``table.md`` (and one comparison table per baseline), ``table.csv``, ``results.json`` (settings, metrics,
    comparison ``{baseline: {method: {metric: Difference fields}}}``, curves), ``per_pair.csv``
    (``index,label,method,metric,value``: each pair's value, for the pairs of the group the metric averages)
    and the PNG curves."""
    out.mkdir(parents=True, exist_ok=True)
    tables = [settings["summary"], markdown_table(results)]
    tables += [comparison_table(rows, baseline) for baseline, rows in (comparison or {}).items()]
    (out / "table.md").write_text("\n\n".join(tables) + "\n")
    with open(out / "table.csv", "w", newline="") as f:
        writer = csv.writer(f)
        keys = list(next(iter(results.values())))
        writer.writerow(["method", *keys])
        writer.writerows([m, *(r[k] for k in keys)] for m, r in results.items())
    if per_pair:
        indices, labels = settings["pair_indices"], settings["pair_labels"]
        with open(out / "per_pair.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["index", "label", "method", "metric", "value"])
            for method, metrics in per_pair.items():
                for metric, (values, group) in metrics.items():
                    writer.writerows([indices[i], int(labels[i]), method, metric, f"{float(values[i]):.6g}"]
                                     for i in group.nonzero().flatten().tolist())
    comparison = {b: {m: {k: d._asdict() for k, d in row.items()} for m, row in rows.items()}
                  for b, rows in (comparison or {}).items()}
    (out / "results.json").write_text(json.dumps(json_safe({"settings": settings, "metrics": results,
                                                             "comparison": comparison, "curves": curves}), indent=1))
    for file, key, title, xlabel, ylabel in PLOTS:
        head = key.split("/")[0]
        fractions = f"{head}/fractions" if head in ("dpr", "identification") else "fractions"
        lines = {m: (c[fractions], c[key]) for m, c in curves.items() if key in c}
        if not lines:  # protocol not run
            continue
        line_plot(lines, out / f"{file}.png", title=title, xlabel=xlabel, ylabel=ylabel)


def column(metric: str) -> tuple[str, str]:
    """(table column, ``"↓"`` / ``"↑"`` / ``""``) of a metric name of ``COLUMNS``, also with an extra fill's
    ``_<fill>`` suffix: ``deletion_genuine_blur`` -> ``("del gen blur", "↓")``."""
    for name, key, arrow in COLUMNS:
        for suffix in ("", *FILLS):
            if metric == f"{key}_{suffix}".rstrip("_"):
                return f"{name} {suffix}".strip(), arrow
    return metric, ""


def compare_with_baseline(per_pair: dict[str, dict[str, tuple[Tensor, Tensor]]], baseline: str, resamples: int,
                          seed: int) -> dict[str, dict[str, Difference]]:
    """``{method: {metric: Difference}}``: each method minus ``baseline`` on the same pairs, with its 95 %
    paired-bootstrap interval (``metrics.bootstrap``); every metric both methods have."""
    reference = per_pair[baseline]
    return {method: {metric: paired_difference(values, reference[metric][0], group, resamples, seed)
                     for metric, (values, group) in metrics.items() if metric in reference}
            for method, metrics in per_pair.items() if method != baseline}


def comparison_table(comparison: dict[str, dict[str, Difference]], baseline: str) -> str:
    """Markdown: per method and metric, ``method - baseline`` and its interval; ✓ when the interval lies on the
    better side of 0, ✗ on the worse side (neither: no significant difference at the 95 % level)."""
    metrics = list(dict.fromkeys(m for row in comparison.values() for m in row))
    head = "| method | " + " | ".join(" ".join(column(m)).strip() for m in metrics) + " |"
    rows = []
    for method, row in comparison.items():
        cells = []
        for metric in metrics:
            d = row.get(metric)
            if d is None or math.isnan(d.mean):
                cells.append("n/a")
                continue
            better = -1 if column(metric)[1] == "↓" else 1
            low, high = sorted((better * d.low, better * d.high))
            mark = "✓" if low > 1e-9 else "✗" if high < -1e-9 else ""  # float noise around 0 is no difference
            digits = 3 if metric.startswith("flip_") else 2  # fractions in [0, 1] vs AUCs in %
            cells.append(f"{d.mean:+.{digits}f} [{d.low:+.{digits}f}, {d.high:+.{digits}f}] {mark}".strip())
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join([f"Difference from {baseline} (method - {baseline}, mean over pairs, 95 % paired-bootstrap "
                      f"interval; ✓ better, ✗ worse than {baseline} beyond the interval):", "", head,
                      "|---" * (len(metrics) + 1) + "|", *rows])
