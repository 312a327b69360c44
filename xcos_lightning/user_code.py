"""``package.module:attribute`` SPECs: user code (models, face detectors) named on the command line."""
from __future__ import annotations

import importlib
import os
import re
import sys

# Dotted Python identifiers, then one identifier (no path separators, so a file path such as ``runs/x.ckpt``
# or ``C:\\model.pt`` never matches).
IMPORT_SPEC = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


def is_import_spec(spec: str) -> bool:
    return IMPORT_SPEC.fullmatch(spec) is not None


def import_attribute(spec: str) -> object:
    """The attribute a ``package.module:attribute`` SPEC names, or ``None`` when the module lacks it.

    Modules are imported from ``sys.path`` plus the current directory (user modules usually sit beside the
    command's working directory, as with ``python -m``). Importing runs the module's code: trusted code only.
    Whatever the import raises propagates (callers name the SPEC in their own error).
    """
    module_name, _, attr = spec.partition(":")
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return getattr(importlib.import_module(module_name), attr, None)
    finally:
        if added:
            sys.path.remove(cwd)
