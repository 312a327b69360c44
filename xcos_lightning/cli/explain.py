"""``explain.py``: one entry point, one subcommand per module ``xcos_lightning/cli/<name>.py``.

    python explain.py verify --model SPEC --data SPEC [--data SPEC ...] [--json]
    python explain.py benchmark --model SPEC --data SPEC --methods random,corrrise [--json]
    python explain.py pair A.jpg B.jpg --model SPEC --methods corrrise,xssab --threshold T --out fig.png
    python explain.py compare SPEC [SPEC ...] --data SPEC [--data SPEC ...] --methods random,corrrise --out DIR
    python explain.py export SPEC --format safetensors|torchscript|onnx --out PATH [--json]
    python explain.py <command> --help

Model SPECs: a ``.ckpt`` of ``train.py``, ``<format>:<path>`` (mobilefacenet, arcface_torch-r18..r100,
safetensors) or ``package.module:function`` (imports and runs that code: trusted code only).

A subcommand module exposes ``add_parser(subparsers) -> ArgumentParser`` and ``run(args) -> int`` (the exit
code); adding one is one entry in ``COMMANDS``. Bad input (``xcos_lightning.errors``) is reported as one
line on stderr with exit code 2; ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check on import

from xcos_lightning.cli import benchmark, compare, export, pair, verify  # noqa: E402
from xcos_lightning.errors import XCosError  # noqa: E402

COMMANDS = (verify, benchmark, pair, compare, export)
DEBUG_HELP = "show the full traceback of errors"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="explain.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        sub = command.add_parser(subparsers)
        sub.set_defaults(func=command.run)
        # SUPPRESS: "explain.py --debug verify" must not be reset by the subcommand's default
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except XCosError as exc:
        if args.debug:
            raise
        print(f"explain.py {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
