"""One faithfulness engine: every protocol, for any set of explainers, on one set of pairs.

``explain.py benchmark``, ``explain.py compare`` and the training-time ``ExplanationMonitor`` all call
``run_protocols`` (the CLI commands through ``evaluate_pair_set``), so a number means the same thing in
each. One set of defaults (``ProtocolConfig``):

- protocols ``deletion`` (Deletion/Insertion AUC %, ``faithfulness``), ``flips`` (S-RISE flip fractions,
  ``flip_fraction``: mean-colour canvas, a grid of ``steps`` refined to the pixel), ``dpr`` (patched pairs,
  ``patch_dpr``; needs ``patched_a`` in the batches) and ``identification`` (``identification``; needs an
  ``IdentificationData``), the first three by default;
- ``steps = 20`` fractions (5 %) for every curve and the flip grid; canvas ``zero`` (the papers); image A
  perturbed against the clean B (``sides = "a"``);
- pixel order: each explanation's similarity / dissimilarity order (``PairExplanation.order_keys``), ties
  broken per pair by ``tie_seeds(seed, index)``; explainers are called with the pairs' indices (seeded
  methods draw per pair), so values never depend on batching, sharding or on which other methods ran;
- decisions: one fixed clean threshold on the embedding cosine (``decision_threshold``: the EER threshold
  of the single-view clean scores of the evaluated pairs, centred in its score gap), the same for every
  method;
- flip fractions are reported per clean decision (``_match`` / ``_nonmatch``), never pooled: pooled over
  all pairs, non-matches' deletion flip (~1) and insertion flip (~0) would make half the value constant.

Result names (``MethodResults.scalars``): ``deletion_genuine``, ``insertion_genuine``,
``deletion_impostor``, ``insertion_impostor`` (extra canvases: ``_<fill>`` suffix);
``flip_{deletion,insertion,unflipped}_{match,nonmatch}``; ``dpr_fmr_auc``, ``dpr_fnmr_auc``,
``dpr_fmr_patched``, ``dpr_fnmr_patched``; ``identification_{deletion,insertion}[_<fill>]``,
``identification_rank1``; ``seconds_per_pair``. A group without pairs (no impostor among the evaluated
pairs, no clean non-match, ...) is left out with a warning rather than reported as NaN.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Mapping, NamedTuple, Sequence

import numpy as np
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_warn  # sets the process rank on import
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset
from torchmetrics import SumMetric

from xcos_lightning.datamodules.image_io import to_tensor
from xcos_lightning.datamodules.pair_set import PairSet
from xcos_lightning.datamodules.patched_pairs import identities_from_folders, make_patched_set
from xcos_lightning.errors import ModelSpecError, VerificationSetError
from xcos_lightning.explain.base import SCORES, Explainer, PairExplanation, XCosScore
from xcos_lightning.explain.inference import fast_embedding
from xcos_lightning.explain.registry import build_explainer, explains_xcos, parse_method
from xcos_lightning.metrics.faithfulness import (FILLS, DeletionInsertionMetric, EmbedFn, Similarity, accepts, cosine,
                                                 fraction_grid, pair_perturbation_scores, tie_seeds)
from xcos_lightning.metrics.flip_fraction import FlipFractionMetric, FlipFractions, flip_fractions
from xcos_lightning.metrics.identification import (IdentificationMetric, combine_maps, gallery_from_pairs,
                                                   identification_correct, probe_maps, top_k_gallery)
from xcos_lightning.metrics.patch_dpr import DPRMetric, dpr_scores
from xcos_lightning.metrics.verification import equal_error_rate
from xcos_lightning.models.fusion import inference_copy

PROTOCOLS = ("deletion", "flips", "dpr", "identification")
DEFAULT_PROTOCOLS = ("deletion", "flips", "dpr")
GROUPS = {"genuine": "genuine pairs", "impostor": "impostor pairs", "match": "clean matches",
          "nonmatch": "clean non-matches"}


@dataclass(frozen=True)
class ProtocolConfig:
    """Settings of every protocol (defaults: see the module docstring).

    Attributes:
        protocols: subset of ``PROTOCOLS``.
        steps: ``n`` of the fractions ``k / n`` of every curve and of the flip grid.
        fills: deletion/insertion (and identification) canvases from ``FILLS``; the first one is the main one,
            the others add ``_<fill>`` columns scored on the same maps.
        sides: ``"a"`` perturbs image A against clean B, ``"both"`` A and B in turn.
        seed: run seed of the tie-breaking permutations (and what callers give seeded explainers).
        top_k: identification: gallery candidates each probe is explained against.
        pair_batch: pairs explained per explainer call.
        batch_size: images per forward pass of the protocols; ``None``: 8 on CPU, 64 elsewhere (as explainers).
        score: the verifier of every decision: ``"cos"`` (the embedding cosine) or ``"xcos"`` (the xCos score of
            an xCos model, ``evaluate_pair_set``; its EER threshold then decides).
    """

    protocols: tuple[str, ...] = DEFAULT_PROTOCOLS
    steps: int = 20
    fills: tuple[str, ...] = ("zero",)
    sides: str = "a"
    seed: int = 0
    top_k: int = 3
    pair_batch: int = 8
    batch_size: int | None = None
    score: str = "cos"

    def __post_init__(self) -> None:
        for name in ("protocols", "fills"):
            object.__setattr__(self, name, tuple(dict.fromkeys(getattr(self, name))))
        if not self.protocols or set(self.protocols) - set(PROTOCOLS):
            raise ValueError(f"protocols {','.join(self.protocols)!r}: choose from {','.join(PROTOCOLS)}")
        if not self.fills or set(self.fills) - set(FILLS):
            raise ValueError(f"fills {','.join(self.fills)!r}: choose from {','.join(FILLS)}")
        if self.sides not in ("a", "both"):
            raise ValueError(f"sides must be 'a' or 'both', got {self.sides!r}")
        for name in ("steps", "top_k", "pair_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {self.score!r}")
        if self.score == "xcos" and "identification" in self.protocols:
            raise ValueError("the identification protocol ranks a gallery by the embedding cosine: use score 'cos'")

    def forward_batch(self, device: torch.device) -> int:
        """Images per forward pass on ``device``."""
        if self.batch_size is not None:
            return self.batch_size
        return Explainer.CPU_BATCH_SIZE if device.type == "cpu" else Explainer.GPU_BATCH_SIZE

    def suffix(self, fill: str) -> str:
        """Column suffix of a canvas: ``""`` for the main one, ``"_<fill>"`` for the others."""
        return "" if fill == self.fills[0] else f"_{fill}"


class IdentificationData(NamedTuple):
    """Probes ``(P, 3, H, W)`` with identities ``(P,)`` and image indices ``(P,)``, gallery images ``(G, 3, H, W)``,
    their embeddings ``(G, D)`` and identities ``(G,)``, and each probe's top-K gallery rows ``(P, K)``."""

    probes: Tensor
    probe_ids: Tensor
    probe_index: Tensor
    gallery: Tensor
    gallery_emb: Tensor
    gallery_ids: Tensor
    top: Tensor


