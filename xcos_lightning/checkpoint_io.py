"""``AtomicCheckpointIO``: Lightning checkpoints that a crash can never leave half-written, read back safely.

Saving goes through :func:`xcos_lightning.atomic_save.atomic_torch_save` (temporary file, ``fsync``,
``os.replace``, folder ``fsync``), so after a SIGKILL, an exception or a power cut at any moment
``last.ckpt`` is either the previous complete checkpoint or the new one. Lightning's own
``TorchCheckpointIO`` renames through an fsspec transaction but never ``fsync``s: after a power cut the
renamed file can be empty. Loading (``--ckpt_path`` resume) always uses ``torch.load(weights_only=True)``,
whatever the environment says, and names the file in its errors. Remote URLs (``s3://``, ...) keep
Lightning's fsspec path.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from lightning.pytorch.plugins.io import TorchCheckpointIO

from xcos_lightning.atomic_save import atomic_torch_save
from xcos_lightning.io.checkpoint import read_checkpoint


def _is_remote(path: str | Path) -> bool:
    return "://" in str(path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """CheckpointIO plugin (``trainer.plugins`` in the configs): atomic, durable saves; weights-only loads."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if storage_options is not None or _is_remote(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path: str | Path, map_location: Callable | str | None = "cpu",
                        weights_only: bool | None = None) -> dict[str, Any]:
        """The checkpoint at ``path``; raises UnsafeFileError for pickled code, ModelSpecError if unreadable."""
        if _is_remote(path):
            return super().load_checkpoint(path, map_location, weights_only=True)
        return read_checkpoint(path, map_location=map_location)
