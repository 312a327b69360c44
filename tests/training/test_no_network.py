"""A training run must not try to reach the network (W&B offline, no albumentations update check)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Runs train.py with a Python audit hook that records every DNS lookup and socket connect (CPython raises
# audit events for both, in every thread and library of the process) to a JSON-lines file.
WRAPPER = """
import json, runpy, socket, sys
log = open(sys.argv[1], "a")
LOCAL = ("localhost", "127.", "::1", "0.0.0.0")
def hook(event, args):
    if event == "socket.connect":
        sock, address = args
        if sock.family == socket.AF_UNIX or str(address[0]).startswith(LOCAL):
            return
        log.write(json.dumps([event, repr(address)]) + "\\n"); log.flush()
    elif event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex"):
        if not str(args[0]).startswith(LOCAL):
            log.write(json.dumps([event, repr(args[0])]) + "\\n"); log.flush()
sys.addaudithook(hook)
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_training_run_makes_no_network_call(tiny_args, tmp_path):
    log = tmp_path / "network.jsonl"
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "NO_ALBUMENTATIONS_UPDATE")}
    proc = subprocess.run(
        [sys.executable, "-c", WRAPPER, str(log), str(REPO / "train.py"), "fit", "--config",
         str(REPO / "configs/demo.yaml"), *tiny_args, "--trainer.max_steps", "2", "--trainer.limit_val_batches", "2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "runs/demo/checkpoints/last.ckpt").is_file()
    attempts = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    assert attempts == [], f"the run tried to reach the network: {attempts[:5]}"


def test_the_albumentations_network_check_is_disabled_in_one_place():
    """xcos_lightning/__init__.py sets NO_ALBUMENTATIONS_UPDATE before any module of the package imports
    albumentations; a second copy elsewhere would hide that the first one was lost."""
    places = [str(p.relative_to(REPO)) for root in ("xcos_lightning", "tests", "benchmarks")
              for p in sorted((REPO / root).rglob("*.py"))
              if p != Path(__file__) and 'environ.setdefault("NO_ALBUMENTATIONS_UPDATE"' in p.read_text()]
    assert places == ["xcos_lightning/__init__.py"]