def identification_data(pair_set: PairSet, pairs: np.ndarray, embed_fn: EmbedFn, top_k: int,
                        device: torch.device) -> IdentificationData:
    """The probe / gallery split of ``pairs`` (``identification.gallery_from_pairs``), loaded and embedded."""
    identities = identities_from_folders(pair_set)
    if identities is None:
        raise VerificationSetError(f"{pair_set.name}: the identification protocol needs each image's identity; "
                                   "use an LFW-style folder set (lfw:<folder> or pairs:<root>:<file>), not a .bin")
    try:
        split = gallery_from_pairs(pair_set.sources, pair_set.labels, identities, pairs)
    except ValueError as err:
        raise VerificationSetError(f"{pair_set.name}: {err}") from err

    def load(rows: np.ndarray) -> Tensor:
        return torch.stack([to_tensor(pair_set.load_image(int(j))) for j in rows]).to(device)

    probes, gallery = load(split.probes), load(split.gallery)
    with torch.no_grad():
        gallery_emb, probe_emb = embed_fn(gallery).float(), embed_fn(probes).float()
    if not 1 <= top_k <= len(gallery):
        raise VerificationSetError(f"top-k {top_k}: the gallery of {pair_set.name} has {len(gallery)} images")
    return IdentificationData(probes, torch.as_tensor(split.probe_ids), torch.as_tensor(split.probes), gallery,
                              gallery_emb, torch.as_tensor(split.gallery_ids), top_k_gallery(probe_emb, gallery_emb,
                                                                                            top_k))


