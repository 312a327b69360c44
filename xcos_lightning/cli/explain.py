"""``explain.py``: one entry point, one subcommand per module ``xcos_lightning/cli/<name>.py``.

    python explain.py verify --model SPEC --data SPEC [--data SPEC ...] [--json]
    python explain.py benchmark --model SPEC --data SPEC --methods random,corrrise [--json]
    python explain.py pair A.jpg B.jpg --model SPEC --methods corrrise,xssab --threshold T --out fig.png
    python explain.py compare SPEC [SPEC ...] --data SPEC [--data SPEC ...] --methods random,corrrise --out DIR
    python explain.py export SPEC --format safetensors|torchscript|onnx --out PATH [--json]
    python explain.py <command> --help

Model SPECs: a ``.ckpt`` of ``train.py``, ``<format>:<path>`` (mobilefacenet, arcface_torch-r18..r100,
safetensors) or ``package.module:function`` (imports and runs that code: trusted code only).

Exit codes: 0 success; 2 bad input (a usage error, or an ``xcos_lightning.errors`` exception: one line on
stderr); 1 a check that ran and failed (``export`` parity above ``--tolerance``). ``--debug`` (before or
after the command) shows the traceback of an error instead of the one line.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Collection

from xcos_lightning.cpu_allocator import retain_freed_memory
from xcos_lightning.errors import XCosError, error_message

# name -> (module, one-line help). A module exposes ``add_parser(subparsers) -> ArgumentParser`` (with the
# same help) and ``run(args) -> int`` (the exit code); adding a command is one entry here. Only the chosen
# command's module is imported: `verify` does not pay for the explainers, nor `--help` for any of them.
COMMANDS = {
    "verify": ("xcos_lightning.cli.verify", "verification accuracy, EER and TAR@FAR on pair sets"),
    "benchmark": ("xcos_lightning.cli.benchmark", "faithfulness protocols for several explainers"),
    "pair": ("xcos_lightning.cli.pair", "explain one face pair with several methods, as a figure"),
    "compare": ("xcos_lightning.cli.compare", "several models in one table: accuracy, faithfulness, latency"),
    "export": ("xcos_lightning.cli.export", "export a model (safetensors, TorchScript, ONNX) with parity"),
}
DEBUG_HELP = "show the full traceback of errors"


def _chosen(argv: list[str]) -> str | None:
    """The command named in ``argv`` (the first non-option word; the top level has only flags), if any."""
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(load: Collection[str | None] = ()) -> argparse.ArgumentParser:
    """The parser with every command listed; the commands named in ``load`` get their full arguments
    (their modules imported), the others only their name and help line."""
    parser = argparse.ArgumentParser(prog="explain.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_line) in COMMANDS.items():
        if name in load:
            module = importlib.import_module(module_name)
            sub = module.add_parser(subparsers)
            sub.set_defaults(func=module.run)
        else:
            sub = subparsers.add_parser(name, help=help_line)
        # SUPPRESS: "explain.py --debug verify" must not be reset by the subcommand's default
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser({_chosen(argv)}).parse_args(argv)
    retain_freed_memory()
    try:
        return args.func(args)
    except XCosError as exc:
        if args.debug:
            raise
        print(f"explain.py {args.command}: error: {error_message(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
