"""xcos-lightning: explainable face verification (xCos) and post-hoc explanation metrics on Lightning."""
import os

# albumentations >= 2.0 checks for updates over the network on import; no run of ours may reach it.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