class MethodResults:
    """The torchmetrics states of one explainer under every configured protocol (DDP-safe: ``scalars``,
    ``curves`` and ``per_pair`` sync, so every rank calls them in the same order)."""

    def __init__(self, config: ProtocolConfig, threshold: float, device: torch.device | str = "cpu") -> None:
        self.config, self.threshold = config, float(threshold)
        wanted = set(config.protocols)
        steps = config.steps
        self.deletion = ({f: DeletionInsertionMetric(threshold, steps).to(device) for f in config.fills}
                         if "deletion" in wanted else {})
        self.flips = FlipFractionMetric().to(device) if "flips" in wanted else None
        self.dpr = DPRMetric(threshold, steps).to(device) if "dpr" in wanted else None
        self.identification = ({f: IdentificationMetric(steps).to(device) for f in config.fills}
                               if "identification" in wanted else {})
        self.seconds, self.pairs = SumMetric().to(device), SumMetric().to(device)

    def update(self, explainer: Explainer, embed_fn: EmbedFn, batch: Mapping[str, Tensor],
               similarity: Similarity = cosine) -> tuple[PairExplanation, dict[str, Tensor]]:
        """Explain one batch and run the pair protocols on it (decisions: ``similarity`` of ``embed_fn``'s
        representations above the threshold); returns the explanation and each pair's values ``{name: (B,)}``
        (``deletion``/``insertion``: the pair's AUC % in its own group, main canvas; ``flip_deletion``/
        ``flip_insertion``)."""
        c = self.config
        img_a, img_b, labels, index = batch["img_a"], batch["img_b"], batch["label"].bool(), batch["index"]
        device = img_a.device
        forward = c.forward_batch(device)
        seeds = tie_seeds(c.seed, index)
        expl = explainer(img_a, img_b, index)
        self.seconds.update(torch.tensor(expl.seconds, dtype=torch.float64))
        self.pairs.update(torch.tensor(float(len(index)), dtype=torch.float64))
        values: dict[str, Tensor] = {}
        for fill, metric in self.deletion.items():
            deletion, insertion = pair_perturbation_scores(embed_fn, img_a, img_b, expl, labels, c.steps, fill,
                                                           c.sides, forward, seeds=seeds, similarity=similarity)
            metric.update(deletion.to(device), insertion.to(device), labels.to(device), index.to(device))
            if fill == c.fills[0]:
                for step, scores in (("deletion", deletion), ("insertion", insertion)):
                    correct = accepts(scores, self.threshold) == labels.to(scores.device)[:, None, None]
                    values[step] = 100 * torch.trapezoid(correct.double().mean(1).cpu(), fraction_grid(c.steps))
        if self.flips is not None:
            flips = flip_fractions(embed_fn, img_a, img_b, *expl.order_keys("a"), self.threshold, c.steps, True,
                                   forward, seeds=seeds, similarity=similarity)
            self.flips.update(FlipFractions(*(t.to(device) for t in flips)), index.to(device))
            values["flip_deletion"], values["flip_insertion"] = flips.deletion.cpu(), flips.insertion.cpu()
        if self.dpr is not None:
            if "patched_a" not in batch:
                raise ValueError("the dpr protocol needs patched pairs: batches without 'patched_a' "
                                 "(build them with datamodules.patched_pairs.make_patched_set)")
            patched = explainer(batch["patched_a"], img_b, index)
            scores = dpr_scores(embed_fn, batch["patched_a"], img_a, img_b, *patched.order_keys("a"), self.threshold,
                                c.steps, forward, seeds=seeds, similarity=similarity)
            self.dpr.update(scores.to(device), labels.to(device), index.to(device))
        return expl, values

    def update_identification(self, explainer: Explainer, embed_fn: EmbedFn, data: IdentificationData) -> None:
        """Explain each probe against its top-K candidates and score rank-1 deletion/insertion on every canvas."""
        c = self.config
        began = time.perf_counter()
        maps = combine_maps(probe_maps(explainer, data.probes, data.gallery, data.top, c.pair_batch, data.probe_index))
        if not self.deletion and self.flips is None and self.dpr is None:
            # Identification alone: its explanations give the seconds per pair.
            self.seconds.update(torch.tensor(time.perf_counter() - began, dtype=torch.float64))
            self.pairs.update(torch.tensor(float(data.top.numel()), dtype=torch.float64))
        seeds = tie_seeds(c.seed, data.probe_index)
        for fill, metric in self.identification.items():
            d, i = identification_correct(embed_fn, data.probes, data.probe_ids, maps, data.gallery_emb,
                                          data.gallery_ids, c.steps, fill, c.forward_batch(data.probes.device),
                                          seeds=seeds)
            metric.update(d, i, data.probe_index.to(d.device))

    def scalars(self, method: str = "") -> dict[str, float]:
        """``{name: value}`` under the names of the module docstring; groups without pairs are left out (with a
        warning naming ``method``)."""
        out: dict[str, float] = {}
        empty: dict[str, list[str]] = {}
        for fill, metric in self.deletion.items():
            values = metric.compute()
            with metric.sync_context():
                clean = {group: float(metric.curves()[f"{group}/deletion"][0]) for group in ("genuine", "impostor")}
            for group in ("genuine", "impostor"):
                keys = [f"{step}_{group}{self.config.suffix(fill)}" for step in ("deletion", "insertion")]
                if values[f"{group}/pairs"] == 0:
                    empty.setdefault(group, []).extend(keys)
                    continue
                for step, key in zip(("deletion", "insertion"), keys):
                    out[key] = values[f"{group}/{step}_auc"]
                if clean[group] == 0 and fill == self.config.fills[0]:
                    # Deletion starts from the clean pair and insertion ends at it: both AUCs are 0 whatever the map.
                    rank_zero_warn(f"{method or 'faithfulness'}: all {values[f'{group}/pairs']:g} {GROUPS[group]} are "
                                   f"misclassified clean at threshold {self.threshold:.4f}, so {', '.join(keys)} are 0 "
                                   "by construction and say nothing about the maps")
        if self.flips is not None:
            values = self.flips.compute()
            for group in ("match", "nonmatch"):
                keys = {f"flip_{kind}_{group}": values[f"{group}/{kind}"]
                        for kind in ("deletion", "insertion", "unflipped")}
                if values[f"{group}/pairs"] == 0:
                    empty.setdefault(group, []).extend(keys)
                else:
                    out.update(keys)
        if self.dpr is not None:
            values = self.dpr.compute()
            for rate, group in (("fmr", "impostor"), ("fnmr", "genuine")):
                keys = {f"dpr_{rate}_auc": values[f"{rate}_auc"], f"dpr_{rate}_patched": values[f"{rate}_patched"]}
                if np.isnan(values[f"{rate}_auc"]):
                    empty.setdefault(group, []).extend(keys)
                else:
                    out.update(keys)
        for fill, metric in self.identification.items():
            values = metric.compute()
            for kind in ("deletion", "insertion"):
                out[f"identification_{kind}{self.config.suffix(fill)}"] = values[f"{kind}_auc"]
            out["identification_rank1"] = values["rank1"]
        pairs = float(self.pairs.compute())
        out["seconds_per_pair"] = float(self.seconds.compute()) / max(pairs, 1.0)
        for group, keys in empty.items():
            rank_zero_warn(f"{method or 'faithfulness'}: no {GROUPS[group]} among the {pairs:g} evaluated pairs; "
                           f"{', '.join(keys)} not reported")
        return out

    def curves(self) -> dict[str, list[float]]:
        """Curves as lists: ``fractions``, ``{genuine,impostor}/{deletion,insertion}`` (extra canvases under
        ``<fill>/``), ``dpr/{fractions,fmr,fnmr}``, ``identification/{fractions,deletion,insertion}``."""
        out: dict[str, list[float]] = {}
        for fill, metric in self.deletion.items():
            prefix = "" if fill == self.config.fills[0] else f"{fill}/"
            with metric.sync_context():  # curves() is not a synced method of its own
                curves = metric.curves()
            out.update({f"{prefix}{k}": v.tolist() for k, v in curves.items()})
        if self.dpr is not None:
            with self.dpr.sync_context():
                out.update({f"dpr/{k}": v.tolist() for k, v in self.dpr.curves().items()})
        for fill, metric in self.identification.items():
            prefix = "" if fill == self.config.fills[0] else f"{fill}/"
            with metric.sync_context():
                out.update({f"{prefix}identification/{k}": v.tolist() for k, v in metric.curves().items()})
        return out

    def per_pair(self) -> dict[str, tuple[Tensor, Tensor]]:
        """Each averaged scalar as ``{name: (values float64 (N,), group bool (N,))}``, rows in sorted pair-index
        order (so two methods on the same pairs line up row by row: ``bootstrap.paired_difference``)."""
        out: dict[str, tuple[Tensor, Tensor]] = {}
        for fill, metric in self.deletion.items():
            with metric.sync_context():
                p = metric.per_pair()
            for group in ("genuine", "impostor"):
                for step in ("deletion", "insertion"):
                    out[f"{step}_{group}{self.config.suffix(fill)}"] = p[f"{group}/{step}_auc"]
        if self.flips is not None:
            with self.flips.sync_context():
                p = self.flips.per_pair()
            out.update({f"flip_{kind}_{group}": p[f"{group}/{kind}"] for group in ("match", "nonmatch")
                        for kind in ("deletion", "insertion")})
        if self.dpr is not None:
            with self.dpr.sync_context():
                out.update({f"dpr_{k}": v for k, v in self.dpr.per_pair().items()})
        for fill, metric in self.identification.items():
            with metric.sync_context():
                p = metric.per_pair()
            out.update({f"identification_{kind}{self.config.suffix(fill)}": p[f"{kind}_auc"]
                        for kind in ("deletion", "insertion")})
        return out


