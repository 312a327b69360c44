"""A 2-process CPU DDP run of the monitor finishes and measures what a 1-process run measures."""
from __future__ import annotations

import math

# Per-rank timings differ between runs by nature; everything else must agree.
TIMED = ("explain/cost/seconds", "explain/cost/epoch_share")


def test_ddp_two_cpu_processes_match_one_process(tmp_path, run_train, monitor_overlay, monitor_records, demo_args):
    overlay = monitor_overlay(tmp_path, methods=["xcos", "corrrise", "xssab", "gradcam", "random"],
                              protocols=["deletion", "flips"], n_pairs=7, n_masks=8, steps=4, max_images=1)
    # `validate`: both runs score the same seeded initial weights (training would differ: each rank sees
    # half the batches and BatchNorm statistics follow rank 0's half).
    common = ["validate", *demo_args, "--config", str(overlay), "--trainer.logger", "false"]
    run_train(common, tmp_path / "one")
    run_train([*common, "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"],
              tmp_path / "two", timeout=240)  # a hang fails here instead of blocking the suite
    (one,), (two,) = monitor_records(tmp_path / "one"), monitor_records(tmp_path / "two")
    one, two = one["scalars"], two["scalars"]
    assert one["explain/cost/pairs"] == two["explain/cost/pairs"] == 7  # 7 pairs on 2 ranks: one repeat, dropped
    assert one.keys() == two.keys()
    compared = [k for k in one if k not in TIMED and not k.endswith("seconds_per_pair")]
    # Per method 4 deletion/insertion values and 3 flip values per clean-decision group present; pairs and
    # the two thresholds (the EER thresholds of the 7 pairs' clean scores, gathered over the ranks).
    assert len(compared) >= 5 * 7 + 3 and "explain/threshold_xcos" in compared
    for key in compared:
        a, b = one[key], two[key]
        assert (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-4, (key, a, b)
