"""``ExplanationMonitor``: explanation quality of the model being trained, measured at validation time.

After a validation run (``on_validation_end``: the model is still in eval mode, under Lightning's
``inference_mode``), a fixed seeded subset of one validation set is explained by each configured method and
scored by the benchmark's faithfulness protocols (``xcos_lightning.metrics.protocols``).

DDP: the subset is sharded over the ranks like a ``DistributedSampler`` (padded with repeats, which the
metrics drop by pair index), every rank explains its shard one pair at a time (so a pair gets the same
maps on any number of ranks), and every rank runs the same metric collectives; only rank 0 talks to the
loggers and writes files.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal, Sequence

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning_utilities.core.rank_zero import rank_zero_warn
from torch import Tensor, nn
from torchmetrics import CatMetric

from xcos_lightning.callbacks.wandb_media import ShownPair, wandb_media
from xcos_lightning.explain import Explainer, PairExplanation, fast_embedding, list_explainers
from xcos_lightning.explain.perturbation import MaskingExplainer
from xcos_lightning.explain.registry import build_explainer, explains_xcos, parse_method
from xcos_lightning.metrics.protocols import (ProtocolConfig, clean_scores, decision_threshold, explanation_row,
                                              run_protocols)
from xcos_lightning.metrics.verification import _first_occurrence

class ExplanationMonitor(L.Callback):
    """Logs ``explain/<method>/<metric>`` (and, with W&B, figures, a table and curves) every N epochs.

    The measures are those of ``explain.py benchmark``, computed by the same engine
    (``xcos_lightning.metrics.protocols.run_protocols``) with the same defaults and under the same names, so
    a number logged during training means what the benchmark's number means.

    Decision threshold (``threshold=None``): as in the benchmark, the EER threshold of the single-view clean
    cosines of the monitored pairs (``protocols.decision_threshold``; gathered over the ranks), and for the
    xCos maps that of the xCos scores. Where the subset lacks genuine or impostor pairs (e.g. one pair per
    process under ``fast_dev_run``) no EER exists; then the validation run's ``val/<set>/eer_threshold_cos``
    (``_xcos``) from ``trainer.callback_metrics`` is used, with a warning.

    Args:
        methods: explainer tokens as in the benchmark (``name`` or ``name:key=value``, e.g. ``xcos:map=W``);
            methods of the xCos score (``xcos``, ``gradcam:score=xcos``) are skipped, with a warning, for
            models without attention.
        protocols: ``deletion`` (Deletion/Insertion AUC in %: ``deletion_genuine``, ``insertion_genuine``,
            ``deletion_impostor``, ``insertion_impostor``) and/or ``flips`` (S-RISE flip fractions in [0, 1] per
            clean decision: ``flip_deletion_match``, ``flip_insertion_match``, ``flip_unflipped_match`` and the
            ``_nonmatch`` ones). A group without pairs in the subset is left out, with a warning.
        val_set: validation set name (``val_set_names`` of the datamodule); ``None``: the first one.
        n_pairs: size of the subset, drawn once with ``seed`` from the whole set (the pair budget).
        seed: seed of the subset, of the tie order and of the seeded explainers (``random``).
        every_n_epochs: explain after validations of epochs ``n - 1, 2n - 1, ...`` (``trainer.validate``:
            always). Sanity-check validations are skipped.
        max_images: pairs of rank 0's shard drawn in the W&B figures and table.
        max_seconds: time budget per run and rank: after each pair, stop when it is spent (every rank
            explains at least one pair). ``None``: no limit.
        n_masks: masks of ``corrrise``, ``srise`` and ``rise`` (2 * n_masks forwards per pair); the mask set
            is drawn once and kept with the explainer.
        steps, fill, sides: the engine's ``ProtocolConfig`` (fractions ``k / steps`` of every curve and the
            flip grid; canvas; perturbed image(s)); the defaults are the benchmark's.
        bf16: bfloat16 autocast for explainers and measures (fast on GPUs and AMX CPUs, slow on AVX2 CPUs).
        batch_size: images per forward of explainers and measures; ``None``: 8 on CPU, 64 on GPU.
        reuse_masks: keep mask sets and the explainers' inference copies between runs (memory for time);
            ``False`` drops them after each run. Hooks (Grad-CAM) are always removed when a run ends.
        threshold: a fixed decision threshold for both scores instead of the EER thresholds.
        explainer_args: extra constructor arguments per method token, e.g. ``{"xssab": {"blur": true}}``.
        save_dir: folder of ``metrics.jsonl`` (one JSON line of scalars per run, rank 0); ``None``:
            ``<trainer.default_root_dir>/explain``.
    """

    PROTOCOLS = ("deletion", "flips")  # the pair protocols that need no patched set or gallery

    def __init__(
        self,
        methods: Sequence[str] = ("xcos", "corrrise", "xssab", "gradcam", "random"),
        protocols: Sequence[Literal["deletion", "flips"]] = ("deletion",),
        val_set: str | None = None,
        n_pairs: int = 12,
        seed: int = 0,
        every_n_epochs: int = 1,
        max_images: int = 4,
        max_seconds: float | None = None,
        n_masks: int = 64,
        steps: int = ProtocolConfig.steps,
        fill: Literal["zero", "mean", "blur", "road"] = "zero",
        sides: Literal["a", "both"] = "a",
        bf16: bool = False,
        batch_size: int | None = None,
        reuse_masks: bool = True,
        threshold: float | None = None,
        explainer_args: dict[str, dict[str, Any]] | None = None,
        save_dir: str | None = None,
    ) -> None:
        super().__init__()
        known = list_explainers()
        unknown = sorted({parse_method(m)[0] for m in methods} - set(known))
        if unknown or not methods:
            raise ValueError(f"ExplanationMonitor methods {list(methods)}: unknown {unknown}; choose from {known}")
        if not set(protocols) <= set(self.PROTOCOLS) or not protocols:
            raise ValueError(f"ExplanationMonitor protocols {list(protocols)}: choose one or more of "
                             f"{list(self.PROTOCOLS)}")
        extra = sorted(set(explainer_args or {}) - set(methods))
        if extra:
            raise ValueError(f"explainer_args names {extra}, which are not in methods {list(methods)}")
        for name, value in (("n_pairs", n_pairs), ("every_n_epochs", every_n_epochs), ("n_masks", n_masks)):
            if value < 1:
                raise ValueError(f"ExplanationMonitor {name} must be >= 1, got {value}")
        # One pair per call: the time budget is checked after each pair.
        self.config = ProtocolConfig(protocols=tuple(protocols), steps=steps, fills=(fill,), sides=sides, seed=seed,
                                     pair_batch=1, batch_size=batch_size)
        self.methods = list(dict.fromkeys(methods))
        self.val_set, self.n_pairs, self.seed, self.every_n_epochs = val_set, n_pairs, seed, every_n_epochs
        self.max_images, self.max_seconds, self.n_masks = max_images, max_seconds, n_masks
        self.bf16, self.batch_size, self.reuse_masks, self.threshold = bf16, batch_size, reuse_masks, threshold
        self.explainer_args = dict(explainer_args or {})
        self.save_dir = save_dir
        self._explainers: dict[str, Explainer | None] = {}  # kept between runs; None = skipped method
        self._pairs: dict[str, Tensor] | None = None  # this rank's shard, loaded once
        self._period_start: float | None = None
        self.last_scalars: dict[str, float] = {}  # of the latest run, on every rank

    # ------------------------------------------------------------------ hooks
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._period_start = time.perf_counter()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:  # no training epoch to compare with
            self._period_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self._due(trainer):
            return
        self.run(trainer, pl_module)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for explainer in self._explainers.values():
            if explainer is not None:
                explainer.release()
        self._explainers.clear()
        self._pairs = None

    def _due(self, trainer: L.Trainer) -> bool:
        return trainer.state.fn == TrainerFn.VALIDATING or (trainer.current_epoch + 1) % self.every_n_epochs == 0

    # -------------------------------------------------------------------- run
    def run(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Explain and measure this rank's shard, sync, log (rank 0); returns the scalars (every rank)."""
        start = time.perf_counter()
        model = _embedding_model(pl_module)
        device = pl_module.device
        set_name = self._set_name(trainer)
        pairs = self._shard(trainer, set_name, device)
        threshold_cos, threshold_xcos = self._thresholds(trainer, set_name, model, pairs)
        explainers = self._build_explainers(model, threshold_cos, threshold_xcos)
        explained = CatMetric().to(device)
        shown: list[ShownPair] = []

        def on_batch(batch: dict[str, Tensor], explanations: dict[str, PairExplanation],
                     values: dict[str, dict[str, Tensor]]) -> None:
            explained.update(batch["index"].double())
            if trainer.is_global_zero and len(shown) < self.max_images:
                pair = _shown_pair(model, batch["img_a"], batch["img_b"], batch["label"], batch["index"])
                pair.explanations = {name: explanation_row(e, 0) for name, e in explanations.items()}
                pair.values = {name: {k: float(v[0]) for k, v in vals.items()} for name, vals in values.items()}
                shown.append(pair)

        batches = ({k: v[i:i + 1] for k, v in pairs.items()} for i in range(len(pairs["index"])))
        try:
            results = run_protocols(explainers, fast_embedding(model, self.bf16), batches, threshold_cos, self.config,
                                    device=device, max_seconds=self.max_seconds, on_batch=on_batch)
        finally:
            self._end_run()
        # Collectives: every rank computes every metric in the same order.
        scalars: dict[str, float] = {}
        curves = {}
        for name, result in results.items():
            values = result.scalars(name)
            scalars.update({f"explain/{name}/{k}": v for k, v in values.items()})
            measured = result.curves()
            # The W&B plots of deletion/insertion, for the groups that had pairs.
            curves[name] = {key: (measured["fractions"], measured[f"{group}/{step}"])
                            for group in ("genuine", "impostor") for step in ("deletion", "insertion")
                            if (key := f"{step}_{group}") in values}
        scalars["explain/cost/pairs"] = float(explained.compute().unique().numel())
        elapsed = time.perf_counter() - start
        scalars["explain/cost/seconds"] = elapsed
        if self._period_start is not None:
            scalars["explain/cost/epoch_share"] = elapsed / (time.perf_counter() - self._period_start)
        scalars["explain/threshold_cos"] = threshold_cos
        if threshold_xcos is not None:
            scalars["explain/threshold_xcos"] = threshold_xcos
        self.last_scalars = scalars
        if trainer.is_global_zero:
            self._log(trainer, scalars, shown, curves, threshold_cos, threshold_xcos)
        return scalars

    def _end_run(self) -> None:
        # Nothing of a run may outlive it: hooks go always, caches unless they are to be reused. Mask
        # explainers register no hooks, so keeping their cache (masks, inference copy) leaves none behind.
        for explainer in self._explainers.values():
            if explainer is not None and not (self.reuse_masks and isinstance(explainer, MaskingExplainer)):
                explainer.release()

    # ---------------------------------------------------------------- pieces
    def _set_name(self, trainer: L.Trainer) -> str:
        names = list(getattr(trainer.datamodule, "val_set_names", None) or ["val"])
        name = self.val_set or names[0]
        if name not in names:
            raise ValueError(f"ExplanationMonitor val_set {name!r} is not a validation set of the datamodule "
                             f"(val_set_names: {names})")
        return name

    def _thresholds(self, trainer: L.Trainer, set_name: str, model: nn.Module,
                    pairs: dict[str, Tensor]) -> tuple[float, float | None]:
        """(cosine threshold, xCos threshold or None): see the class docstring."""
        has_xcos = bool(getattr(model, "has_xcos", False))
        if self.threshold is not None:
            return float(self.threshold), float(self.threshold) if has_xcos else None
        device = pairs["index"].device
        states = {name: CatMetric().to(device) for name in ("index", "label", "cos", "xcos")}
        scores = clean_scores(model, pairs["img_a"], pairs["img_b"])
        states["index"].update(pairs["index"].double())
        states["label"].update(pairs["label"].double())
        for kind in ("cos", "xcos"):
            states[kind].update(scores.get(kind, scores["cos"]).double())
        gathered = {k: m.compute().reshape(-1) for k, m in states.items()}  # collectives on every rank
        _, first = _first_occurrence(gathered["index"].long())
        labels = gathered["label"][first].bool()
        if labels.all() or not labels.any():
            keys = [f"val/{set_name}/eer_threshold_cos"] + ([f"val/{set_name}/eer_threshold_xcos"] if has_xcos else [])
            missing = [k for k in keys if k not in trainer.callback_metrics]
            if missing:
                raise ValueError(f"ExplanationMonitor: the {len(labels)} monitored pairs are all "
                                 f"{'genuine' if labels.all() else 'impostor'}, so they have no EER threshold, and "
                                 f"{missing} are not in trainer.callback_metrics; set the monitor's threshold")
            rank_zero_warn(f"ExplanationMonitor: the {len(labels)} monitored pairs are all "
                           f"{'genuine' if labels.all() else 'impostor'} (no EER threshold of their own): decisions "
                           f"use the validation run's {', '.join(keys)}")
            values = [float(trainer.callback_metrics[k]) for k in keys]
            return values[0], values[1] if has_xcos else None
        cos = decision_threshold(gathered["cos"][first], labels)[1]
        return cos, decision_threshold(gathered["xcos"][first], labels)[1] if has_xcos else None

    def _shard(self, trainer: L.Trainer, set_name: str, device: torch.device) -> dict[str, Tensor]:
        """This rank's pairs: ``img_a``, ``img_b`` ``(n, 3, H, W)`` in [0, 1], ``label`` bool and ``index`` ``(n,)``."""
        if self._pairs is None:
            loaders = trainer.val_dataloaders
            names = list(getattr(trainer.datamodule, "val_set_names", None) or ["val"])
            loader = loaders[names.index(set_name)] if isinstance(loaders, (list, tuple)) else loaders
            # a FaceDataModule val loader yields distinct faces; the monitor explains their pairs
            dataset = getattr(loader.dataset, "pair_set", loader.dataset)
            # fast_dev_run checks the plumbing: one pair per process is enough.
            count = min(self.n_pairs, trainer.world_size) if trainer.fast_dev_run else self.n_pairs
            mine = shard(subset_indices(len(dataset), count, self.seed), trainer.global_rank, trainer.world_size)
            items = [dataset[i] for i in mine]
            self._pairs = {
                "img_a": torch.stack([item["img_a"] for item in items]),
                "img_b": torch.stack([item["img_b"] for item in items]),
                "label": torch.tensor([bool(item["label"]) for item in items]),
                "index": torch.tensor(mine, dtype=torch.long),
            }
        return {k: v.to(device) for k, v in self._pairs.items()}

    def _build_explainers(self, model: nn.Module, threshold_cos: float,
                          threshold_xcos: float | None) -> dict[str, Explainer]:
        for token in self.methods:
            name, options = parse_method(token)
            options = {**options, **self.explainer_args.get(token, {})}
            of_xcos = explains_xcos(name, options)
            if of_xcos and threshold_xcos is None:
                if token not in self._explainers:
                    rank_zero_warn(f"ExplanationMonitor: the model has no xCos attention; method {token!r} is skipped")
                    self._explainers[token] = None
                continue
            if token not in self._explainers:
                shared = {"bf16": self.bf16, "batch_size": self.batch_size, "n_masks": self.n_masks, "seed": self.seed,
                          "sides": self.config.sides}
                self._explainers[token] = build_explainer(name, model, **{**shared, **options})
            self._explainers[token].threshold = threshold_xcos if of_xcos else threshold_cos
        return {name: e for name, e in self._explainers.items() if e is not None}

    def _log(self, trainer: L.Trainer, scalars: dict[str, float], shown: list[ShownPair], curves: dict,
             threshold_cos: float, threshold_xcos: float | None) -> None:
        step = trainer.global_step  # never decreases, so W&B keeps every point
        logged = {**scalars, "epoch": trainer.current_epoch}
        media = None
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                if media is None:
                    media = wandb_media(shown, curves, threshold_cos, threshold_xcos)
                logger.log_metrics({**logged, **media}, step=step)
            else:
                logger.log_metrics(logged, step=step)
        folder = Path(self.save_dir) if self.save_dir is not None else Path(trainer.default_root_dir) / "explain"
        record = {"epoch": trainer.current_epoch, "step": step, "scalars": scalars}
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as err:  # like the run's other logs: an unwritable folder never stops training
            rank_zero_warn(f"ExplanationMonitor could not write {folder / 'metrics.jsonl'} ({type(err).__name__}: "
                           f"{err}); the scalars still went to the loggers")


