"""``explain.py export`` end to end: a tiny xCos checkpoint and a MobileFaceNet in the pretrained layout as
safetensors (loaded back through the ``safetensors:`` SPEC), TorchScript and ONNX with parity, and bad input."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from xcos_lightning.cli.explain import main
from xcos_lightning.io.export import METADATA_KEY, parity_inputs
from xcos_lightning.io.spec import load_model

TOLERANCE = 1e-4
TOY_MODULE = '''
import torch
from torch import nn


def build():
    """A plain embedding model outside this package: (B, 3, 112, 112) -> (B, 24)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, 4, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
'''


@pytest.fixture
def toy_module(tmp_path, monkeypatch):
    """SPEC of a module:function model importable from the working directory."""
    (tmp_path / "toy_embedding.py").write_text(TOY_MODULE)
    monkeypatch.chdir(tmp_path)
    return "toy_embedding:build"


def export(capsys, *argv) -> tuple[int, dict | None, str]:
    code = main(["export", *map(str, argv), "--json"])
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    return code, (json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None), captured.err


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_xcos_checkpoint_parity(fmt, xcos_ckpt, tmp_path, capsys):
    out = tmp_path / f"xcos.{fmt}"
    code, report, _ = export(capsys, xcos_ckpt, "--format", fmt, "--out", out)
    assert code == 0 and report["ok"] and report["xcos"] and out.is_file()
    assert set(report["parity_max_abs_diff"]) == {"embedding", "xcos", "S", "W"}
    assert all(d < TOLERANCE for d in report["parity_max_abs_diff"].values())


def test_xcos_torchscript_keeps_the_maps(xcos_ckpt, tmp_path, capsys):
    out = tmp_path / "xcos.pt"
    assert export(capsys, xcos_ckpt, "--format", "torchscript", "--out", out)[0] == 0
    scripted, source = torch.jit.load(str(out)), load_model(str(xcos_ckpt))
    a, b = parity_inputs(batch=5, seed=3)  # yet another batch size than the trace and the parity check
    with torch.no_grad():
        for got, want in zip(scripted.xcos_maps(a, b), source.xcos_maps(a, b)):
            assert torch.allclose(got, want, atol=TOLERANCE)


def test_onnx_plain_module_function_model(toy_module, tmp_path, capsys):
    code, report, _ = export(capsys, toy_module, "--format", "onnx", "--out", tmp_path / "toy.onnx")
    assert code == 0 and report["ok"] and not report["xcos"]
    assert set(report["parity_max_abs_diff"]) == {"embedding"} and report["parity_max_abs_diff"]["embedding"] < TOLERANCE


@pytest.mark.parametrize("which", ["xcos", "pretrained"])
def test_safetensors_round_trip_through_the_loader(which, xcos_ckpt, mobilefacenet_spec, tmp_path, capsys):
    spec = str(xcos_ckpt) if which == "xcos" else mobilefacenet_spec
    out = tmp_path / "model.safetensors"
    code, report, _ = export(capsys, spec, "--format", "safetensors", "--out", out)
    assert code == 0 and report["ok"] and all(d == 0 for d in report["parity_max_abs_diff"].values())
    with safe_open(str(out), framework="pt") as f:  # architecture as JSON metadata, no pickle anywhere
        arch = json.loads(f.metadata()[METADATA_KEY])
    assert arch["kind"] == which
    reloaded, source = load_model(f"safetensors:{out}"), load_model(spec)
    assert type(reloaded) is type(source) and getattr(reloaded, "has_xcos", False) == (which == "xcos")
    a, _ = parity_inputs()
    with torch.no_grad():
        assert torch.equal(reloaded(a), source(a))


def test_safetensors_refuses_foreign_classes_and_foreign_models(xcos_ckpt, toy_module, tmp_path, capsys):
    crafted = tmp_path / "crafted.safetensors"
    arch = {"kind": "xcos", "backbone": {"class_path": "subprocess.Popen", "init_args": {"args": ["true"]}},
            "attention": None}
    save_file({"w": torch.zeros(1)}, str(crafted), metadata={METADATA_KEY: json.dumps(arch)})
    code, _, err = export(capsys, f"safetensors:{crafted}", "--format", "onnx", "--out", tmp_path / "x.onnx")
    assert code == 2 and "subprocess.Popen" in err and "refused" in err
    code, _, err = export(capsys, toy_module, "--format", "safetensors", "--out", tmp_path / "toy.safetensors")
    assert code == 2 and "use --format torchscript or onnx" in err


def test_bad_input_is_one_line_and_exit_code_2(xcos_ckpt, tmp_path, capsys):
    out = ("--out", tmp_path / "x.onnx")
    for argv, expected in (
        ((xcos_ckpt, "--format", "tflite"), "--format 'tflite': choose one of safetensors, torchscript, onnx"),
        ((tmp_path / "missing.ckpt", "--format", "onnx"), "missing.ckpt does not exist"),
        (("mobilefacenet:" + str(tmp_path / "none.pt"), "--format", "onnx"), "none.pt does not exist"),
        (("no_such_package.models:build", "--format", "onnx"), "cannot import module 'no_such_package.models'"),
    ):
        code, report, err = export(capsys, *argv, *out)
        assert code == 2 and report is None
        assert len(err.strip().splitlines()) == 1 and err.startswith("explain.py export: error:") and expected in err
    assert not (tmp_path / "x.onnx").exists()



def test_exporter_failure_is_a_one_line_error(toy_module, tmp_path, monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise RuntimeError("Could not guard on data-dependent expression\n(a long exporter report)")

    monkeypatch.setattr(torch.onnx, "export", fail)  # what torch.export raises on untraceable code
    code, report, err = export(capsys, toy_module, "--format", "onnx", "--out", tmp_path / "b.onnx")
    last = err.strip().splitlines()[-1]
    assert code == 2 and report is None and last.startswith("explain.py export: error: onnx export of Sequential")
    assert "RuntimeError: Could not guard on data-dependent expression)" in last and "try --format torchscript" in last
