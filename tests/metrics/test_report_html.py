"""``report.html`` of ``explain.py benchmark`` opened in headless Chromium: every image loads, no console error,
and the table cells hold results.json's values."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from helpers.threads import one_torch_thread  # noqa: F401 (autouse fixture)
from helpers.toy_faces import TinyNet, smooth_png
from xcos_lightning.cli import benchmark
from xcos_lightning.cli.benchmark_report import _fmt, difference_text
from xcos_lightning.datamodules.pair_set import PairSet
from xcos_lightning.metrics.bootstrap import Difference

# Flags that work in this sandbox (no GPU, no network, no setuid sandbox).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Injected into a copy of the page: records load errors (capture phase: images' error events do not bubble) and
# console errors, then writes what it saw into <pre id="probe"> once everything has loaded.
PROBE = """<script>
window.__errors = [];
window.addEventListener("error", e => __errors.push(String(e.message || (e.target && e.target.alt) || e.type)), true);
const __consoleError = console.error;
console.error = (...args) => { __errors.push(args.join(" ")); __consoleError(...args); };
window.addEventListener("load", () => {
  const images = [...document.images];
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify({images: images.length, errors: __errors,
    broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt)});
  document.body.appendChild(pre);
});
</script>"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing: .ci/run installs the Debian package 'chromium' when it is absent")
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium)")
    return found


def render(page: Path, profile: Path) -> tuple[str, str]:
    """(DOM after load, stderr) of ``page`` with the probe injected, in headless Chromium."""
    probe = page.with_name("probed.html")
    probe.write_text(page.read_text(encoding="utf-8").replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    proc = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr",
                           "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                          capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, proc.stderr


class Cells(HTMLParser):
    """Text of every ``<td>`` with ``data-*`` attributes, and the probe's JSON."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[tuple[dict, str]] = []
        self.probe = ""
        self._open: dict | None = None
        self._in_probe = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "td" and "data-metric" in attrs:
            self._open, self._text = attrs, ""
        self._in_probe = tag == "pre" and attrs.get("id") == "probe"

    def handle_data(self, data):
        if self._open is not None:
            self._text += data
        if self._in_probe:
            self.probe += data

    def handle_endtag(self, tag):
        if tag == "td" and self._open is not None:
            self.cells.append((self._open, self._text))
            self._open = None
        if tag == "pre":
            self._in_probe = False


def test_benchmark_report_renders_and_matches_results_json(tmp_path, monkeypatch):
    faces = [smooth_png(s) for s in range(8)]
    sources = [x for i in range(4) for x in (faces[i], smooth_png(i, Image.BICUBIC))]
    sources += [x for i in range(4) for x in (faces[i], faces[4 + i])]
    pair_set = PairSet(sources, [True] * 4 + [False] * 4, "toy", size=48).check()
    monkeypatch.setattr(benchmark, "load_model", lambda spec: TinyNet().eval())
    monkeypatch.setattr(benchmark, "load_pair_set", lambda spec, **options: pair_set)
    parser = argparse.ArgumentParser()
    benchmark.add_parser(parser.add_subparsers())
    out = tmp_path / "out"
    args = parser.parse_args(["benchmark", "--model", "m", "--data", "toy", "--methods", "random,gradcam,xssab",
                              "--pairs", "3", "--steps", "4", "--device", "cpu", "--out", str(out),
                              "--extra-fills", "blur", "--bootstrap", "200"])
    assert benchmark.run(args) == 0
    page = out / "report.html"
    text = page.read_text(encoding="utf-8")
    assert "<script" not in text and "src=\"data:image/png;base64," in text  # self-contained, static

    dom, stderr = render(page, tmp_path / "profile")
    parsed = Cells()
    parsed.feed(dom)
    probe = json.loads(parsed.probe)
    # 6 curve plots and 2 genuine + 2 impostor example figures, every one decoded.
    assert probe["images"] == 10 and probe["broken"] == [] and probe["errors"] == []
    assert "CONSOLE" not in stderr or ":ERROR:" not in stderr

    saved = json.loads((out / "results.json").read_text())
    results, compared = saved["metrics"], 0
    for attrs, shown in parsed.cells:
        method, metric = attrs["data-method"], attrs["data-metric"]
        if "data-baseline" in attrs:
            diff = saved["comparison"][attrs["data-baseline"]][method].get(metric)
            want = difference_text(None if diff is None else Difference(**{k: float("nan") if v is None else v
                                                                           for k, v in diff.items()}), metric)
        else:
            value = results[method][metric]
            want = _fmt(float("nan") if value is None else value)
        assert shown == want, (attrs, shown, want)
        compared += 1
    table_cells = [a for a, _ in parsed.cells if "data-baseline" not in a]
    assert len(table_cells) >= 3 * 12 and compared > len(table_cells)  # results and the comparison with random


def test_compare_report_renders_and_matches_its_table(tmp_path):
    from xcos_lightning.cli.compare import _cell, write_report_html
    from xcos_lightning.metrics.protocols import ProtocolConfig, evaluate_pair_set

    faces = [smooth_png(s) for s in range(8)]
    sources = [x for i in range(4) for x in (faces[i], smooth_png(i, Image.BICUBIC))]
    sources += [x for i in range(4) for x in (faces[i], faces[4 + i])]
    pair_set = PairSet(sources, [True] * 4 + [False] * 4, "toy", size=48).check()
    measured = evaluate_pair_set(TinyNet().eval(), pair_set, ["random", "gradcam"],
                                 ProtocolConfig(steps=4, protocols=("deletion", "dpr")), pairs=2, examples=1)
    table = {"m1": {"parameters": 1234.0, "xcos_head": False, "latency_ms_per_pair": 1.5,
                    "faithfulness/threshold": measured.info["threshold"],
                    **{f"explain/{m}/{k}": v for m, row in measured.metrics.items() for k, v in row.items()
                       if k in ("deletion_genuine", "dpr_fmr_auc")}}}
    out = tmp_path / "cmp"
    out.mkdir()
    page = write_report_html(out, table, {"m1": measured}, {"summary": "toy"})
    dom, _ = render(page, tmp_path / "profile")
    parsed = Cells()
    parsed.feed(dom)
    probe = json.loads(parsed.probe)
    # 4 curves (deletion/insertion x 2 groups) + 2 DPR curves, 1 genuine + 1 impostor example.
    assert probe["images"] == 8 and probe["broken"] == [] and probe["errors"] == []
    shown = {(a["data-model"], a["data-metric"]): text for a, text in parsed.cells}
    assert shown == {("m1", metric): _cell(metric, table["m1"]) for metric in table["m1"]}
