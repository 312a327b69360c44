"""Lightning callbacks of xcos-lightning: explanation monitoring during training, crash-safe ``last.ckpt``, rank failures."""
from xcos_lightning.callbacks.explanation_monitor import ExplanationMonitor
from xcos_lightning.callbacks.last_checkpoint import LastCheckpoint
from xcos_lightning.callbacks.rank_failure import RankFailureMonitor

__all__ = ["ExplanationMonitor", "LastCheckpoint", "RankFailureMonitor"]
