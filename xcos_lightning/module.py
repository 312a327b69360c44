"""``XCosModule``: the LightningModule. It wires injected parts together; the maths lives in ``models``."""
from __future__ import annotations

from typing import Callable, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from xcos_lightning.errors import DataFormatError
from xcos_lightning.metrics.verification import VerificationMetric
from xcos_lightning.models.backbone import GridBackbone, grid_embedding
from xcos_lightning.models.checkpoint import part_config
from xcos_lightning.models.device import ChannelsLast, compile_trunk, prepare_for_device
from xcos_lightning.models.margins import ArcFace, MarginHead
from xcos_lightning.models.partial_fc import PartialFC
from xcos_lightning.models.teacher import Teacher
from xcos_lightning.models.xcos import LearnedAttention
from xcos_lightning.models.xcos_model import XCosModel
from xcos_lightning.optim import JointOptimizer

HeadFactory = Callable[[int, int], MarginHead | PartialFC]


class XCosModule(L.LightningModule):
    """Trains an xCos face model: margin loss on both faces of each pair + xCos regression to a teacher.

    loss = lambda_ce * CE + (1 - lambda_ce) * MSE(xCos, teacher cosine); ``xcos=False`` trains the
    ArcFace-only baseline (no attention, loss = CE), e.g. to export as a teacher.

    Args:
        backbone: trunk + grid head.
        num_classes: training identities (linked from the datamodule by ``train.py``).
        head: margin head factory ``(embedding_dim, num_classes) -> MarginHead | PartialFC``; default ArcFace
            s=64 m=0.5. A :class:`~xcos_lightning.models.PartialFC` (``PartialArcFace``, ``PartialCosFace``)
            shards the class centres across the DDP ranks, left out of DDP's gradient all-reduce, with their
            own SGD (same lr, momentum, weight decay and schedule, logged as ``train/lr/head``); its
            checkpoints hold the full matrix and momentum and resume on any number of ranks. Its
            ``train/id_acc`` counts the classes scored in the step (all of them at ``sample_rate`` 1).
        xcos: train the xCos branch. attention: its attention module (default learned, paper layout).
        teacher: model SPEC of a frozen teacher (checkpoint of this framework or ``<format>:<path>``), or
            ``"self"``: this model's own detached flattened-embedding cosine.
        lambda_ce: weight of the identification loss (paper 0.5).
        lr, momentum, weight_decay, milestones, gamma: SGD for backbone and head; no weight decay on
            BatchNorm/PReLU/bias; lr multiplied by ``gamma`` at each epoch in ``milestones``.
        attention_lr, attention_step, attention_gamma: Adam for the attention with StepLR (paper 8, 0.99).
        nonfinite: what a NaN/inf loss or gradient does. ``"raise"`` stops the run with FloatingPointError
            before the weights change (the last checkpoint stays the last good one); ``"skip"`` leaves the
            weights and optimizer state of that step untouched, goes on, and logs the running count as
            ``train/skipped_nonfinite`` (kept in checkpoints). The step still counts in ``global_step``.
            Under AMP with a GradScaler (``16-mixed``) inf gradients are the scaler's business: it skips
            those steps and lowers its scale, so only the loss is checked. All DDP ranks decide together.
        channels_last: memory format of the model (and teacher) and of the images entering it: ``"auto"`` =
            channels-last on CUDA, contiguous elsewhere; ``true``/``false`` force it (``models.device``).
        compile: ``torch.compile`` the trunk (``true``: inductor; a string names the backend, e.g. ``eager``);
            compile time is printed per mode ("compiled trunk (train) in X s"). State-dict keys unchanged.
    """

    def __init__(
        self,
        backbone: GridBackbone,
        num_classes: int,
        head: HeadFactory | None = None,
        xcos: bool = True,
        attention: nn.Module | None = None,
        teacher: str = "self",
        lambda_ce: float = 0.5,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        milestones: list[int] | None = None,
        gamma: float = 0.1,
        attention_lr: float = 1e-3,
        attention_step: int = 8,
        attention_gamma: float = 0.99,
        nonfinite: Literal["raise", "skip"] = "raise",
        channels_last: ChannelsLast = "auto",
        compile: bool | str = False,
    ) -> None:
        super().__init__()
        if _from_cli():
            self.save_hyperparameters()  # LightningCLI records each part as class_path + init_args
        else:
            self.save_hyperparameters(ignore=["backbone", "head", "attention"])
            self.hparams["backbone"] = part_config(backbone)
            self.hparams["attention"] = part_config(attention)
        if xcos and attention is None:
            attention = LearnedAttention(backbone.grid_channels)
        self.model = XCosModel(backbone, attention if xcos else None)
        self.head = (head or ArcFace)(backbone.embedding_dim, num_classes)
        self.teacher = None if teacher == "self" else Teacher(_load_teacher(teacher))
        self.val_metrics = nn.ModuleDict()
        if nonfinite not in ("raise", "skip"):
            raise ValueError(f"nonfinite={nonfinite!r}: choose 'raise' or 'skip'")
        self.skipped_nonfinite = 0
        # Training images replaced because unreadable (FaceDataModule skip_bad_records), summed over ranks.
        self.register_buffer("skipped_bad_records", torch.zeros((), dtype=torch.long), persistent=False)

    # ------------------------------------------------------------ input checks
    def check_batch(self, batch: dict[str, Tensor], labels: Tensor | None = None) -> None:
        """Refuse images that are not float RGB ``(B, 3, H, W)`` and identity ``labels`` outside
        ``[0, num_classes)``, naming the value: on a GPU an out-of-range label is a device-side assert that
        kills the process without saying which."""
        for key in ("img_a", "img_b"):
            img = batch[key]
            if not (img.ndim == 4 and img.shape[1] == 3 and img.is_floating_point()):
                raise DataFormatError(f"batch[{key!r}] has shape {tuple(img.shape)} and dtype {img.dtype}; models "
                                      "take float RGB (B, 3, H, W) in [0, 1]: convert grayscale/RGBA images to RGB "
                                      "in the dataset")
        if labels is not None:
            outside = (labels < 0) | (labels >= self.hparams.num_classes)
            if outside.any():
                raise DataFormatError(
                    f"training label {int(labels[outside][0])} is outside [0, num_classes={self.hparams.num_classes}) "
                    "of the margin head; the data module's num_classes must count every identity its labels use")

    # ---------------------------------------------------------- numeric faults
    def _nonfinite(self, bad: bool) -> bool:
        # One rank alone skipping or raising would leave the others waiting in the gradient all-reduce.
        return bool(self.trainer.strategy.reduce_boolean_decision(bad, all=False))

    def _gradient_check_applies(self) -> bool:
        return getattr(self.trainer.precision_plugin, "scaler", None) is None

    def on_before_optimizer_step(self, optimizer) -> None:
        """After backward (gradients all-reduced, AMP-unscaled), before clipping and the update."""
        if not self._gradient_check_applies():
            return
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if not grads:
            return
        peak = torch.stack([g.detach().abs().amax().float() for g in grads]).amax()
        if not self._nonfinite(not bool(torch.isfinite(peak))):
            return
        if self.hparams.nonfinite == "raise":
            names = [n for n, p in self.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
            raise FloatingPointError(
                f"non-finite gradient at global step {self.global_step} in {len(names)} parameters (first: "
                f"{names[0] if names else '?'}) although the loss was finite; the weights were not updated. "
                "Lower the learning rate, enable gradient clipping, or set model.nonfinite=skip")
        for p in self.parameters():
            p.grad = None  # SGD and Adam leave parameters without gradient (and their state) untouched
        self.skipped_nonfinite += 1

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        for group in self.optimizers().param_groups:
            self.log(f"train/lr/{group['name']}", group["lr"], on_step=True, on_epoch=False)
        if self.hparams.nonfinite == "skip":
            self.log("train/skipped_nonfinite", float(self.skipped_nonfinite), on_step=True, on_epoch=False)

    def _count_bad_records(self, batch: dict[str, Tensor]) -> None:
        if "skipped_bad" not in batch:
            return
        # Every rank adds the same all-reduced total, so the counter (and the checkpoint of rank 0) is global.
        self.skipped_bad_records += self.trainer.strategy.reduce(batch["skipped_bad"].sum(), reduce_op="sum").long()
        self.log("train/skipped_bad_records", self.skipped_bad_records.float(), on_step=True, on_epoch=False)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["skipped_nonfinite"] = self.skipped_nonfinite
        checkpoint["skipped_bad_records"] = int(self.skipped_bad_records)
        # Every rank saves (rank 0 writes): the head's momentum is gathered to the full (C, D) like its weight.
        self._map_head_optimizer_state(checkpoint, self.head.gather_rows if isinstance(self.head, PartialFC) else None)

    def _map_head_optimizer_state(self, checkpoint: dict, fn) -> None:
        """Replace each per-class tensor of the PartialFC head's SGD state in ``checkpoint`` by ``fn`` of it.
        The entries are new dicts: ``optimizer.state_dict()`` shares them with the live optimizer."""
        if not isinstance(self.head, PartialFC) or not checkpoint.get("optimizer_states"):
            return
        state = checkpoint["optimizer_states"][0]["optimizers"][1]["state"]
        for index, entry in state.items():
            state[index] = {key: fn(value) if isinstance(value, Tensor) and self.head.is_class_tensor(value) else value
                            for key, value in entry.items()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Called before the weights and optimizer states are restored: keep this rank's rows of the momentum
        # (the weight's own state-dict loading keeps its rows).
        self._map_head_optimizer_state(checkpoint, self.head.shard_rows if isinstance(self.head, PartialFC) else None)
        self.skipped_nonfinite = int(checkpoint.get("skipped_nonfinite", 0))
        self.skipped_bad_records.fill_(int(checkpoint.get("skipped_bad_records", 0)))

    # ----------------------------------------------------------------- training
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        img_a, img_b = batch["img_a"], batch["img_b"]
        labels = torch.cat([batch["label_a"], batch["label_b"]])
        self.check_batch(batch, labels)
        self._count_bad_records(batch)
        # A non-finite forward also writes NaN into BatchNorm running statistics; they are put back with the
        # step. Copying them costs far less than the forward (a few thousand numbers per BatchNorm).
        buffers = [b.detach().clone() for b in self.model.buffers()]
        grids = self.model.grid(torch.cat([img_a, img_b]))
        emb = grid_embedding(grids)
        ce, id_acc = self.head.loss(emb, labels)
        loss, logs = ce, {"train/ce": ce, "train/id_acc": id_acc}
        if self.model.has_xcos:
            grid_a, grid_b = grids.chunk(2)
            _, _, xcos = self.model.maps_from_grids(grid_a, grid_b)
            target = self._teacher_cosine(img_a, img_b, emb)
            mse = F.mse_loss(xcos.float(), target.float())
            loss = self.hparams.lambda_ce * ce + (1 - self.hparams.lambda_ce) * mse
            logs["train/mse"] = mse
        if self._nonfinite(not bool(torch.isfinite(loss))):
            for b, saved in zip(self.model.buffers(), buffers):
                b.copy_(saved)
            if self.hparams.nonfinite == "raise":
                raise FloatingPointError(
                    f"non-finite training loss {loss.item()} at global step {self.global_step} (ce={ce.item()}) "
                    "on this or another rank; the weights were not updated. Lower the learning rate, enable "
                    "gradient clipping, or set model.nonfinite=skip")
            self.skipped_nonfinite += 1
            return None  # Lightning then skips backward and the update of this step
        self.log_dict(logs, batch_size=img_a.shape[0])
        self.log("train/loss", loss, prog_bar=True, batch_size=img_a.shape[0])
        return loss

    def _teacher_cosine(self, img_a: Tensor, img_b: Tensor, emb: Tensor) -> Tensor:
        if self.teacher is not None:
            return self.teacher.pair_cosine(img_a, img_b)
        ea, eb = emb.detach().chunk(2)
        return F.cosine_similarity(ea.float(), eb.float(), dim=1)

    def configure_optimizers(self):
        hp = self.hparams
        decay, no_decay = [], []
        sharded = isinstance(self.head, PartialFC)
        for module in (self.model.backbone,) if sharded else (self.model.backbone, self.head):
            for p in module.parameters():
                # BatchNorm/PReLU weights and biases are 1-d: weight decay would only shrink them.
                (no_decay if p.ndim <= 1 else decay).append(p)
        # Group names label the logged rates: train/lr/weights, train/lr/norms_biases, train/lr/attention.
        sgd = torch.optim.SGD([{"params": decay, "weight_decay": hp.weight_decay, "name": "weights"},
                               {"params": no_decay, "weight_decay": 0.0, "name": "norms_biases"}],
                              lr=hp.lr, momentum=hp.momentum)
        milestones = sorted(hp.milestones or [])
        factors = [lambda epoch: hp.gamma ** sum(epoch >= m for m in milestones)] * 2
        optimizers = [sgd]
        if sharded:  # its own optimizer: its state is sharded like the centres (see on_save_checkpoint)
            optimizers.append(torch.optim.SGD([{"params": self.head.parameters(), "weight_decay": hp.weight_decay,
                                                "name": "head"}], lr=hp.lr, momentum=hp.momentum))
            factors.append(factors[0])
        if self.model.has_xcos:
            optimizers.append(torch.optim.Adam([{"params": self.model.attention.parameters(), "name": "attention"}],
                                               lr=hp.attention_lr))
            factors.append(lambda epoch: hp.attention_gamma ** (epoch // hp.attention_step))
        optimizer = JointOptimizer(optimizers)
        # One scheduler, one factor per parameter group: MultiStep for SGD, StepLR for the attention.
        return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, factors)}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Lightning's clipping, except that a sharded head's norm counts every rank's centres: each rank must
        scale its replicated (DDP-averaged) gradients by the same factor, or the replicas drift apart."""
        sharded = isinstance(self.head, PartialFC) and self.head.world_size > 1
        if not (sharded and gradient_clip_val and gradient_clip_algorithm in (None, "norm")):
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        head = {id(p) for p in self.head.parameters()}
        shard = torch.nn.utils.get_total_norm([p.grad for p in params if id(p) in head]) ** 2
        torch.distributed.all_reduce(shard, group=self.head.group)
        replicated = torch.nn.utils.get_total_norm([p.grad for p in params if id(p) not in head]) ** 2
        torch.nn.utils.clip_grads_with_norm_(params, gradient_clip_val, (shard + replicated).sqrt())

    def configure_model(self) -> None:
        """Memory format (``channels_last``) and compilation (``compile``) for the Trainer's device."""
        device = self.trainer.strategy.root_device
        prepare_for_device(self.model, device, self.hparams.channels_last)
        if self.teacher is not None:
            prepare_for_device(self.teacher.model, device, self.hparams.channels_last)
        if self.hparams.compile:
            backend = "inductor" if self.hparams.compile is True else self.hparams.compile
            compile_trunk(self.model.backbone, backend, report=rank_zero_info)

    # --------------------------------------------------------------- validation
    def setup(self, stage: str) -> None:
        if isinstance(self.head, PartialFC):
            self.head.shard()  # the process group exists now, DDP does not wrap the module yet
            # Each rank's centres are other parameters: DDP must neither broadcast rank 0's at start nor
            # average their gradients. torch has no public argument for this; the documented helper is it.
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                self, [f"head.{name}" for name, _ in self.head.named_parameters()])
        names = getattr(self.trainer.datamodule, "val_set_names", None) or ["val"]
        kinds = ["cos", "xcos"] if self.model.has_xcos else ["cos"]
        for name in names:
            if name not in self.val_metrics:
                self.val_metrics[name] = nn.ModuleDict({k: VerificationMetric() for k in kinds})

    def _set_name(self, dataloader_idx: int) -> str:
        return list(self.val_metrics.keys())[dataloader_idx]

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self.check_batch(batch)
        scores = self.model.pair_scores(batch["img_a"], batch["img_b"], flip_tta=True)
        for kind, metric in self.val_metrics[self._set_name(dataloader_idx)].items():
            metric.update(scores[kind], batch["label"], batch["index"])

    def on_validation_epoch_end(self) -> None:
        stage = "test" if self.trainer.testing else "val"
        for name, metrics in self.val_metrics.items():
            for kind, metric in metrics.items():
                if not metric.update_called:
                    continue
                values = metric.compute()
                metric.reset()
                for key in ("acc", "acc_std", "eer", "eer_threshold", "tar_far1e-3", "tar_far1e-4"):
                    self.log(f"{stage}/{name}/{key}_{kind}", values[key], prog_bar=key == "acc")

    test_step = validation_step
    on_test_epoch_end = on_validation_epoch_end


def _from_cli() -> bool:
    """True while LightningCLI instantiates the module: it then records the parts as config, not objects."""
    from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters

    return _given_hyperparameters.get() is not None


def _load_teacher(spec: str) -> nn.Module:
    from xcos_lightning.models.spec import load_model

    return load_model(spec)
