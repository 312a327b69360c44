"""Lightning callbacks of xcos-lightning: explanation monitoring during training, crash-safe ``last.ckpt``."""
from xcos_lightning.callbacks.explanation_monitor import ExplanationMonitor
from xcos_lightning.callbacks.last_checkpoint import LastCheckpoint

__all__ = ["ExplanationMonitor", "LastCheckpoint"]