BatchHook = Callable[[Mapping[str, Tensor], dict[str, PairExplanation], dict[str, dict[str, Tensor]]], None]


def run_protocols(explainers: Mapping[str, Explainer], embed_fn: EmbedFn, batches: Iterable[Mapping[str, Tensor]],
                  threshold: float, config: ProtocolConfig = ProtocolConfig(), *,
                  device: torch.device | str = "cpu", identification: IdentificationData | None = None,
                  max_seconds: float | None = None, on_batch: BatchHook | None = None,
                  log: Callable[[str], None] | None = None,
                  similarity: Similarity = cosine) -> dict[str, MethodResults]:
    """Every protocol of ``config`` for every explainer, on the pairs of ``batches``; ``{name: MethodResults}``.

    ``explainers``: ``{row name: explainer}`` (e.g. from ``build_explainer``); ``embed_fn``: the verifier of
    every perturbed image ((B, 3, H, W) in [0, 1] -> (B, D), e.g. ``fast_embedding(model)``), decisions
    ``cos > threshold`` (``similarity``: another score of ``embed_fn``'s representations, ``verifier``).
    ``batches``: dicts with ``img_a``, ``img_b`` ``(B, 3, H, W)`` in [0, 1], ``label`` bool
    ``(B,)`` (True = genuine), ``index`` long ``(B,)`` (the pairs' data-set indices: seeds, and DDP
    deduplication) and, for ``dpr``, ``patched_a`` (image A with the Patch-LFW patches); moved to ``device``.
    Pairs are taken batch by batch, each explained by every method in turn. ``identification``: the probe /
    gallery data of the ``identification`` protocol. ``max_seconds``: stop after the first batch that ends
    past this budget (at least one batch). ``on_batch(batch, explanations, values)``: called after each batch
    with every method's explanation and per-pair values (``MethodResults.update``).
    """
    device = torch.device(device)
    results = {name: MethodResults(config, threshold, device) for name in explainers}
    start = time.perf_counter()
    pair_protocols = set(config.protocols) & set(DEFAULT_PROTOCOLS)
    explained = 0
    for n, batch in enumerate(batches if pair_protocols else (), 1):
        batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
        explanations, values = {}, {}
        for name, explainer in explainers.items():
            explanations[name], values[name] = results[name].update(explainer, embed_fn, batch, similarity)
        explained += len(batch["index"])
        if on_batch is not None:
            on_batch(batch, explanations, values)
        if log is not None:
            log(f"batch {n}: {explained} pairs, {time.perf_counter() - start:.1f} s")
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
    if "identification" in config.protocols:
        if identification is None:
            raise ValueError("the identification protocol needs IdentificationData (identification_data)")
        for name, explainer in explainers.items():
            results[name].update_identification(explainer, embed_fn, identification)
            if log is not None:
                log(f"{name}: identification, {len(identification.probes)} probes x top-"
                    f"{identification.top.shape[1]}, {time.perf_counter() - start:.1f} s")
    return results


