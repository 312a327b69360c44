"""Export face models (safetensors, TorchScript, ONNX) and measure the exported copy against the source.

- ``safetensors``: the weights plus the architecture as JSON metadata (``xcos_lightning.architecture``):
  ``{"kind": "xcos", "backbone": {class_path, init_args}, "attention": ...}`` for an ``XCosModel`` or
  ``{"kind": "pretrained", "format": "mobilefacenet"}`` for a weights-only pretrained layout. Loading
  (``safetensors:<path>`` SPEC, :func:`load_safetensors`) runs no pickle and rebuilds only classes of
  ``xcos_lightning.models``.
- ``torchscript``: ``torch.jit.trace``; xCos models keep ``forward(images) -> embedding`` and
  ``xcos_maps(img_a, img_b) -> (S, W, xcos)``. torch 2.14 deprecates ``torch.jit`` (FutureWarning on each
  call, silenced here): prefer ONNX for new deployments; load with ``torch.jit.load(path)``.
- ``onnx``: ``torch.onnx.export(dynamo=True)`` (needs ``onnxscript``; parity runs ``onnxruntime``), one
  self-contained file with a dynamic batch axis. Plain models: input ``images`` ``(B, 3, 112, 112)``, output
  ``embedding`` ``(B, D)``. xCos models: inputs ``img_a``, ``img_b``, outputs ``emb_a``, ``emb_b``
  ``(B, D)``, ``S``, ``W`` ``(B, 7, 7)``, ``xcos`` ``(B,)``.

Inputs everywhere are RGB float32 in ``[0, 1]``; each model normalises its own input, so the exported files
take the same images as the source. Export runs on the CPU.
"""
from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from xcos_lightning.constants import FACE_SIZE
from xcos_lightning.errors import ModelSpecError, UnsafeFileError, XCosError
from xcos_lightning.models.backbone import grid_embedding
from xcos_lightning.io.checkpoint import build_part, part_config
from xcos_lightning.io.layouts import build_pretrained, list_weight_formats
from xcos_lightning.models.xcos_model import XCosModel

FORMATS = ("safetensors", "torchscript", "onnx")
METADATA_KEY = "xcos_lightning.architecture"
EXAMPLE_BATCH, PARITY_BATCH = 2, 3  # parity on another batch size than the export example: no baked batch


def architecture(model: nn.Module) -> dict:
    """JSON-able description from which :func:`build_architecture` rebuilds ``model``'s (untrained) layout.

    Raises ``ModelSpecError`` for models outside this package (``module:function`` models): those can be
    exported as TorchScript or ONNX, which store the computation itself.
    """
    if isinstance(model, XCosModel):
        backbone = part_config(model.backbone)
        # The exported weights replace any pretrained trunk file, and a recorded path is machine-specific.
        kwargs = {k: v for k, v in backbone["init_args"].get("trunk_kwargs", {}).items() if k != "pretrained"}
        backbone["init_args"] = {**backbone["init_args"], "trunk_kwargs": kwargs}
        return {"kind": "xcos", "backbone": backbone, "attention": part_config(model.attention)}
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for fmt in list_weight_formats():
        with torch.device("meta"):  # layout only: no memory, no initialisation cost
            ref = build_pretrained(fmt)
        if type(ref) is type(model) and {k: tuple(v.shape) for k, v in ref.state_dict().items()} == shapes:
            return {"kind": "pretrained", "format": fmt}
    raise ModelSpecError(f"safetensors export rebuilds only this package's models (xCos checkpoints and the "
                         f"pretrained layouts {list_weight_formats()}); {type(model).__name__} is neither: "
                         "use --format torchscript or onnx")


def build_architecture(arch: dict, where: str) -> nn.Module:
    """Untrained model of an :func:`architecture` description (classes of ``xcos_lightning.models`` only)."""
    kind = arch.get("kind") if isinstance(arch, dict) else None
    if kind == "pretrained":
        return build_pretrained(str(arch.get("format")))
    if kind == "xcos":
        backbone = build_part(arch.get("backbone"))
        if not hasattr(backbone, "grid_channels"):
            raise UnsafeFileError(f"{where}: the recorded backbone {type(backbone).__name__} is not a grid backbone")
        return XCosModel(backbone, build_part(arch.get("attention")))
    raise ModelSpecError(f"{where}: unknown architecture kind {kind!r} in the {METADATA_KEY} metadata")


