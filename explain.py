"""Verify, explain and benchmark face models: ``python explain.py verify --model SPEC --data SPEC``."""
import sys

from xcos_lightning.cli.explain import main

if __name__ == "__main__":
    sys.exit(main())
