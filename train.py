"""Train, validate or test an xCos model: ``python train.py fit --config configs/demo.yaml``."""
import sys

from xcos_lightning.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
