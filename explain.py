"""Verify, explain, benchmark, compare and export face models: ``python explain.py <command> --help``."""
import sys

from xcos_lightning.cli.explain import main

if __name__ == "__main__":
    sys.exit(main())
