"""``explain.py compare`` end to end on real LFW pairs: a tiny xCos checkpoint beside a MobileFaceNet in the
pretrained layout, one table (markdown, CSV, JSON), and one-line errors."""
from __future__ import annotations

import csv
import json
import math

import pytest

from xcos_lightning.cli.explain import main

PAIRS = 10  # per kind: the fewest 10-fold accuracy allows, times two


@pytest.fixture
def lfw_pairs(shared_dir, tmp_path):
    """SPEC of the first 10 matched and 10 mismatched LFW pairs, alternating (with the real identity folders)."""
    lines = (shared_dir / "data/lfw/pairs.txt").read_text().splitlines()[1:]
    matched, mismatched = [x for x in lines if len(x.split()) == 3], [x for x in lines if len(x.split()) == 4]
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("\n".join(x for k in range(PAIRS) for x in (matched[k], mismatched[k])) + "\n")
    return f"pairs:{shared_dir / 'data/lfw'}:{pairs}"


def test_compare_xcos_checkpoint_and_pretrained(xcos_ckpt, mobilefacenet_spec, lfw_pairs, tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(["compare", str(xcos_ckpt), mobilefacenet_spec, "--data", lfw_pairs, "--methods", "random,xcos",
                 "--pairs", "2", "--steps", "4", "--latency-repeats", "2", "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == 0
    table = json.loads(captured.out.strip().splitlines()[-1])
    xcos, mfn = table[str(xcos_ckpt)], table[mobilefacenet_spec]
    assert xcos["xcos_head"] and not mfn["xcos_head"]
    assert xcos["parameters"] < 1e5 < mfn["parameters"] and mfn["latency_ms_per_pair"] > 0
    # The faithfulness columns are the benchmark's values on the same pairs, threshold and settings.
    for spec, row, methods in ((str(xcos_ckpt), xcos, "random,xcos"), (mobilefacenet_spec, mfn, "random")):
        assert main(["benchmark", "--model", spec, "--data", lfw_pairs, "--methods", methods, "--pairs", "2",
                     "--steps", "4", "--json"]) == 0
        bench = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        shared = [(m, k) for m, values in bench.items() for k in values
                  if k != "seconds_per_pair" and f"explain/{m}/{k}" in row]
        assert len(shared) >= 10 * len(bench)  # every protocol's columns
        for method, key in shared:
            assert row[f"explain/{method}/{key}"] == bench[method][key], (spec, method, key)
        assert row["explain/random/deletion_genuine"] is not None and row["explain/random/seconds_per_pair"] > 0
        assert 0 <= row[f"verify/{lfw_pairs}/acc_cos"] <= 1
    assert xcos["explain/xcos/dpr_fmr_auc"] is not None and 0 <= xcos[f"verify/{lfw_pairs}/acc_xcos"] <= 1
    # xcos does not apply to the plain model: missing, not an error
    assert mfn[f"verify/{lfw_pairs}/acc_xcos"] is None and mfn["explain/xcos/deletion_genuine"] is None

    markdown = (out / "table.md").read_text()
    assert f"| metric | `{xcos_ckpt}` | `{mobilefacenet_spec}` |" in markdown and markdown in captured.out + "\n"
    assert f"| {lfw_pairs}: acc xcos % | " in markdown and "| n/a |" in markdown and "| xcos: del gen ↓ |" in markdown
    with open(out / "table.csv", newline="") as f:
        rows = {r[0]: r[1:] for r in csv.reader(f)}
    assert rows["metric"] == [str(xcos_ckpt), mobilefacenet_spec] and math.isnan(float(rows["explain/xcos/dpr_fmr_auc"][1]))
    assert json.loads((out / "results.json").read_text())["settings"]["pairs"] == 2
    report = (out / "report.html").read_text(encoding="utf-8")  # rendered in Chromium by test_report_html.py
    # Per model: 6 curve plots (deletion/insertion x 2 groups, DPR FMR/FNMR) and 2 + 2 example pairs.
    assert report.count('src="data:image/png;base64,') == 2 * (6 + 4) and "<script" not in report
    assert f'data-model="{mobilefacenet_spec}" data-metric="explain/random/deletion_genuine"' in report
    assert "[compare] model 2/2" in captured.err and "[benchmark]" in captured.err  # progress on stderr
    # the verification part's wall time, one line per model and set (benchmarks/bench_eval.py --compare reads it)
    for spec in (xcos_ckpt, mobilefacenet_spec):
        assert f"[compare] verification of {spec} on " in captured.err
    assert captured.err.count(f": {2 * PAIRS} pairs scored in ") == 2


def test_compare_bad_input(xcos_ckpt, lfw_pairs, tmp_path, capsys):
    out = ("--out", str(tmp_path / "cmp"))
    for argv, expected in (
        (["--data", lfw_pairs, "--methods", "random,nope"], "unknown or missing methods ['nope']"),
        (["--data", lfw_pairs, "--verify-pairs", "50"], "--verify-pairs 50: " + lfw_pairs + " has 10 genuine and 10 impostor pairs"),
        (["--data", "nowhere.bin"], "nowhere.bin"),
    ):
        assert main(["compare", str(xcos_ckpt), *argv, *out]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and err.startswith("explain.py compare: error:") and expected in err
    assert main(["compare", str(tmp_path / "none.ckpt"), "--data", lfw_pairs, *out]) == 2
    assert "none.ckpt does not exist" in capsys.readouterr().err