def save_safetensors(model: nn.Module, path: str | Path) -> None:
    """Write ``model``'s ``state_dict`` and its :func:`architecture` to a safetensors file."""
    from safetensors.torch import save_file

    arch = architecture(model)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={METADATA_KEY: json.dumps(arch), "format": "pt"})


def load_safetensors(path: str | Path) -> nn.Module:
    """Eval-mode model from a file written by :func:`save_safetensors`; strict key and shape match.

    Raises ``ModelSpecError`` for a missing or unreadable file, missing metadata or mismatched weights, and
    ``UnsafeFileError`` when the metadata names classes outside ``xcos_lightning.models``.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelSpecError(f"safetensors file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelSpecError(f"{path} is not a readable safetensors file ({exc})") from exc
    if METADATA_KEY not in metadata:
        raise ModelSpecError(f"{path} has no {METADATA_KEY!r} metadata; export it with "
                             "'explain.py export SPEC --format safetensors'")
    try:
        arch = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise ModelSpecError(f"{path}: the {METADATA_KEY} metadata is not JSON ({exc})") from exc
    model = build_architecture(arch, str(path))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelSpecError(f"{path}: weights do not match the recorded architecture: {exc}") from exc
    return model.eval()


class _OnnxPair(nn.Module):
    """xCos model as one pair graph: ``(img_a, img_b)`` -> ``(emb_a, emb_b, S, W, xcos)``.

    Each side's grid is computed once, separately (no concatenation), so the exported batch axis stays
    dynamic and the embeddings come from the same grids as S and W.
    """

    def __init__(self, model: XCosModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, img_a: Tensor, img_b: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        grid_a, grid_b = self.model.grid(img_a), self.model.grid(img_b)
        s, w, xcos = self.model.maps_from_grids(grid_a, grid_b)
        return grid_embedding(grid_a), grid_embedding(grid_b), s, w, xcos


def parity_inputs(batch: int = PARITY_BATCH, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Deterministic image pairs ``(batch, 3, 112, 112)`` in ``[0, 1]``: seeded noise at 14 x 14, upsampled
    bilinearly (smooth, face-sized structures rather than pixel noise)."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(2 * batch, 3, FACE_SIZE // 8, FACE_SIZE // 8, generator=gen)
    images = torch.nn.functional.interpolate(low, size=(FACE_SIZE, FACE_SIZE), mode="bilinear", align_corners=False)
    return images[:batch].contiguous(), images[batch:].contiguous()


def reference_outputs(model: nn.Module | torch.jit.ScriptModule, img_a: Tensor, img_b: Tensor,
                      xcos: bool | None = None) -> dict[str, Tensor]:
    """``{"embedding": (2B, D)}`` (A's then B's) and, for xCos models, ``"xcos"`` ``(B,)``, ``"S"``, ``"W"``
    ``(B, 7, 7)``. ``xcos`` defaults to ``model.has_xcos`` (a TorchScript copy has no such property)."""
    xcos = getattr(model, "has_xcos", False) if xcos is None else xcos
    with torch.no_grad():
        out = {"embedding": torch.cat([model(img_a), model(img_b)]).float()}
        if xcos:
            s, w, score = model.xcos_maps(img_a, img_b)
            out.update(xcos=score.float(), S=s.float(), W=w.float())
    return out


def max_abs_diff(ref: dict[str, Tensor], got: dict[str, Tensor]) -> dict[str, float]:
    """Per output name, the largest absolute difference (``inf`` on a shape mismatch)."""
    return {k: float((ref[k] - got[k].float()).abs().max()) if ref[k].shape == got[k].shape else float("inf")
            for k in ref}


def export_torchscript(model: nn.Module, path: str | Path) -> Callable[[Tensor, Tensor], dict[str, Tensor]]:
    """Trace ``model`` to ``path``; returns a function giving the reloaded file's outputs (as
    :func:`reference_outputs`) on a pair batch."""
    img_a, img_b = parity_inputs(EXAMPLE_BATCH, seed=1)
    # torch.jit warns on every call that it is deprecated upstream; the module docstring says so once.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        if getattr(model, "has_xcos", False):
            traced = torch.jit.trace_module(model, {"forward": (img_a,), "xcos_maps": (img_a, img_b)})
        else:
            traced = torch.jit.trace(model, (img_a,))
        traced.save(str(path))
        loaded = torch.jit.load(str(path), map_location="cpu").eval()
    xcos = getattr(model, "has_xcos", False)
    return lambda a, b: reference_outputs(loaded, a, b, xcos)


def export_onnx(model: nn.Module, path: str | Path) -> Callable[[Tensor, Tensor], dict[str, Tensor]]:
    """Export ``model`` to a self-contained ONNX file; returns a function giving onnxruntime's outputs of
    that file (as :func:`reference_outputs`) on a pair batch. Needs ``onnxscript`` and ``onnxruntime``."""
    try:
        import onnxruntime
        import onnxscript  # noqa: F401  (torch.onnx's dynamo exporter translates through it)
    except ImportError as exc:
        raise XCosError(f"ONNX export needs the packages onnxscript and onnxruntime ({exc}); install them with "
                        "pip install 'xcos-lightning[onnx]'") from exc
    xcos = getattr(model, "has_xcos", False)
    img_a, img_b = parity_inputs(EXAMPLE_BATCH, seed=1)
    graph, args = (_OnnxPair(model), (img_a, img_b)) if xcos else (model, (img_a,))
    inputs = ["img_a", "img_b"] if xcos else ["images"]
    outputs = ["emb_a", "emb_b", "S", "W", "xcos"] if xcos else ["embedding"]
    batch = torch.export.Dim("batch", min=1)
    # The exporter prints its progress on stdout; the command's stdout must stay its report.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        # Both inputs share the one batch dimension, which the exporter reports as an unused axis name.
        warnings.filterwarnings("ignore", message="# The axis name")
        torch.onnx.export(graph.eval(), args, str(path), dynamo=True, external_data=False, input_names=inputs,
                          output_names=outputs, dynamic_shapes=tuple({0: batch} for _ in args))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(a: Tensor, b: Tensor) -> dict[str, Tensor]:
        if xcos:
            emb_a, emb_b, s, w, score = session.run(outputs, {"img_a": a.numpy(), "img_b": b.numpy()})
            return {"embedding": torch.cat([torch.from_numpy(emb_a), torch.from_numpy(emb_b)]),
                    "xcos": torch.from_numpy(score), "S": torch.from_numpy(s), "W": torch.from_numpy(w)}
        emb = [torch.from_numpy(session.run(outputs, {"images": x.numpy()})[0]) for x in (a, b)]
        return {"embedding": torch.cat(emb)}

    return run


def export_model(model: nn.Module, fmt: str, path: str | Path) -> dict[str, float]:
    """Export ``model`` (eval mode, CPU) as ``fmt`` to ``path``; returns the parity report: the max abs
    difference between the exported and the source outputs on :func:`parity_inputs` (``embedding``; for
    xCos models also ``xcos``, ``S``, ``W``). safetensors parity reloads the file with :func:`load_safetensors`,
    the loader of the ``safetensors:<path>`` SPEC."""
    if fmt not in FORMATS:
        raise ModelSpecError(f"unknown export format {fmt!r}; choose one of {list(FORMATS)}")
    model = model.cpu().eval()
    if fmt == "safetensors":
        save_safetensors(model, path)
        reloaded = load_safetensors(path)

        def exported(a: Tensor, b: Tensor) -> dict[str, Tensor]:
            return reference_outputs(reloaded, a, b)
    else:
        try:
            exported = (export_torchscript if fmt == "torchscript" else export_onnx)(model, path)
        except XCosError:
            raise
        except Exception as exc:  # tracers and exporters raise many types for code they cannot capture
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            other = "onnx" if fmt == "torchscript" else "torchscript"
            raise XCosError(f"{fmt} export of {type(model).__name__} failed ({type(exc).__name__}: {detail}); the "
                            f"model must be traceable (tensor code without data-dependent Python control flow); "
                            f"try --format {other}, or rerun with --debug for the traceback") from exc
    img_a, img_b = parity_inputs()
    return max_abs_diff(reference_outputs(model, img_a, img_b), exported(img_a, img_b))
