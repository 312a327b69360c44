"""``explain.py benchmark``: every faithfulness protocol for a list of explainers, one model, one pair set.

    explain.py benchmark --model mobilefacenet:mfn.pt --data lfw:/data/lfw --methods random,corrrise \\
        --pairs 50 --out runs/bench [--steps 20] [--fill zero|mean|blur] [--n-masks 500] [--seed 0] [--json]

- Methods: registry names, each optionally with constructor options, ``name:key=value:key=value``
  (e.g. ``corrrise:correlation=spearman``, ``occlusion:stride=16:patch_sizes=16/32``, ``xcos:map=W``;
  ``/`` separates the items of a tuple); the token is the row's name, so one method can take several rows.

- Pairs: ``--pairs`` genuine and as many impostor pairs drawn without replacement (``--seed``), in index order.
- Threshold: ``--threshold`` if given, else the EER threshold (FAR = FRR, interpolated on the ROC) of the
  model's plain cosine (no flip augmentation, as the explainers score pairs) on the selected clean pairs,
  centred in the gap between the clean scores around it (same clean decisions, robust to float noise).
- Perturbed forwards of the protocols run through ``fast_embedding(model)`` (BatchNorm folded, the same
  function up to float rounding).
- Per method (``xcos_lightning.metrics``): Deletion/Insertion AUC % on genuine pairs (similarity maps,
  accuracy = acceptance) and impostor pairs (dissimilarity maps, accuracy = rejection); S-RISE flip
  fractions (grid of ``--steps``, refined to the pixel), split by clean decision; DPR FMR/FNMR AUC % on the
  patched versions of the same pairs (27 patches of 16 px, ``--seed``; donor identities from the image
  folders when the set has them); seconds per pair = explainer wall time on the clean pairs.
- ``--protocols identification`` (opt-in; needs identity folders): image A of each chosen genuine pair is a
  probe, the other images of the chosen pairs the gallery; each probe is explained against its ``--top-k``
  gallery candidates (similarity maps averaged), and Deletion/Insertion AUC % is measured on rank-1 accuracy.
- Paired comparison: for each ``--baseline`` method (default ``random``) among the methods, each method minus
  the baseline, metric by metric, as the mean per-pair difference with a 95 % paired-bootstrap interval
  (``--bootstrap`` resamples; ``xcos_lightning.metrics.bootstrap``).
- ``--out``: ``table.md`` (and the comparison), ``table.csv``, ``per_pair.csv``, ``results.json`` (settings,
  metrics, comparison, curves) and PNG curves.
  The markdown table goes to stdout; ``--json`` adds one line ``{method: {metric: value}}`` at the end.
  Progress goes to stderr.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from xcos_lightning.cli.benchmark_report import (COLUMNS, PLOTS, compare_with_baseline, comparison_table, json_safe,
                                                 markdown_table, write_outputs)
from xcos_lightning.datamodules.image_io import to_tensor
from xcos_lightning.datamodules.pair_set import PairSet
from xcos_lightning.datamodules.pairs_file import load_pair_set
from xcos_lightning.errors import ModelSpecError, VerificationSetError, XCosError
from xcos_lightning.explain.base import Explainer
from xcos_lightning.explain.inference import fast_embedding
from xcos_lightning.explain.registry import create_explainer, list_explainers
from xcos_lightning.metrics.faithfulness import (FILLS, DeletionInsertionMetric, accepts, pair_perturbation_scores,
                                                 tie_seeds)
from xcos_lightning.metrics.flip_fraction import FlipFractionMetric, FlipFractions, flip_fractions
from xcos_lightning.metrics.identification import (IdentificationMetric, combine_maps, gallery_from_pairs,
                                                   identification_correct, probe_maps, top_k_gallery)
from xcos_lightning.metrics.patch_dpr import DPRMetric, dpr_scores, identities_from_folders, make_patched_set
from xcos_lightning.metrics.verification import equal_error_rate
from xcos_lightning.models.spec import load_model

# Deletion/Insertion AUCs, S-RISE flip fractions, DPR on patched pairs; identification (rank-1 Deletion/Insertion
# of probes against a gallery) needs identity folders, so it runs only when asked for.
DEFAULT_PROTOCOLS = ("deletion", "flips", "dpr")
PROTOCOLS = DEFAULT_PROTOCOLS + ("identification",)
MASK_METHODS = ("corrrise", "rise", "srise")  # take --n-masks
SEEDED_METHODS = MASK_METHODS + ("random",)  # take --seed


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", required=True, help="model SPEC: run.ckpt or <format>:<path>")
    parser.add_argument("--data", required=True, help="pair set SPEC: set.bin | lfw:<folder> | pairs:<root>:<file>")
    parser.add_argument("--methods", required=True, help="comma-separated explainers, e.g. random,corrrise")
    parser.add_argument("--pairs", type=int, default=50, help="genuine pairs, and as many impostor pairs (default 50)")
    parser.add_argument("--out", type=Path, default=None, help="folder for table.md/.csv, results.json and plots")
    parser.add_argument("--protocols", default=",".join(DEFAULT_PROTOCOLS),
                        help=f"comma-separated subset of {','.join(PROTOCOLS)} "
                             f"(default {','.join(DEFAULT_PROTOCOLS)}); the others are NaN")
    parser.add_argument("--top-k", type=int, default=3,
                        help="identification: gallery candidates each probe is explained against (default 3)")
    parser.add_argument("--steps", type=int, default=20, help="fraction steps n, p = k/n (default 20 = 5%%)")
    parser.add_argument("--fill", choices=FILLS, default="zero", help="deletion/insertion canvas (default zero)")
    parser.add_argument("--extra-fills", default="",
                        help=f"more canvases ({','.join(FILLS)}) scored on the same maps, as extra columns "
                        "'<metric>_<fill>' (default none)")
    parser.add_argument("--sides", choices=("a", "both"), default="a",
                        help="deletion/insertion on image A only or on A and B in turn (default a)")
    parser.add_argument("--n-masks", type=int, default=None, help=f"masks for {', '.join(MASK_METHODS)} "
                        "(default: the method's own)")
    parser.add_argument("--seed", type=int, default=0, help="pair selection, patches and explainer seeds")
    parser.add_argument("--threshold", type=float, default=None,
                        help="fixed cosine threshold (default: EER threshold on the selected clean pairs)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per forward pass (default: 8 on CPU, 64 on GPU)")
    parser.add_argument("--pair-batch", type=int, default=8, help="pairs explained per call (default 8)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:i] (default auto)")
    parser.add_argument("--json", action="store_true", help="print {method: {metric: value}} as the last line")
    parser.add_argument("--baseline", default="random",
                        help="comma-separated methods every other is compared with, pair by pair, those among "
                             "--methods (default random)")
    parser.add_argument("--bootstrap", type=int, default=1000,
                        help="bootstrap resamples for the 95%% intervals of those differences (default 1000; 0: none)")
    return parser


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``benchmark`` on an ``argparse`` subparsers object; ``func`` is set to ``run``."""
    parser = subparsers.add_parser("benchmark", help="faithfulness protocols for several explainers",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def log(message: str) -> None:
    print(f"[benchmark] {message}", file=sys.stderr, flush=True)


def select_pairs(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` genuine + ``n`` impostor pair indices, drawn without replacement, sorted."""
    rng = np.random.default_rng(seed)
    chosen = []
    for name, group in (("genuine", np.flatnonzero(labels)), ("impostor", np.flatnonzero(~labels))):
        if n < 1 or n > group.size:
            raise VerificationSetError(f"--pairs {n}: the set has {group.size} {name} pairs; choose 1..{group.size}")
        chosen.append(rng.choice(group, size=n, replace=False))
    return np.sort(np.concatenate(chosen))


def cam_layer(model: nn.Module, device: torch.device) -> nn.Module:
    """Last module to output a spatial map larger than 1 x 1 on a 112 x 112 face (Grad-CAM's target)."""
    found: list[nn.Module] = []

    def hook(module: nn.Module, inputs: object, output: object) -> None:
        if isinstance(output, Tensor) and output.ndim == 4 and output.shape[-1] > 1 and output.shape[-2] > 1:
            found.append(module)

    handles = [m.register_forward_hook(hook) for m in model.modules() if m is not model]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, 112, 112, device=device))
    finally:
        for h in handles:
            h.remove()
    if not found:
        raise ModelSpecError("Grad-CAM needs a convolutional layer with a spatial output; this model has none")
    return found[-1]


def parse_method(token: str) -> tuple[str, dict]:
    """``"name:key=value:..."`` -> (name, options); values become int, float or bool where they read as one,
    and tuples where they hold ``/``."""
    name, *options = token.split(":")
    kwargs = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise ValueError(f"method {token!r}: option {option!r} is not key=value")
        items = tuple(_literal(v) for v in value.split("/"))
        kwargs[key] = items if "/" in value else items[0]
    return name, kwargs


def _literal(text: str):
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def build_explainer(token: str, model: nn.Module, threshold: float, args: argparse.Namespace,
                    device: torch.device) -> Explainer:
    name, options = parse_method(token)
    # The protocols perturb image A only unless --sides both: B's maps would be computed for nothing.
    kwargs: dict = {"threshold": threshold, "batch_size": args.batch_size, "sides": args.sides}
    if name in MASK_METHODS and args.n_masks is not None:
        kwargs["n_masks"] = args.n_masks
    if name in SEEDED_METHODS:
        kwargs["seed"] = args.seed
    if name in ("gradcam", "gradcampp"):
        kwargs["target_layer"] = cam_layer(model, device)
    kwargs.update(options)
    if name == "xcos":
        if not getattr(model, "has_xcos", False):
            raise ModelSpecError(f"method 'xcos' needs a model trained with the xCos head; {args.model!r} has none")
        kwargs["model"] = model
    else:
        kwargs["embed_fn"] = model
    try:
        return create_explainer(name, **kwargs)
    except (TypeError, ValueError) as err:
        raise ModelSpecError(f"method {token!r}: {err}") from err


def clean_scores(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[Tensor, Tensor]:
    """Plain cosines ``(N,)`` and labels ``(N,)`` of the loader's clean pairs, on the CPU."""
    scores, labels = [], []
    with torch.no_grad():
        for batch in loader:
            emb_a, emb_b = model(batch["img_a_clean"].to(device)), model(batch["img_b"].to(device))
            scores.append(torch.nn.functional.cosine_similarity(emb_a.float(), emb_b.float(), dim=1).cpu())
            labels.append(batch["label"])
    return torch.cat(scores), torch.cat(labels)


def centred_eer_threshold(scores: Tensor, labels: Tensor) -> tuple[float, float]:
    """(EER, threshold): the EER threshold moved to the middle of the gap between the clean scores around it.

    The clean decisions stay the same, but recomputed clean scores (other batch sizes, float noise) no
    longer land on the other side of a threshold that ``roc`` placed 1e-9 below a score.
    """
    eer, threshold = equal_error_rate(scores, labels)
    below, above = scores.double()[~accepts(scores, threshold)], scores.double()[accepts(scores, threshold)]
    if below.numel() and above.numel():
        threshold = float((below.max() + above.min()) / 2)
    return eer, threshold


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


def identification_data(pair_set: PairSet, pairs: np.ndarray, embed: Callable[[Tensor], Tensor], top_k: int,
                        device: torch.device) -> IdentificationData:
    """The probe / gallery split of ``pairs`` (``metrics.identification.gallery_from_pairs``), loaded and embedded."""
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
        gallery_emb, probe_emb = embed(gallery).float(), embed(probes).float()
    if not 1 <= top_k <= len(gallery):
        raise VerificationSetError(f"--top-k {top_k}: the gallery of {pair_set.name} has {len(gallery)} images")
    return IdentificationData(probes, torch.as_tensor(split.probe_ids), torch.as_tensor(split.probes), gallery,
                              gallery_emb, torch.as_tensor(split.gallery_ids), top_k_gallery(probe_emb, gallery_emb,
                                                                                            top_k))


def evaluate(name: str, explainer: Explainer, embed: Callable[[Tensor], Tensor], loader: DataLoader,
             threshold: float, args: argparse.Namespace, device: torch.device,
             ident: IdentificationData | None = None,
             ) -> tuple[dict[str, float], dict[str, list[float]], dict[str, tuple[Tensor, Tensor]]]:
    """Run the protocols for one explainer, scoring perturbed images with ``embed`` (identification on
    ``ident``); returns (metrics, curves, per-pair ``{metric: (values, group)}`` as the metrics' ``per_pair``)."""
    batch_size = explainer.batch_size_for(device)  # --batch-size, else the device default
    protocols = set(args.protocols)
    fills = [args.fill, *args.extra_fills]
    faith = {fill: DeletionInsertionMetric(threshold, args.steps) for fill in fills}
    flips, dpr = FlipFractionMetric(), DPRMetric(threshold, args.steps)
    seconds, pairs, start = 0.0, 0, time.perf_counter()
    # Identification alone needs no pass over the pairs; its own explanations then give the seconds per pair.
    for n, batch in enumerate(loader if protocols & set(DEFAULT_PROTOCOLS) else (), 1):
        clean_a, patched_a, img_b = (batch[k].to(device) for k in ("img_a_clean", "img_a", "img_b"))
        labels, index = batch["label"], batch["index"]
        seeds = tie_seeds(args.seed, index)
        expl = explainer(clean_a, img_b, index)
        seconds, pairs = seconds + expl.seconds, pairs + len(labels)
        for fill in fills if "deletion" in protocols else ():
            deletion, insertion = pair_perturbation_scores(embed, clean_a, img_b, expl, labels, args.steps, fill,
                                                           args.sides, batch_size, seeds=seeds)
            faith[fill].update(deletion.cpu(), insertion.cpu(), labels, index)
        if "flips" in protocols:
            flip = flip_fractions(embed, clean_a, img_b, *expl.order_keys("a"), threshold, args.steps, True,
                                  batch_size, seeds=seeds)
            flips.update(FlipFractions(*(t.cpu() for t in flip)), index)
        if "dpr" in protocols:
            patched = explainer(patched_a, img_b, index)
            dpr.update(dpr_scores(embed, patched_a, clean_a, img_b, *patched.order_keys("a"), threshold,
                                  args.steps, batch_size, seeds=seeds).cpu(), labels, index)
        log(f"{name}: batch {n}/{len(loader)}, {pairs} pairs, {time.perf_counter() - start:.1f} s")
    identification = {fill: IdentificationMetric(args.steps) for fill in fills}
    if "identification" in protocols:
        began = time.perf_counter()
        maps = combine_maps(probe_maps(explainer, ident.probes, ident.gallery, ident.top, args.pair_batch,
                                       ident.probe_index))
        if not pairs:
            seconds, pairs = time.perf_counter() - began, ident.top.numel()
        for fill in fills:
            d, i = identification_correct(embed, ident.probes, ident.probe_ids, maps, ident.gallery_emb,
                                          ident.gallery_ids, args.steps, fill, batch_size,
                                          seeds=tie_seeds(args.seed, ident.probe_index))
            identification[fill].update(d.cpu(), i.cpu(), ident.probe_index)
        log(f"{name}: identification, {len(ident.probes)} probes x top-{ident.top.shape[1]}, "
            f"{time.perf_counter() - start:.1f} s")
    nan = float("nan")
    metrics = {key: nan for _, key, _ in COLUMNS} | {k: nan for k in ("flip_unflipped_match", "flip_unflipped_nonmatch",
                                                                   "dpr_fmr_patched", "dpr_fnmr_patched",
                                                                   "identification_rank1")}
    metrics["seconds_per_pair"] = seconds / max(pairs, 1)
    curves: dict[str, list[float]] = {}
    per_pair: dict[str, tuple[Tensor, Tensor]] = {}
    for fill in fills if "deletion" in protocols else ():
        f, suffix = faith[fill].compute(), "" if fill == args.fill else f"_{fill}"
        p = faith[fill].per_pair()
        for kind in ("genuine", "impostor"):
            for step in ("deletion", "insertion"):
                metrics[f"{step}_{kind}{suffix}"] = f[f"{kind}/{step}_auc"]
                per_pair[f"{step}_{kind}{suffix}"] = p[f"{kind}/{step}_auc"]
        prefix = "" if fill == args.fill else f"{fill}/"
        curves.update({f"{prefix}{k}": v.tolist() for k, v in faith[fill].curves().items()})
    if "flips" in protocols:
        fl = flips.compute()
        metrics.update({f"flip_{kind}_{group}": fl[f"{group}/{kind}"] for group in ("match", "nonmatch")
                        for kind in ("deletion", "insertion", "unflipped")})
        p = flips.per_pair()
        per_pair.update({f"flip_{kind}_{group}": p[f"{group}/{kind}"] for group in ("match", "nonmatch")
                         for kind in ("deletion", "insertion")})
    if "dpr" in protocols:
        d = dpr.compute()
        metrics.update({"dpr_fmr_auc": d["fmr_auc"], "dpr_fnmr_auc": d["fnmr_auc"],
                        "dpr_fmr_patched": d["fmr_patched"], "dpr_fnmr_patched": d["fnmr_patched"]})
        curves.update({f"dpr/{k}": v.tolist() for k, v in dpr.curves().items()})
        per_pair.update({f"dpr_{k}": v for k, v in dpr.per_pair().items()})
    for fill in fills if "identification" in protocols else ():
        f, p, suffix = identification[fill].compute(), identification[fill].per_pair(), \
            "" if fill == args.fill else f"_{fill}"
        for kind in ("deletion", "insertion"):
            metrics[f"identification_{kind}{suffix}"] = f[f"{kind}_auc"]
            per_pair[f"identification_{kind}{suffix}"] = p[f"{kind}_auc"]
        metrics["identification_rank1"] = f["rank1"]
        prefix = "" if fill == args.fill else f"{fill}/"
        curves.update({f"{prefix}identification/{k}": v.tolist() for k, v in identification[fill].curves().items()})
    return metrics, curves, per_pair


def run(args: argparse.Namespace) -> int:
    """Run the benchmark described by parsed ``args``; 0 on success, 1 on bad input (message on stderr)."""
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if isinstance(args.extra_fills, str):
        args.extra_fills = [f.strip() for f in args.extra_fills.split(",") if f.strip()]
    if set(args.extra_fills) - set(FILLS) or args.fill in args.extra_fills:
        print(f"explain.py benchmark: error: --extra-fills {','.join(args.extra_fills)!r}: choose from "
              f"{','.join(FILLS)}, other than --fill", file=sys.stderr)
        return 1
    if isinstance(args.protocols, str):
        args.protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    if not args.protocols or set(args.protocols) - set(PROTOCOLS):
        print(f"explain.py benchmark: error: --protocols {','.join(args.protocols)!r}: choose from "
              f"{','.join(PROTOCOLS)}", file=sys.stderr)
        return 1
    try:
        unknown = sorted({parse_method(m)[0] for m in methods} - set(list_explainers()))
    except ValueError as exc:
        print(f"explain.py benchmark: error: {exc}", file=sys.stderr)
        return 1
    if not methods or unknown:
        print(f"explain.py benchmark: error: unknown or missing methods {unknown or methods}; "
              f"choose from {list_explainers()}", file=sys.stderr)
        return 1
    try:
        return _run(args, methods)
    except XCosError as exc:
        print(f"explain.py benchmark: error: {exc}", file=sys.stderr)
        return 1


def faithfulness(model: nn.Module, pair_set: PairSet, methods: list[str], args: argparse.Namespace,
                 device: torch.device) -> tuple[dict[str, dict[str, float]], dict[str, dict], dict[str, dict], dict]:
    """Every protocol for every method on ``args.pairs`` genuine + impostor pairs of ``pair_set``.

    ``model``: an eval-mode embedding model on ``device``. ``args`` carries this command's options (``pairs``,
    ``seed``, ``threshold``, ``steps``, ``fill``, ``sides``, ``n_masks``, ``batch_size``, ``pair_batch``,
    ``model``). Returns ``(metrics {method: {metric: value}}, curves {method: {name: list}}, per_pair {method:
    {metric: (values, group)}}, info)``; per-pair rows follow the sorted pair indices; ``info`` = threshold,
    its source, clean EER and accuracy, the sorted pair indices and their labels, and a one-line summary.
    Progress goes to stderr.
    """
    chosen = select_pairs(pair_set.labels, args.pairs, args.seed)
    identities = identities_from_folders(pair_set)
    patched = Subset(make_patched_set(pair_set, identities, seed=args.seed), chosen.tolist())
    loader = DataLoader(patched, batch_size=args.pair_batch, shuffle=False)
    log(f"{len(chosen)} pairs of {pair_set.name} on {device}; patch donors from "
        f"{'identity folders' if identities is not None else 'impostor pairs (no identities)'}")
    scores, labels = clean_scores(model, loader, device)
    eer, threshold = centred_eer_threshold(scores, labels)
    source = "EER threshold of the selected clean pairs"
    if args.threshold is not None:
        threshold, source = args.threshold, f"given; the EER threshold of these pairs is {threshold:.4f}"
    accuracy = float((accepts(scores, threshold) == labels).double().mean())
    summary = (f"{args.pairs} genuine + {args.pairs} impostor pairs of {pair_set.name} (seed {args.seed}); "
               f"threshold {threshold:.4f} ({source}); clean EER {eer:.4f}, accuracy {accuracy:.4f}; "
               f"steps {args.steps}, fill {args.fill}{''.join(f' (and {f})' for f in args.extra_fills)}, "
               f"sides {args.sides}")
    log(summary)
    results, curves, per_pair = {}, {}, {}
    embed = fast_embedding(model)
    ident = None
    if "identification" in args.protocols:
        ident = identification_data(pair_set, chosen, embed, args.top_k, device)
        log(f"identification: {len(ident.probes)} probes (image A of the genuine pairs), gallery of "
            f"{len(ident.gallery)} other images of the pairs, top-{args.top_k}")
    for name in methods:
        start = time.perf_counter()
        with build_explainer(name, model, threshold, args, device) as explainer:
            results[name], curves[name], per_pair[name] = evaluate(name, explainer, embed, loader, threshold, args,
                                                                   device, ident)
        log(f"{name}: done in {time.perf_counter() - start:.1f} s")
    info = {"threshold": threshold, "threshold_source": source, "clean_eer": eer, "clean_accuracy": accuracy,
            "pair_indices": chosen.tolist(), "pair_labels": pair_set.labels[chosen].astype(bool).tolist(),
            "summary": summary}
    return results, curves, per_pair, info


def _run(args: argparse.Namespace, methods: list[str]) -> int:
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    model = load_model(args.model).to(device).eval()
    results, curves, per_pair, info = faithfulness(model, load_pair_set(args.data), methods, args, device)
    settings = {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}, **info}
    baselines = [b.strip() for b in args.baseline.split(",") if b.strip() in per_pair] if args.bootstrap > 0 else []
    comparison = {b: compare_with_baseline(per_pair, b, args.bootstrap, args.seed) for b in baselines
                  if len(per_pair) > 1}
    if args.out is not None:
        write_outputs(args.out, results, curves, settings, per_pair, comparison)
        log(f"wrote {args.out}/table.md, table.csv, per_pair.csv, results.json and {len(PLOTS)} plots")
    print(info["summary"] + "\n\n" + markdown_table(results))
    for baseline, rows in comparison.items():
        print("\n" + comparison_table(rows, baseline))
    if args.json:
        print(json.dumps(json_safe(results)))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m xcos_lightning.cli.benchmark --model ... --data ... --methods ...`` without the dispatcher."""
    parser = argparse.ArgumentParser(prog="explain.py benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    return run(add_arguments(parser).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