def verifier(model: nn.Module, score: str = "cos") -> tuple[EmbedFn, Similarity]:
    """(representation of images, their score against a partner's) deciding every protocol: ``"cos"``: the
    embeddings of ``fast_embedding(model)`` and their cosine; ``"xcos"``: the grid features ``(B, G, 7, 7)`` of a
    BatchNorm-folded copy of an xCos model's backbone and the model's xCos score of (perturbed image, partner)."""
    if score == "cos":
        return fast_embedding(model), cosine
    XCosScore(model)  # raises ModelSpecError for a model without the xCos score
    backbone = inference_copy(model.backbone)  # the grid (model.grid without flip), BatchNorm folded

    def grid(x: Tensor) -> Tensor:
        with torch.no_grad():
            return backbone(x).float()

    def xcos(reps: Tensor, partner: Tensor) -> Tensor:
        b, k = reps.shape[:2]
        partners = partner[:, None].expand(b, k, *partner.shape[1:]).flatten(0, 1)
        with torch.no_grad():
            return model.maps_from_grids(reps.flatten(0, 1), partners)[2].float().view(b, k)

    return grid, xcos


def decision_threshold(scores: Tensor, labels: Tensor) -> tuple[float, float]:
    """(EER, threshold) of clean single-view scores ``(N,)`` with labels ``(N,)``: the EER threshold
    (``verification.equal_error_rate``) moved to the middle of the gap between the clean scores around it.

    The clean decisions stay the same, but recomputed clean scores (other batch sizes, float noise) no
    longer land on the other side of a threshold that ``roc`` placed 1e-9 below a score.
    """
    eer, threshold = equal_error_rate(scores, labels)
    below, above = scores.double()[~accepts(scores, threshold)], scores.double()[accepts(scores, threshold)]
    if below.numel() and above.numel():
        threshold = float((below.max() + above.min()) / 2)
    return eer, threshold


