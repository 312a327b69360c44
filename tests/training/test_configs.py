"""The composed configs (configs/base/ + short experiment files) resolve to what the monolithic files did.

``print_config_before/<path with / as __>.yaml`` is ``train.py fit --config configs/<path> --print_config`` of
the monolithic configs (lightning 2.6.6), run at the commit before their composition (ms1m/ and webface42m/:
after 5652426, which moved them to PartialArcFace on purpose). Every value printed there
must print the same now; keys the code added since (a new constructor argument with its default) are
allowed, a changed default or a changed experiment value is not. To change an experiment on purpose, edit
its file and regenerate its ``before`` file with the same command.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers.configs import print_configs

REPO = Path(__file__).resolve().parents[2]
BEFORE = Path(__file__).resolve().parent / "print_config_before"
EXPERIMENTS = sorted(p.stem.replace("__", "/") + ".yaml" for p in BEFORE.glob("*.yaml"))

@pytest.fixture(scope="module")
def printed() -> dict[str, dict]:
    return print_configs(EXPERIMENTS)


def _differences(before, now, where: str = "") -> list[str]:
    """Every place where ``now`` does not hold ``before``'s value (extra keys in ``now`` are allowed)."""
    if isinstance(before, dict) and isinstance(now, dict):
        return [d for key, value in before.items()
                for d in (_differences(value, now[key], f"{where}.{key}") if key in now
                          else [f"{where}.{key} missing"])]
    if isinstance(before, list) and isinstance(now, list) and len(before) == len(now):
        return [d for i, (b, n) in enumerate(zip(before, now)) for d in _differences(b, n, f"{where}[{i}]")]
    return [] if before == now else [f"{where}: {before!r} -> {now!r}"]


def test_the_differences_helper_sees_changes():
    before = {"trainer": {"callbacks": [{"init_args": {"dirpath": "runs/a/checkpoints"}}], "max_epochs": 8}}
    assert _differences(before, {"trainer": {"callbacks": [{"init_args": {"dirpath": "runs/a/checkpoints"}}],
                                             "max_epochs": 8, "new_arg": 1}}) == []
    assert _differences(before, {"trainer": {"callbacks": [{"init_args": {"dirpath": "runs/b/checkpoints"}}],
                                             "max_epochs": 8}}) == [
        ".trainer.callbacks[0].init_args.dirpath: 'runs/a/checkpoints' -> 'runs/b/checkpoints'"]
    assert _differences(before, {"trainer": {"callbacks": [], "max_epochs": 8}}) != []
    assert _differences(before, {"trainer": {"callbacks": before["trainer"]["callbacks"]}}) == [
        ".trainer.max_epochs missing"]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_print_config_is_unchanged(name, printed):
    before = yaml.safe_load((BEFORE / (name[:-len(".yaml")].replace("/", "__") + ".yaml")).read_text())
    assert _differences(before, printed[name]) == []


def test_the_run_folder_is_written_once(printed):
    """In a composed experiment (one with ``config:``) only trainer.default_root_dir names the run folder."""
    composed = [name for name in EXPERIMENTS if "config" in yaml.safe_load((REPO / "configs" / name).read_text())]
    assert "demo.yaml" in composed
    for name in composed:
        root = printed[name]["trainer"]["default_root_dir"]
        lines = [line for line in (REPO / "configs" / name).read_text().splitlines()
                 if root in line and not line.lstrip().startswith("#")]
        assert lines == [f"trainer.default_root_dir: {root}"], name


def test_a_command_line_run_folder_moves_logger_and_checkpoints(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "fit", "--config", str(REPO / "configs/demo.yaml"),
                           "--trainer.default_root_dir", str(tmp_path / "elsewhere"), "--print_config"],
                          cwd=REPO, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trainer = yaml.safe_load(proc.stdout)["trainer"]
    assert trainer["logger"]["init_args"]["save_dir"] == str(tmp_path / "elsewhere")
    dirpaths = [cb["init_args"].get("dirpath") for cb in trainer["callbacks"][:2]]
    assert dirpaths == [str(tmp_path / "elsewhere/checkpoints")] * 2
