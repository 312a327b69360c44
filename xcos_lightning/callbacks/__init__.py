"""Lightning callbacks of xcos-lightning (explanation monitoring during training lands here)."""
from xcos_lightning.callbacks.explanation_monitor import ExplanationMonitor  # noqa: F401
