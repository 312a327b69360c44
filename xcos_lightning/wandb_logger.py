"""``ResilientWandbLogger``: a ``WandbLogger`` whose failures never stop training.

Clusters lose their network, W&B logins expire and log folders fill up; none of that may cost a
days-long run. Failures degrade the logger one level and warn once each:

- the run cannot start online (no login, no network): it starts offline (``wandb sync`` uploads it later);
- it cannot start offline either: W&B is disabled for this run (a no-op run);
- a later call fails (``log_metrics``, ``log_hyperparams``, images, tables, checkpoint artifacts): W&B calls
  are dropped for a while and then tried again, with a bounded backoff (``retry_after`` calls dropped after
  the first failure, twice as many after each further one in a row); after ``retries`` failed retries in a
  row W&B output of the run stops for good. A transient fault (a full disk freed, a network blip under
  online mode) thus costs some points of the curves, not the rest of the run, and a permanent one costs a
  handful of failed calls (each can block: a W&B call that times out waits for its timeout). One warning
  at the first failure, one when output resumes or stops.

``WANDB_MODE=disabled`` simply gives a no-op run. Checkpoints are written by ``ModelCheckpoint`` to
their own folder, independently of the logger.
"""
from __future__ import annotations

from typing import Any

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn


class ResilientWandbLogger(WandbLogger):
    """Drop-in ``WandbLogger`` (same arguments) that falls back to offline, then to disabled, and drops calls
    after a failure, retrying ``retries`` times (``retry_after``, ``2 * retry_after``, ... calls apart) before
    it stops W&B output for the run; ``retries=0`` stops at the first failure."""

    def __init__(self, *args: Any, retries: int = 3, retry_after: int = 10, **kwargs: Any) -> None:
        if retries < 0 or retry_after < 0:
            raise ValueError(f"retries={retries}, retry_after={retry_after}: both must be >= 0")
        super().__init__(*args, **kwargs)
        self.retries, self.retry_after = retries, retry_after
        self.failures = 0  # failed calls in a row
        self._to_drop = 0  # calls dropped before the next try
        self.dropped = False  # True once W&B output of this run stopped for good

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
        if self._to_drop and method != "finalize":  # the run's close is always tried
            self._to_drop -= 1
            return None
        try:
            result = getattr(super(), method)(*args, **kwargs)
        except Exception as err:
            self.failures += 1
            detail = f"{type(err).__name__}: {str(err)[:200]}"
            if self.failures > self.retries:
                self.dropped = True
                rank_zero_warn(f"W&B {method} failed ({detail}), {self.failures} failures in a row; training goes "
                               "on, W&B output of this run stops here")
            else:
                self._to_drop = self.retry_after * 2 ** (self.failures - 1)
                if self.failures == 1:
                    rank_zero_warn(f"W&B {method} failed ({detail}); training goes on, W&B calls are dropped and "
                                   f"tried again after {self._to_drop} calls (up to {self.retries} retries)")
            return None
        if self.failures:
            rank_zero_warn(f"W&B {method} works again after {self.failures} failed calls (the calls between them "
                           "were dropped)")
            self.failures = 0
        return result

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
