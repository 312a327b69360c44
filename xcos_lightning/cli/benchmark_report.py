"""The benchmark's outputs: results table, paired comparisons with a baseline, CSV/JSON files, plots and a
self-contained ``report.html`` (also ``compare``'s)."""
from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from pathlib import Path
from typing import Sequence

from PIL import Image
from torch import Tensor

from xcos_lightning.explain.figure import line_plot, pair_figure
from xcos_lightning.metrics.bootstrap import Difference, paired_difference
from xcos_lightning.metrics.faithfulness import FILLS

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


def difference_text(d: Difference | None, metric: str) -> str:
    """``+mean [low, high] mark`` of a paired difference: ✓ when the interval lies on the better side of 0, ✗ on
    the worse side (neither: no significant difference at the 95 % level); ``n/a`` when there is none."""
    if d is None or math.isnan(d.mean):
        return "n/a"
    better = -1 if column(metric)[1] == "↓" else 1
    low, high = sorted((better * d.low, better * d.high))
    mark = "✓" if low > 1e-9 else "✗" if high < -1e-9 else ""  # float noise around 0 is no difference
    digits = 3 if metric.startswith("flip_") else 2  # fractions in [0, 1] vs AUCs in %
    return f"{d.mean:+.{digits}f} [{d.low:+.{digits}f}, {d.high:+.{digits}f}] {mark}".strip()


def comparison_table(comparison: dict[str, dict[str, Difference]], baseline: str) -> str:
    """Markdown: per method and metric, ``method - baseline`` and its interval; ✓ when the interval lies on the
    better side of 0, ✗ on the worse side (neither: no significant difference at the 95 % level)."""
    metrics = list(dict.fromkeys(m for row in comparison.values() for m in row))
    head = "| method | " + " | ".join(" ".join(column(m)).strip() for m in metrics) + " |"
    rows = []
    for method, row in comparison.items():
        rows.append(f"| {method} | " + " | ".join(difference_text(row.get(m), m) for m in metrics) + " |")
    return "\n".join([f"Difference from {baseline} (method - {baseline}, mean over pairs, 95 % paired-bootstrap "
                      f"interval; ✓ better, ✗ worse than {baseline} beyond the interval):", "", head,
                      "|---" * (len(metrics) + 1) + "|", *rows])


# --------------------------------------------------------------------------- report.html
REPORT_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.5em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #eee; }
img { display: block; margin: 0.5em 0; max-width: 100%; }
figure { margin: 1em 0; }
figcaption { font-size: 0.9em; color: #444; }
"""


def png_data_uri(image: Image.Image | Path) -> str:
    """``data:image/png;base64,...`` of a PIL image or a PNG file, so the report needs no other file."""
    if isinstance(image, Path):
        data = image.read_bytes()
    else:
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        data = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def html_table(head: Sequence[str], rows: Sequence[Sequence[tuple[str, dict[str, str]]]]) -> str:
    """A ``<table>``: ``head`` cells, then rows of ``(text, attributes)`` cells (``data-*`` attributes let tests
    and scripts find a value)."""
    def cell(text: str, attrs: dict[str, str], tag: str = "td") -> str:
        extra = "".join(f' {k}="{html.escape(v)}"' for k, v in attrs.items())
        return f"<{tag}{extra}>{html.escape(text)}</{tag}>"

    lines = ["<table>", "<tr>" + "".join(cell(h, {}, "th") for h in head) + "</tr>"]
    lines += ["<tr>" + "".join(cell(text, attrs) for text, attrs in row) + "</tr>" for row in rows]
    return "\n".join(lines + ["</table>"])


def figure_html(image: Image.Image | Path, caption: str) -> str:
    return (f'<figure><img src="{png_data_uri(image)}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def write_report(path: Path, title: str, summary: str, sections: Sequence[tuple[str, str]]) -> Path:
    """One self-contained HTML page (inline style, images as base64 PNG, no script): ``sections`` are
    ``(heading, html body)``."""
    body = "\n".join(f"<h2>{html.escape(heading)}</h2>\n{content}" for heading, content in sections)
    path.write_text(f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
                    f"</title><style>{REPORT_STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n"
                    f"<p>{html.escape(summary)}</p>\n{body}\n</body></html>\n", encoding="utf-8")
    return path


def example_figures(examples: Sequence, threshold: float) -> str:
    """Every kept pair (``protocols.Example``) drawn with every method's similarity and dissimilarity maps."""
    parts = []
    for example in examples:
        explanations = list(example.explanations.values())
        score = float(explanations[0].score[0]) if explanations else float("nan")
        caption = (f"pair {example.index} ({'genuine' if example.genuine else 'impostor'}); rows: "
                   f"{', '.join(example.explanations)}; first method's score {score:.3f}, threshold {threshold:.3f}")
        parts.append(figure_html(pair_figure(example.img_a, example.img_b, explanations, title=caption, scale=1),
                                 caption))
    return "\n".join(parts) or "<p>no pairs kept</p>"


def results_table_html(results: dict[str, dict[str, float]]) -> str:
    """The results table (``markdown_table``'s columns), each cell tagged ``data-method`` / ``data-metric``."""
    columns = [(f"{column} {suffix}".strip(), f"{key}_{suffix}".rstrip("_"), arrow)
               for column, key, arrow in COLUMNS for suffix in ("", *FILLS)]
    columns = [c for c in columns if any(not math.isnan(r.get(c[1], math.nan)) for r in results.values())]
    rows = [[(method, {})] + [(_fmt(row.get(key)), {"data-method": method, "data-metric": key})
                              for _, key, _ in columns] for method, row in results.items()]
    return html_table(["method", *(f"{c} {arrow}".strip() for c, _, arrow in columns)], rows)


def comparison_table_html(comparison: dict[str, dict[str, Difference]], baseline: str) -> str:
    """``comparison_table`` as HTML, cells tagged ``data-method`` / ``data-metric`` / ``data-baseline``."""
    metrics = list(dict.fromkeys(m for row in comparison.values() for m in row))
    rows = []
    for method, row in comparison.items():
        cells = [(method, {})]
        for metric in metrics:
            d = row.get(metric)
            attrs = {"data-method": method, "data-metric": metric, "data-baseline": baseline}
            cells.append((difference_text(d, metric), attrs))
        rows.append(cells)
    return (f"<p>method - {html.escape(baseline)}, mean over pairs, 95 % paired-bootstrap interval; ✓ better, "
            f"✗ worse than {html.escape(baseline)} beyond the interval.</p>\n"
            + html_table(["method", *(" ".join(column(m)).strip() for m in metrics)], rows))


def benchmark_report(out: Path, results: dict, settings: dict, comparison: dict, examples: Sequence) -> Path:
    """``out/report.html``: the summary, the results table, each baseline's comparison, the curves (the PNGs
    ``write_outputs`` wrote) and the example pairs' maps."""
    sections = [("Results", results_table_html(results))]
    sections += [(f"Difference from {baseline}", comparison_table_html(rows, baseline))
                 for baseline, rows in comparison.items()]
    plots = [figure_html(out / f"{file}.png", title) for file, _, title, _, _ in PLOTS
             if (out / f"{file}.png").exists()]
    sections.append(("Curves", "\n".join(plots) or "<p>no curves</p>"))
    sections.append(("Example maps", example_figures(examples, settings["threshold"])))
    return write_report(out / "report.html", "explain.py benchmark", settings["summary"], sections)
