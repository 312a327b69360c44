"""``ResilientWandbLogger``: a ``WandbLogger`` whose failures never stop training.

Clusters lose their network, W&B logins expire and log folders fill up; none of that may cost a
days-long run. Failures degrade the logger one level and warn once each:

- the run cannot start online (no login, no network): it starts offline (``wandb sync`` uploads it later);
- it cannot start offline either: W&B is disabled for this run (a no-op run);
- a later call fails (``log_metrics``, ``log_hyperparams``, images, tables, checkpoint artifacts): that
  and every later W&B call is dropped.

``WANDB_MODE=disabled`` simply gives a no-op run. Checkpoints are written by ``ModelCheckpoint`` to
their own folder, independently of the logger.
"""
from __future__ import annotations

from typing import Any

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn


class ResilientWandbLogger(WandbLogger):
    """Drop-in ``WandbLogger`` (same arguments) that falls back to offline, then to disabled, then drops calls."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dropped = False  # True once a call failed: W&B output of this run stops there

    @property
    def experiment(self):
        if self._experiment is None:
            self._start()
        return super().experiment

    @rank_zero_only
    def _start(self) -> None:
        import wandb

        for fallback in ("offline", "disabled"):
            try:
                WandbLogger.experiment.fget(self)
                return
            except Exception as err:  # wandb raises UsageError, CommError, OSError, TimeoutError, ...
                if wandb.run is not None:
                    wandb.finish(exit_code=1)
                self._experiment = None
                rank_zero_warn(f"W&B run could not start ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                               f"training goes on with W&B {fallback}"
                               + (" (upload later with `wandb sync`)" if fallback == "offline" else ""))
                self._wandb_init["mode"] = fallback

    def _guard(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.dropped:
            return None
        try:
            return getattr(super(), method)(*args, **kwargs)
        except Exception as err:
            self.dropped = True
            rank_zero_warn(f"W&B {method} failed ({type(err).__name__}: {str(err)[:200]}); training goes on, "
                           "W&B output of this run stops here")
            return None

    def log_metrics(self, metrics, step=None) -> None:
        self._guard("log_metrics", metrics, step)

    def log_hyperparams(self, params) -> None:
        self._guard("log_hyperparams", params)

    def log_table(self, *args: Any, **kwargs: Any) -> None:
        self._guard("log_table", *args, **kwargs)

    def log_text(self, *args: Any, **kwargs: Any) -> None:
        self._guard("log_text", *args, **kwargs)

    def log_image(self, *args: Any, **kwargs: Any) -> None:
        self._guard("log_image", *args, **kwargs)

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        self._guard("after_save_checkpoint", checkpoint_callback)

    def finalize(self, status: str) -> None:
        self._guard("finalize", status)
