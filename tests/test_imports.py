"""Every module of ``xcos_lightning`` imports alone, first, in a fresh process: an import cycle whose modules
use each other's names at import time fails the module it is entered from (and a module that only worked
because another one happened to be imported before it fails too)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "xcos_lightning"

# One process: it loads the third-party packages once, then forks a child per module that imports that
# module with no other module of ours loaded (the children run one after another). A fresh interpreter per
# module would spend ~2 s each on importing torch.
_IMPORT_EACH = r"""
import importlib, os, sys, traceback
deps, names = sys.argv[1].split(","), sys.argv[2].split(",")
import xcos_lightning  # the root alone: it sets the environment some third-party imports read
for dep in deps:
    try:
        importlib.import_module(dep)
    except Exception:  # an optional dependency; the module that needs it says so in its child
        pass
assert not [m for m in sys.modules if m.startswith("xcos_lightning.")], "a dependency imported our modules"
failed = []
for name in names:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    if os.waitpid(pid, 0)[1]:
        failed.append(name)
print("failed:", " ".join(failed))
sys.exit(1 if failed else 0)
"""


def _modules() -> list[str]:
    """Dotted names of every module and package under ``xcos_lightning``."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _third_party_imports() -> list[str]:
    """Modules that our modules import at their top level from outside the package."""
    deps = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                deps.add(node.module)
    return sorted(d for d in deps if d.split(".")[0] not in ("xcos_lightning", "__future__"))


def test_the_module_list_covers_the_layers():
    names = _modules()
    assert {"xcos_lightning.io.spec", "xcos_lightning.models.iresnet", "xcos_lightning.cli.explain"} <= set(names)
    assert "torch" in _third_party_imports() and not any(d.startswith("xcos_lightning") for d in _third_party_imports())


def test_every_module_imports_alone():
    proc = subprocess.run([sys.executable, "-c", _IMPORT_EACH, ",".join(_third_party_imports()), ",".join(_modules())],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-8000:]
    assert proc.stdout.strip() == "failed:"