def clean_scores(model: nn.Module, img_a: Tensor, img_b: Tensor) -> dict[str, Tensor]:
    """Single-view clean scores ``(B,)``: ``cos`` of the embeddings and, for xCos models, ``xcos``."""
    with torch.no_grad():
        out = {"cos": torch.nn.functional.cosine_similarity(model(img_a).float(), model(img_b).float(), dim=1)}
        if getattr(model, "has_xcos", False):
            out["xcos"] = model.xcos_maps(img_a, img_b)[2].float()
    return out


def select_pairs(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` genuine + ``n`` impostor pair indices, drawn without replacement, sorted."""
    rng = np.random.default_rng(seed)
    chosen = []
    for name, group in (("genuine", np.flatnonzero(labels)), ("impostor", np.flatnonzero(~labels))):
        if n < 1 or n > group.size:
            raise VerificationSetError(f"--pairs {n}: the set has {group.size} {name} pairs; choose 1..{group.size}")
        chosen.append(rng.choice(group, size=n, replace=False))
    return np.sort(np.concatenate(chosen))


@dataclass
class PairSetResults:
    """What ``evaluate_pair_set`` measured: per method its ``scalars`` (``metrics``), ``curves`` and
    ``per_pair`` values, and ``info`` (thresholds and their source, clean EER and accuracy, the sorted pair
    indices and labels, a one-line summary)."""

    metrics: dict[str, dict[str, float]]
    curves: dict[str, dict[str, list[float]]]
    per_pair: dict[str, dict[str, tuple[Tensor, Tensor]]]
    info: dict = field(default_factory=dict)
    examples: list[Example] = field(default_factory=list)


@dataclass
class Example:
    """One explained pair kept for figures: data-set ``index``, ``genuine``, the faces ``(3, H, W)`` in [0, 1]
    and every method's explanation of it (a batch of one, on the CPU)."""

    index: int
    genuine: bool
    img_a: Tensor
    img_b: Tensor
    explanations: dict[str, PairExplanation]


def explanation_row(explanation: PairExplanation, row: int) -> PairExplanation:
    """Pair ``row`` of a batch explanation as a batch of one, every tensor on the CPU."""
    def pick(value):
        return value[row:row + 1].detach().cpu() if isinstance(value, Tensor) and value.ndim else value
    return replace(explanation, **{k: pick(v) for k, v in vars(explanation).items() if isinstance(v, Tensor)},
                   extras={k: pick(v) for k, v in explanation.extras.items()})


def evaluate_pair_set(model: nn.Module, pair_set: PairSet, methods: Sequence[str], config: ProtocolConfig, *,
                      pairs: int, threshold: float | None = None, explainer_options: Mapping | None = None,
                      device: torch.device | str = "cpu", log: Callable[[str], None] | None = None,
                      examples: int = 0) -> PairSetResults:
    """The protocols for ``methods`` on ``pairs`` genuine + ``pairs`` impostor pairs of ``pair_set``.

    ``model``: eval-mode embedding model on ``device``. ``methods``: explainer tokens ``name[:key=value...]``
    (``registry.parse_method``), each one row. Pairs: drawn without replacement with ``config.seed``
    (``select_pairs``); DPR uses their patched versions (27 patches of 16 px, ``config.seed``; donors of another
    identity from the identity folders when the set has them). Decisions: by ``config.score`` (``verifier``:
    the embedding cosine of ``fast_embedding(model)``, BatchNorm folded, the same function up to float
    rounding; or the xCos score), at ``threshold`` if given, else at the ``decision_threshold`` of that score
    (single view) on the selected clean pairs; methods of the xCos score get the xCos score's threshold
    found the same way, the others the cosine's.
    ``explainer_options``: options for every method (``build_explainer``'s shared ones: ``n_masks``, ``seed``,
    and e.g. ``batch_size``), under each token's own options. ``examples``: keep the first ``examples``
    genuine and the first ``examples`` impostor pairs with every method's explanation (``Example``).
    """
    device = torch.device(device)
    say = log or (lambda message: None)
    chosen = select_pairs(pair_set.labels, pairs, config.seed)
    identities = identities_from_folders(pair_set)
    patched = Subset(make_patched_set(pair_set, identities, seed=config.seed), chosen.tolist())
    loader = DataLoader(patched, batch_size=config.pair_batch, shuffle=False)
    say(f"{len(chosen)} pairs of {pair_set.name} on {device}; patch donors from "
        f"{'identity folders' if identities is not None else 'impostor pairs (no identities)'}")
    scores: dict[str, list[Tensor]] = {}
    labels = []
    for batch in loader:
        for kind, s in clean_scores(model, batch["img_a_clean"].to(device), batch["img_b"].to(device)).items():
            scores.setdefault(kind, []).append(s.cpu())
        labels.append(batch["label"].bool())
    label = torch.cat(labels)
    thresholds, eers = {}, {}
    for kind, s in scores.items():
        eers[kind], thresholds[kind] = decision_threshold(torch.cat(s), label)
    decide = config.score
    if decide not in thresholds:
        raise ModelSpecError(f"decisions by the {decide} score need an xCos model; {type(model).__name__} has no "
                             "xCos head")
    source = "EER threshold of the selected clean pairs"
    if threshold is not None:
        eer_threshold = thresholds[decide]
        thresholds[decide], source = float(threshold), f"given; the EER threshold of these pairs is {eer_threshold:.4f}"
    accuracy = float((accepts(torch.cat(scores[decide]), thresholds[decide]) == label).double().mean())
    fills = config.fills
    summary = (f"{pairs} genuine + {pairs} impostor pairs of {pair_set.name} (seed {config.seed}); decisions by the "
               f"{'xCos score' if decide == 'xcos' else 'embedding cosine'}, threshold {thresholds[decide]:.4f} "
               f"({source}); clean EER {eers[decide]:.4f}, accuracy {accuracy:.4f}; "
               f"steps {config.steps}, fill {fills[0]}{''.join(f' (and {f})' for f in fills[1:])}, "
               f"sides {config.sides}")
    if "xcos" in thresholds and decide == "cos":
        summary += f"; xCos threshold {thresholds['xcos']:.4f} (EER {eers['xcos']:.4f}) for the xCos maps"
    say(summary)
    embed, similarity = verifier(model, decide)
    ident = None
    if "identification" in config.protocols:
        ident = identification_data(pair_set, chosen, fast_embedding(model), config.top_k, device)
        say(f"identification: {len(ident.probes)} probes (image A of the genuine pairs), gallery of "
            f"{len(ident.gallery)} other images of the pairs, top-{config.top_k}")
    explainers: dict[str, Explainer] = {}
    try:
        for token in methods:
            name, options = parse_method(token)
            merged = {"sides": config.sides, **(explainer_options or {}), **options}
            merged.setdefault("threshold", thresholds["xcos" if explains_xcos(name, options) else "cos"])
            explainers[token] = build_explainer(name, model, **merged)
        batches = ({"img_a": b["img_a_clean"], "patched_a": b["img_a"], "img_b": b["img_b"], "label": b["label"],
                    "index": b["index"]} for b in loader)
        kept: list[Example] = []

        def keep(batch: Mapping[str, Tensor], explanations: dict[str, PairExplanation], values: dict) -> None:
            for row, genuine in enumerate(batch["label"].bool().tolist()):
                if sum(e.genuine == genuine for e in kept) < examples:
                    kept.append(Example(int(batch["index"][row]), genuine, batch["img_a"][row].cpu(),
                                        batch["img_b"][row].cpu(),
                                        {name: explanation_row(e, row) for name, e in explanations.items()}))

        results = run_protocols(explainers, embed, batches, thresholds[decide], config, device=device,
                                identification=ident, log=log, on_batch=keep if examples else None,
                                similarity=similarity)
    finally:
        for explainer in explainers.values():
            explainer.release()
    info = {"threshold": thresholds[decide], "decision_score": decide, "threshold_source": source,
            "clean_eer": eers[decide], "clean_accuracy": accuracy, "pair_indices": chosen.tolist(),
            "pair_labels": pair_set.labels[chosen].astype(bool).tolist(), "summary": summary}
    if "xcos" in thresholds:
        info["threshold_xcos"] = thresholds["xcos"]
    return PairSetResults({name: r.scalars(name) for name, r in results.items()},
                          {name: r.curves() for name, r in results.items()},
                          {name: r.per_pair() for name, r in results.items()}, info, kept)