def subset_indices(total: int, count: int, seed: int) -> list[int]:
    """``min(count, total)`` distinct pair indices in ``[0, total)``, sorted, drawn by ``seed`` alone."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(total, generator=generator)[:count].sort().values.tolist()


def shard(indices: list[int], rank: int, world_size: int) -> list[int]:
    """``DistributedSampler``'s split of ``indices``: padded with its first items to a multiple of
    ``world_size``, then every ``world_size``-th from ``rank``; every rank gets the same number (>= 1)."""
    padded = indices + (indices * world_size)[:(-len(indices)) % world_size]
    return padded[rank::world_size]


def _embedding_model(pl_module: L.LightningModule) -> nn.Module:
    model = getattr(pl_module, "model", None)
    if not isinstance(model, nn.Module):
        raise TypeError(f"ExplanationMonitor needs pl_module.model, an embedding nn.Module ((B, 3, H, W) in [0, 1] "
                        f"-> (B, D)); {type(pl_module).__name__} has none")
    return model


def _shown_pair(model: nn.Module, img_a: Tensor, img_b: Tensor, label: Tensor, index: Tensor) -> ShownPair:
    with torch.no_grad():
        scores = model.pair_scores(img_a, img_b, flip_tta=False) if hasattr(model, "pair_scores") else {
            "cos": torch.nn.functional.cosine_similarity(model(img_a), model(img_b), dim=1)}
    xcos = scores.get("xcos")
    return ShownPair(int(index), bool(label), img_a[0].cpu(), img_b[0].cpu(), float(scores["cos"]),
                     None if xcos is None else float(xcos))
