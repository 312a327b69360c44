"""The experiments of configs/ (every .yaml outside configs/base/) and their resolved ``--print_config``."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = sorted(str(p.relative_to(REPO / "configs")) for p in (REPO / "configs").rglob("*.yaml")
                     if "base" not in p.relative_to(REPO / "configs").parts)

# One interpreter prints every config (an import of lightning each would take minutes on 2 cores).
_PRINT_ALL = """
import contextlib, io, json, sys
from xcos_lightning.cli.train import run
out = {}
for path in sys.argv[1:]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):
        run(["fit", "--config", path, "--print_config"])
    out[path] = buf.getvalue()
print(json.dumps(out))
"""


def print_configs(names: list[str]) -> dict[str, dict]:
    """``train.py fit --config configs/<name> --print_config`` of each name, parsed: {name: config}."""
    paths = [str(REPO / "configs" / name) for name in names]
    proc = subprocess.run([sys.executable, "-c", _PRINT_ALL, *paths], cwd=REPO, capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-4000:])
    texts = json.loads(proc.stdout.strip().splitlines()[-1])
    return {name: yaml.safe_load(texts[path]) for name, path in zip(names, paths)}
