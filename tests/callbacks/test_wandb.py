"""The offline W&B run of a monitored training holds the scalars, the figures, the table and the curves."""
from __future__ import annotations

import json

from helpers.wandb_log import RunLog

METHODS = ["xcos", "corrrise", "xssab", "gradcam", "random"]


def test_offline_run_holds_scalars_images_tables_and_curves(tmp_path, run_train, monitor_overlay, demo_args):
    overlay = monitor_overlay(tmp_path, methods=METHODS, n_pairs=4, n_masks=8, steps=4, max_images=2)
    run_train(["fit", *demo_args, "--config", str(overlay), "--trainer.max_epochs", "2",
               "--trainer.limit_train_batches", "2"], tmp_path)
    (run_dir,) = (tmp_path / "runs/demo/wandb").glob("offline-run-*")
    log = RunLog(run_dir)  # what `wandb sync` would upload
    assert log.exit_code == 0

    # One scalar per method and metric per epoch, next to the module's validation metrics.
    for method in METHODS:
        for name in ("deletion_genuine", "insertion_genuine", "deletion_impostor", "insertion_impostor"):
            assert len(log.history[f"explain/{method}/{name}"]) == 2, (method, name)
    assert log.history["explain/cost/pairs"] == [4, 4]
    assert len(log.history["val/synth/acc_xcos"]) == 2

    # The monitor's rows carry the trainer's step, which only grows (W&B drops points that go back).
    steps = [row["trainer/global_step"] for row in log.rows if "explain/cost/pairs" in row]
    assert steps == [2, 4]

    saved = set(log.files)
    for key in ("explain/overlays", "explain/xcos_maps"):
        assert log.history[f"{key}/_type"] == ["images/separated"] * 2, key
        assert log.history[f"{key}/count"] == [2, 2], key
        for filenames in log.history[f"{key}/filenames"]:
            assert all(name in saved and (run_dir / "files" / name).is_file() for name in filenames), key
    for curve in ("deletion_genuine", "insertion_genuine", "deletion_impostor", "insertion_impostor"):
        assert log.history[f"explain/curves/{curve}/_type"] == ["image-file"] * 2

    assert log.history["explain/pairs/_type"] == ["table-file"] * 2
    table = json.loads((run_dir / "files" / log.history["explain/pairs/path"][-1]).read_text())
    assert len(table["data"]) == 2  # max_images rows
    columns = table["columns"]
    for column in ("pair", "label", "face A", "face B", "cos", "decision", "xcos", "xcos decision", "xcos maps",
                   "explanations", "corrrise/deletion", "gradcam/insertion"):
        assert column in columns, column
    row = dict(zip(columns, table["data"][0]))
    assert row["decision"] in ("match", "no match") and 0 <= row["corrrise/deletion"] <= 100
