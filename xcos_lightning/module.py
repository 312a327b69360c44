"""``XCosModule``: the LightningModule. It wires injected parts together; the maths lives in ``models``."""
from __future__ import annotations

import time
from typing import Callable, Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset

from xcos_lightning.datamodules.pair_sampling import TrainPairs
from xcos_lightning.errors import DataFormatError
from xcos_lightning.evaluate import faces_to_images, forward_copy, grids_in_chunks, scores_from_grids
from xcos_lightning.metrics.verification_metric import VerificationMetric
from xcos_lightning.io.checkpoint import part_config
from xcos_lightning.io.spec import load_model
from xcos_lightning.models.backbone import GridBackbone, grid_embedding
from xcos_lightning.models.device import ChannelsLast, compile_trunk, prepare_for_device
from xcos_lightning.models.margins import ArcFace, MarginHead
from xcos_lightning.models.partial_fc import PartialFC
from xcos_lightning.models.teacher import Teacher
from xcos_lightning.models.xcos import CorrelationAttention, LearnedAttention, patched_cosine
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
        xcos: train the xCos branch. attention: its attention module (default learned, paper layout); a
            :class:`~xcos_lightning.models.CorrelationAttention` ("P") is fitted at the start of every training
            epoch on training pairs with the current trunk (``_fit_correlation_attention``).
        teacher: model SPEC of a frozen teacher (checkpoint of this framework or ``<format>:<path>``), or
            ``"self"``: this model's own detached flattened-embedding cosine.
        lambda_ce: weight of the identification loss (paper 0.5).
        lr, momentum, weight_decay, milestones, gamma: SGD for backbone and head; no weight decay on
            BatchNorm/PReLU/bias; lr multiplied by ``gamma`` at each epoch in ``milestones``.
        attention_lr, attention_step, attention_gamma: Adam for the attention with StepLR (paper 8, 0.99).
        nonfinite: what a NaN/inf loss or gradient does. Either way the faulty step leaves the weights and
            optimizer state untouched (and, for a non-finite loss, the BatchNorm statistics), decided on the
            device without a host sync; it still counts in ``global_step``. ``"raise"`` then stops the run
            with FloatingPointError naming the step at the next logging step or before the next checkpoint,
            whichever is first (so the last checkpoint stays the last good one); ``"skip"`` goes on and logs
            the running count as ``train/skipped_nonfinite`` (kept in checkpoints). Under AMP with a
            GradScaler (``16-mixed``) inf gradients are the scaler's business: it skips those steps and
            lowers its scale, so only the loss is checked. All DDP ranks decide together.
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
        self.teacher = None if teacher == "self" else Teacher(load_model(teacher))
        self.val_metrics = nn.ModuleDict()
        self._val_grids: dict[int, list[tuple[Tensor, Tensor]]] = {}  # per val loader: (index, grid) batches
        self._eval_model: XCosModel | None = None  # what validation_step runs: on_validation_epoch_start
        if nonfinite not in ("raise", "skip"):
            raise ValueError(f"nonfinite={nonfinite!r}: choose 'raise' or 'skip'")
        # Training images replaced because unreadable (FaceDataModule skip_bad_records), summed over ranks.
        self.register_buffer("skipped_bad_records", torch.zeros((), dtype=torch.long), persistent=False)
        # The non-finite guard's device-side record (no host sync per step): steps skipped, the first faulty
        # step (-1: none) and its kind (1 loss, 2 gradient), the step counter they refer to.
        self.register_buffer("_skipped", torch.zeros((), dtype=torch.long), persistent=False)
        self.register_buffer("_first_fault", torch.full((2,), -1, dtype=torch.long), persistent=False)
        self.register_buffer("_guard_step", torch.zeros((), dtype=torch.long), persistent=False)
        self._window: dict[str, Tensor] | None = None  # this optimizer step's micro-batches so far
        self._snapshot: list[Tensor] = []  # the model's buffers before the step (storage kept between steps)
        self._shard_sq: Tensor | None = None  # a sharded head's all-rank squared gradient norm, for clipping
        self._labels_checked = False

    # ------------------------------------------------------------ input checks
    def check_batch(self, batch: dict[str, Tensor], labels: Tensor | None = None) -> None:
        """Refuse images that are not float RGB ``(B, 3, H, W)`` (shapes only: no host sync) and, if given,
        identity ``labels`` outside ``[0, num_classes)``, naming the value: on a GPU an out-of-range label is a
        device-side assert that kills the process without saying which. Training checks labels once (see
        ``setup``), not per batch."""
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
    # One decision per optimizer step, on the device: ``on_before_optimizer_step`` reduces a single vector
    # (loss and gradient faults, the sharded head's squared gradient norm, replaced-record counts) over the
    # ranks, puts the model's buffers back and has the fused optimizers skip the update (``found_inf``, the
    # GradScaler protocol of torch.optim) where it is faulty. The host reads the record only where it syncs
    # anyway: at logging steps, before a checkpoint and at the end of training.
    def _scaler(self):
        return getattr(self.trainer.precision_plugin, "scaler", None)

    @property
    def skipped_nonfinite(self) -> int:
        """Training steps skipped for a non-finite loss or gradient so far (a host sync)."""
        return int(self._skipped)

    def on_train_start(self) -> None:
        self._guard_step.fill_(self.global_step)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        if self._window is None:  # the first micro-batch of an optimizer step: remember the buffers
            buffers = [b for b in self.model.buffers()]
            if len(self._snapshot) != len(buffers):
                self._snapshot = [b.detach().clone() for b in buffers]
            else:
                for saved, b in zip(self._snapshot, buffers):
                    saved.copy_(b)
            self._window = {"bad_loss": torch.zeros((), dtype=torch.bool, device=self.device),
                            "bad_records": torch.zeros((), device=self.device)}

    def on_before_optimizer_step(self, optimizer) -> None:
        """After backward (gradients all-reduced, AMP-unscaled), before clipping and the update."""
        window, self._window = self._window, None
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        # Under a GradScaler (16-mixed) inf gradients are the scaler's business: it skips those steps itself.
        bad_grad = torch.zeros((), dtype=torch.bool, device=self.device)
        if self._scaler() is None and grads:
            bad_grad = ~torch.isfinite(torch.nn.utils.get_total_norm(grads, norm_type=float("inf")))
        shard_sq = torch.zeros((), device=self.device)
        sharded = isinstance(self.head, PartialFC) and self.head.world_size > 1
        if sharded:
            shard = [p.grad for p in self.head.parameters() if p.grad is not None]
            shard_sq = torch.nn.utils.get_total_norm(shard).float() ** 2 if shard else shard_sq
        decision = torch.stack([window["bad_loss"].float(), bad_grad.float(), shard_sq, window["bad_records"]])
        if self.trainer.world_size > 1:
            # The one collective of the guard: one rank alone skipping would desynchronise the replicas.
            torch.distributed.all_reduce(decision)
        bad = (decision[0] + decision[1]) > 0
        self._shard_sq = decision[2] if sharded else None
        self.skipped_bad_records += decision[3].long()
        self._guard_step += 1
        kind = torch.where(decision[0] > 0, 1, 2)
        first = bad & (self._first_fault[0] < 0)
        self._first_fault.copy_(torch.where(first, torch.stack([self._guard_step - 1, kind]), self._first_fault))
        self._skipped += bad.long()
        bad_forward = decision[0] > 0  # a non-finite forward also wrote NaN into BatchNorm statistics
        for b, saved in zip(self.model.buffers(), self._snapshot):
            b.copy_(torch.where(bad_forward, saved, b))
        found_inf = None if self._scaler() is not None else bad.float()
        for inner in getattr(optimizer, "optimizers", [optimizer]):
            inner.found_inf = found_inf

    def _raise_on_fault(self) -> None:
        """``nonfinite=raise``: stop with the first faulty step (one host sync; called where the host syncs)."""
        if self.hparams.nonfinite != "raise":
            return
        step, kind = self._first_fault.tolist()
        if step < 0:
            return
        what = "training loss" if kind == 1 else "gradient (the loss was finite)"
        raise FloatingPointError(
            f"non-finite {what} at global step {step} on this or another rank; that step changed no weight, "
            "BatchNorm statistic or optimizer state, and no checkpoint was written after it (checked every "
            f"log_every_n_steps={self.trainer.log_every_n_steps} steps and before each save). Lower the learning "
            "rate, enable gradient clipping, or set model.nonfinite=skip")

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        for group in self.optimizers().param_groups:
            self.log(f"train/lr/{group['name']}", group["lr"], on_step=True, on_epoch=False)
        if self.hparams.nonfinite == "skip":
            self.log("train/skipped_nonfinite", self._skipped.float(), on_step=True, on_epoch=False)
        if "skipped_bad" in batch:
            self.log("train/skipped_bad_records", self.skipped_bad_records.float(), on_step=True, on_epoch=False)
        if self.global_step % max(self.trainer.log_every_n_steps, 1) == 0:
            self._raise_on_fault()

    def on_train_end(self) -> None:
        self._raise_on_fault()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self._raise_on_fault()  # a checkpoint is never written after a faulty step in raise mode
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
        self._skipped.fill_(int(checkpoint.get("skipped_nonfinite", 0)))
        self.skipped_bad_records.fill_(int(checkpoint.get("skipped_bad_records", 0)))

    # ----------------------------------------------------------------- training
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        img_a, img_b = batch["img_a"], batch["img_b"]
        labels = torch.cat([batch["label_a"], batch["label_b"]])
        self.check_batch(batch, None if self._labels_checked else labels)
        self._labels_checked = True
        if "skipped_bad" in batch:
            self._window["bad_records"] += batch["skipped_bad"].sum()
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
        self._window["bad_loss"] |= ~torch.isfinite(loss)
        self.log_dict(logs, batch_size=img_a.shape[0])
        self.log("train/loss", loss, prog_bar=True, batch_size=img_a.shape[0])
        return loss

    def _teacher_cosine(self, img_a: Tensor, img_b: Tensor, emb: Tensor) -> Tensor:
        if self.teacher is not None:
            return self.teacher.pair_cosine(img_a, img_b)
        ea, eb = emb.detach().chunk(2)
        return F.cosine_similarity(ea.float(), eb.float(), dim=1)

    # --------------------------------------------------- correlation attention
    def on_train_epoch_start(self) -> None:
        # Lightning skips this hook when it resumes mid-epoch: such a run keeps its checkpoint's weights, those
        # fitted at the start of that epoch.
        if isinstance(self.model.attention, CorrelationAttention):
            self._fit_correlation_attention(self.model.attention)

    @torch.no_grad()
    def _fit_correlation_attention(self, attention: CorrelationAttention) -> None:
        """Fit the "P" weights for this epoch's training: the current trunk's cell cosines S (eval mode, so no
        BatchNorm statistic moves) against the cosine the xCos score regresses to (the teacher's, or the
        model's own with ``teacher="self"``) on ``attention.fit_pairs`` of this epoch's training pairs (all of
        them if there are fewer), anchors drawn by a generator seeded by (data seed, epoch): the same pairs,
        hence the same weights, on any number of ranks and after a resume. Each rank scores every
        world_size-th pair; every rank fits on all of them, all-gathered."""
        train = self.trainer.train_dataloader
        pairs = getattr(train, "dataset", None)
        if not isinstance(pairs, TrainPairs):
            raise TypeError(f"CorrelationAttention is fitted on the training loader's TrainPairs (draw keys "
                            f"epoch * N + anchor); this training loader's dataset is a {type(pairs).__name__}")
        epoch, world = self.current_epoch, self.trainer.world_size
        count = min(attention.fit_pairs, len(pairs))
        keys = epoch * len(pairs) + np.random.default_rng((pairs.seed, epoch)).permutation(len(pairs))[:count]
        mine = keys[self.global_rank::world].tolist()
        share = -(-count // world)  # equal shapes for all_gather; the padding is masked out
        cells = torch.zeros(share, *attention.weights.shape, device=self.device)
        targets = torch.zeros(share, device=self.device)
        valid = (torch.arange(share, device=self.device) < len(mine)).long()
        loader = DataLoader(Subset(pairs, mine), batch_size=train.batch_size, num_workers=train.num_workers,
                            worker_init_fn=train.worker_init_fn)
        training, done, started = self.model.training, 0, time.perf_counter()
        self.model.eval()
        for batch in loader:
            img_a, img_b = batch["img_a"].to(self.device), batch["img_b"].to(self.device)
            with self.trainer.precision_plugin.forward_context():
                grids = self.model.grid(torch.cat([img_a, img_b]))
                cells[done:done + len(img_a)] = patched_cosine(*grids.chunk(2))
                targets[done:done + len(img_a)] = self._teacher_cosine(img_a, img_b, grid_embedding(grids))
            done += len(img_a)
        self.model.train(training)
        if world > 1:
            cells, targets, valid = (self.all_gather(t).flatten(0, 1) for t in (cells, targets, valid))
        weights = attention.fit(cells[valid.bool()], targets[valid.bool()])
        rank_zero_info(f"CorrelationAttention fitted on {count} training pairs for epoch {epoch} in "
                       f"{time.perf_counter() - started:.1f} s: weights {weights.min():.4f}..{weights.max():.4f} "
                       f"(uniform {1 / weights.numel():.4f})")

    def configure_optimizers(self):
        hp = self.hparams
        decay, no_decay = [], []
        sharded = isinstance(self.head, PartialFC)
        for module in (self.model.backbone,) if sharded else (self.model.backbone, self.head):
            for p in module.parameters():
                # BatchNorm/PReLU weights and biases are 1-d: weight decay would only shrink them.
                (no_decay if p.ndim <= 1 else decay).append(p)
        # Group names label the logged rates: train/lr/weights, train/lr/norms_biases, train/lr/attention.
        # Fused: one kernel per step, and the guard can skip the update on the device (found_inf).
        sgd = torch.optim.SGD([{"params": decay, "weight_decay": hp.weight_decay, "name": "weights"},
                               {"params": no_decay, "weight_decay": 0.0, "name": "norms_biases"}],
                              lr=hp.lr, momentum=hp.momentum, fused=True)
        milestones = sorted(hp.milestones or [])
        factors = [lambda epoch: hp.gamma ** sum(epoch >= m for m in milestones)] * 2
        optimizers = [sgd]
        if sharded:  # its own optimizer: its state is sharded like the centres (see on_save_checkpoint)
            optimizers.append(torch.optim.SGD([{"params": self.head.parameters(), "weight_decay": hp.weight_decay,
                                                "name": "head"}], lr=hp.lr, momentum=hp.momentum, fused=True))
            factors.append(factors[0])
        if self.model.has_xcos:
            optimizers.append(torch.optim.Adam([{"params": self.model.attention.parameters(), "name": "attention"}],
                                               lr=hp.attention_lr, fused=True))
            factors.append(lambda epoch: hp.attention_gamma ** (epoch // hp.attention_step))
        for opt in optimizers:
            _zero_momentum(opt)
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
        # The head's all-rank squared norm came with the guard's all-reduce (on_before_optimizer_step).
        replicated = torch.nn.utils.get_total_norm([p.grad for p in params if id(p) not in head]).float() ** 2
        torch.nn.utils.clip_grads_with_norm_(params, gradient_clip_val, (self._shard_sq + replicated).sqrt())

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
        if stage == "fit":
            self._check_label_range()
        names = getattr(self.trainer.datamodule, "val_set_names", None) or ["val"]
        kinds = ["cos", "xcos"] if self.model.has_xcos else ["cos"]
        for name in names:
            if name not in self.val_metrics:
                self.val_metrics[name] = nn.ModuleDict({k: VerificationMetric() for k in kinds})

    def _check_label_range(self) -> None:
        """Training labels against the head, once: a data module's ``num_classes`` counts the identities its
        labels use (``.rec`` labels are checked against ``property`` when it sets up). Without one, the first
        training batch is checked instead."""
        classes = getattr(self.trainer.datamodule, "num_classes", None)
        self._labels_checked = classes is not None
        if classes is not None and int(classes) > self.hparams.num_classes:
            raise DataFormatError(
                f"training label {int(classes) - 1} is outside [0, num_classes={self.hparams.num_classes}) of the "
                f"margin head: the data module has {int(classes)} identities; the model's num_classes must count "
                "every identity its labels use")

    def _set_name(self, dataloader_idx: int) -> str:
        return list(self.val_metrics.keys())[dataloader_idx]

    def on_validation_epoch_start(self) -> None:
        """Validation runs the forward ``explain.py verify`` runs (``evaluate.forward_copy``: on a CPU a
        BatchNorm-folded copy, the same scores within float rounding), built from this epoch's weights. A compiled
        trunk is kept as it is: the folded copy would run uncompiled."""
        self._eval_model = self.model if self.hparams.compile else forward_copy(self.model)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        """Pair batches (``img_a``, ``img_b``, ``label``, ``index``) are scored at once. Batches of distinct
        faces (``index``, ``face`` uint8 ``(B, H, W, 3)``: ``FaceDataModule``'s ``DistinctImages``) give one grid
        per face, with flip TTA, as ``explain.py verify`` does; their pairs are scored at the epoch's end."""
        if "face" in batch:
            grids = grids_in_chunks(self._eval_model, faces_to_images(batch["face"], self.device))
            self._val_grids.setdefault(dataloader_idx, []).append((batch["index"], grids.float()))
            return
        self.check_batch(batch)
        scores = self._eval_model.pair_scores(batch["img_a"], batch["img_b"], flip_tta=True)
        for kind, metric in self.val_metrics[self._set_name(dataloader_idx)].items():
            metric.update(scores[kind], batch["label"], batch["index"])

    def _score_distinct_faces(self) -> None:
        """Every pair both of whose faces were seen (on any rank: grids are all-gathered; DistributedSampler's
        padding repeats faces, which overwrite themselves) scored from the grids into the set's metrics."""
        loaders = self.trainer.test_dataloaders if self.trainer.testing else self.trainer.val_dataloaders
        loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
        for idx, parts in sorted(self._val_grids.items()):
            faces = loaders[idx].dataset
            index, grids = torch.cat([p[0] for p in parts]).to(self.device), torch.cat([p[1] for p in parts])
            if self.trainer.world_size > 1:
                index, grids = (self.all_gather(t).flatten(0, 1) for t in (index, grids))
            table = grids.new_zeros((len(faces), *grids.shape[1:]))
            seen = torch.zeros(len(faces), dtype=torch.bool, device=self.device)
            table[index], seen[index] = grids, True
            slot_a, slot_b = faces.slot[0::2].to(self.device), faces.slot[1::2].to(self.device)
            pairs = torch.nonzero(seen[slot_a] & seen[slot_b]).flatten()
            scores = scores_from_grids(self.model, table[slot_a[pairs]], table[slot_b[pairs]])
            labels = torch.from_numpy(faces.pair_set.labels)[pairs.cpu()]
            for kind, metric in self.val_metrics[self._set_name(idx)].items():
                metric.update(scores[kind].to(self.device), labels.to(self.device), pairs)
        self._val_grids = {}

    def on_validation_epoch_end(self) -> None:
        stage = "test" if self.trainer.testing else "val"
        self._score_distinct_faces()
        self._eval_model = None
        for name, metrics in self.val_metrics.items():
            for kind, metric in metrics.items():
                if not metric.update_called:
                    continue
                values = metric.compute()
                metric.reset()
                for key in ("acc", "acc_std", "eer", "eer_threshold", "tar_far1e-3", "tar_far1e-4"):
                    self.log(f"{stage}/{name}/{key}_{kind}", values[key], prog_bar=key == "acc")

    on_test_epoch_start = on_validation_epoch_start
    test_step = validation_step
    on_test_epoch_end = on_validation_epoch_end


def _zero_momentum(optimizer: torch.optim.Optimizer) -> None:
    """Start SGD momentum at zero (the same first update as torch's ``buf = grad``): a fused step skipped
    on the device at step 0 would otherwise leave the buffers it allocated uninitialized."""
    if not isinstance(optimizer, torch.optim.SGD):
        return
    for group in optimizer.param_groups:
        if group["momentum"]:
            for p in group["params"]:
                optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)


def _from_cli() -> bool:
    """True while LightningCLI instantiates the module: it then records the parts as config, not objects."""
    return _given_hyperparameters.get() is not None
