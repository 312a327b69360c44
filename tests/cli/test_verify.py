"""``explain.py verify`` end to end: the real pretrained MobileFaceNet on real kz_celeb25 test faces,
an xCos checkpoint, the scoring engine, and one-line errors with exit code 2."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from xcos_lightning.cli.explain import main
from xcos_lightning.datamodules.pair_set import PairSet
from xcos_lightning.errors import ModelSpecError, VerificationSetError
from xcos_lightning.evaluate import embed_pairs, forward_copy, pair_scores, score_pair_set
from xcos_lightning.io.spec import load_model
from xcos_lightning.models import GridBackbone
from xcos_lightning.module import XCosModule

REPO = Path(__file__).resolve().parents[2]
PAIRS = 20  # 10 genuine + 10 impostor: the fewest 10-fold accuracy allows, times two


def kz_pairs(shared_dir: Path) -> PairSet:
    """Alternating genuine (images 0, 1 of identity k) / impostor (image 2 of identities k, k+1) pairs."""
    folders = sorted(p for p in (shared_dir / "data/kz_celeb25/testing").iterdir() if p.is_dir())
    images = [sorted(f.glob("*.jpg")) for f in folders]
    sources, labels = [], []
    for k in range(PAIRS // 2):
        sources += [images[k][0], images[k][1], images[k][2], images[k + 1][2]]
        labels += [True, False]
    return PairSet(sources, labels, "kz_test", size=112)


@pytest.fixture
def kz_bin(shared_dir, tmp_path) -> Path:
    return kz_pairs(shared_dir).save_bin(tmp_path / "kz_test.bin")


@pytest.fixture
def mobilefacenet(shared_dir) -> str:
    return f"mobilefacenet:{shared_dir / 'weights/mobilefacenet_128d.pt'}"


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def lfw_subset(shared_dir: Path, tmp_path: Path) -> str:
    """SPEC of the first 10 matched and 10 mismatched pairs of LFW's pairs.txt, alternating."""
    lines = (shared_dir / "data/lfw/pairs.txt").read_text().splitlines()[1:]
    matched, mismatched = [x for x in lines if len(x.split()) == 3], [x for x in lines if len(x.split()) == 4]
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("\n".join(x for k in range(PAIRS // 2) for x in (matched[k], mismatched[k])) + "\n")
    return f"pairs:{shared_dir / 'data/lfw'}:{pairs}"


def test_pretrained_mobilefacenet_on_real_lfw_pairs(shared_dir, tmp_path, mobilefacenet, capsys):
    spec = lfw_subset(shared_dir, tmp_path)
    # --crop 120: the lfw: protocol (120 px around the centre (125, 125) of the 250x250 images)
    code = main(["verify", "--model", mobilefacenet, "--data", spec, "--crop", "120", "--json", "--num-workers", "0"])
    out = capsys.readouterr().out
    assert code == 0
    result = last_json(out)
    assert result["model"] == mobilefacenet
    assert set(result[spec]) == {"cos"}  # a plain embedding model has no xcos score
    metrics = result[spec]["cos"]
    assert set(metrics) == {"acc", "acc_std", "threshold", "eer", "eer_threshold", "tar_far1e-3", "tar_far1e-4"}
    assert metrics["acc"] >= 0.8 and metrics["eer"] <= 0.2  # the model scores ~94.5% on all of LFW
    assert "accuracy %" in out  # the table precedes the JSON line
    assert "10 impostor pairs, so TAR@FAR1e-3 and 1e-4 is the TAR at FAR 0" in out


def test_pretrained_mobilefacenet_on_a_real_bin(kz_bin, mobilefacenet, capsys, shared_dir):
    """The .bin's numbers equal a brute-force computation: each image and its mirror embedded one at a time
    straight from the folders, cosines, and the EER read off a sweep over every observed score."""
    assert main(["verify", "--model", mobilefacenet, "--data", str(kz_bin), "--json", "--num-workers", "0"]) == 0
    metrics = last_json(capsys.readouterr().out)[str(kz_bin)]["cos"]
    from xcos_lightning.io.spec import load_model

    model, pairs = load_model(mobilefacenet), kz_pairs(shared_dir)
    with torch.no_grad():
        def embedding(j):
            x = torch.from_numpy(pairs.load_image(j)).permute(2, 0, 1)[None].float() / 255
            e = model(x) + model(x.flip(-1))
            return e / e.norm()
        scores = torch.tensor([float(embedding(2 * i) @ embedding(2 * i + 1).T) for i in range(len(pairs))])
    genuine, impostor = scores[torch.from_numpy(pairs.labels)], scores[~torch.from_numpy(pairs.labels)]
    rates = [(float((impostor >= t).float().mean()), float((genuine < t).float().mean())) for t in scores.tolist()]
    eer = min(max(far, frr) for far, frr in rates)
    assert metrics["eer"] == pytest.approx(eer, abs=1 / len(genuine) + 1e-6)
    assert metrics["eer_threshold"] == pytest.approx(float(scores[torch.tensor([max(r) for r in rates]).argmin()]),
                                                     abs=0.05)


def test_xcos_checkpoint_gets_both_scores(kz_bin, tmp_path, capsys):
    module = XCosModule(GridBackbone("tiny", grid_channels=8), num_classes=5)
    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, ckpt)
    code = main(["verify", "--model", str(ckpt), "--data", str(kz_bin), "--data", str(kz_bin), "--json",
                 "--num-workers", "0", "--no-flip", "--batch-size", "7"])
    assert code == 0
    result = last_json(capsys.readouterr().out)
    assert set(result) == {str(kz_bin), "model"}  # a repeated --data is scored once
    assert set(result[str(kz_bin)]) == {"cos", "xcos"}


class Flatten(nn.Module):
    """A toy embedding model: average-pooled pixels, flattened."""

    def forward(self, x):
        return nn.functional.avg_pool2d(x, 16).flatten(1) - 0.5


def test_distinct_images_path_equals_the_pair_loop(shared_dir):
    pair_set = kz_pairs(shared_dir)
    pair_set.sources[3] = pair_set.sources[0]  # a repeated image is embedded once
    model = Flatten().eval()
    scores = score_pair_set(model, pair_set, batch_size=6, progress=False)
    batch = [pair_set[i] for i in range(len(pair_set))]
    a, b = (torch.stack([item[k] for item in batch]) for k in ("img_a", "img_b"))
    assert torch.allclose(scores["cos"], pair_scores(model, a, b)["cos"], atol=1e-6)
    assert torch.equal(scores["label"], torch.tensor(pair_set.labels))
    emb_a, emb_b = embed_pairs(model, pair_set, batch_size=4, flip=False, progress=False)
    assert torch.allclose(emb_a.norm(dim=1), torch.ones(PAIRS))
    assert torch.equal(emb_b[1], emb_a[0])


def test_broken_bin_is_one_line_and_exit_code_2(shared_dir, mobilefacenet):
    broken = shared_dir / "data/kz_celeb25/validation/validation.bin"
    proc = subprocess.run([sys.executable, str(REPO / "explain.py"), "verify", "--model", mobilefacenet,
                           "--data", str(broken)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("explain.py verify: error:") and "all 749 pairs are marked genuine" in lines[0]


def test_missing_model_file_is_named(kz_bin, tmp_path, capsys):
    missing = tmp_path / "nope.pt"
    assert main(["verify", "--model", f"mobilefacenet:{missing}", "--data", str(kz_bin)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "does not exist" in err
    assert main(["verify", "--model", str(tmp_path / "run.ckpt"), "--data", str(kz_bin)]) == 2
    assert "run.ckpt does not exist" in capsys.readouterr().err


def test_debug_shows_the_exception(kz_bin, tmp_path):
    with pytest.raises(ModelSpecError):
        main(["--debug", "verify", "--model", f"mobilefacenet:{tmp_path / 'x.pt'}", "--data", str(kz_bin)])
    with pytest.raises(ModelSpecError):
        main(["verify", "--model", f"mobilefacenet:{tmp_path / 'x.pt'}", "--data", str(kz_bin), "--debug"])


def test_too_few_pairs_for_ten_folds(shared_dir, tmp_path, mobilefacenet, capsys):
    small = PairSet(kz_pairs(shared_dir).sources[:8], [True, False, True, False], "small").save_bin(tmp_path / "s.bin")
    assert main(["verify", "--model", mobilefacenet, "--data", str(small)]) == 2
    assert "needs at least 10" in capsys.readouterr().err
    with pytest.raises(VerificationSetError):
        main(["--debug", "verify", "--model", mobilefacenet, "--data", str(small)])


def test_align_detects_once_then_reads_the_cache(shared_dir, tmp_path, mobilefacenet, capsys, monkeypatch):
    """``--align``: the first run detects every distinct image once; the second, with the same cache, none;
    a run with --no-cache detects again. MTCNN's landmarks are stood in for by a counting wrapper around it."""
    (tmp_path / "counting.py").write_text(
        "from xcos_lightning.align import create_detector\n"
        "CALLS = []\n_MTCNN = create_detector('mtcnn')\n"
        "def detect(image):\n"
        "    CALLS.append(image.shape)\n"
        "    face = _MTCNN([image])[0][0]\n"
        "    return [face.box], [face.points], [face.score]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import counting

    spec = lfw_subset(shared_dir, tmp_path)
    argv = ["verify", "--model", mobilefacenet, "--data", spec, "--json", "--num-workers", "0", "--align",
            "counting:detect", "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    first = last_json(capsys.readouterr().out)[spec]["cos"]
    distinct = len(set(load_sources(spec)))
    assert len(counting.CALLS) == distinct
    assert main(argv) == 0
    assert len(counting.CALLS) == distinct  # nothing detected: the landmarks came from the cache
    assert last_json(capsys.readouterr().out)[spec]["cos"] == first
    assert main([*argv, "--no-cache"]) == 0
    assert len(counting.CALLS) == 2 * distinct


def test_folded_channels_last_forward_keeps_the_scores(shared_dir, mobilefacenet):
    """On a CPU evaluation runs a BatchNorm-folded copy; its scores equal the original model's
    own forward pair by pair within float rounding: the real MobileFaceNet (BatchNorm statistics of its
    training) and an xCos model whose BatchNorms saw data."""
    torch.manual_seed(0)
    xcos = XCosModule(GridBackbone("tiny", grid_channels=8), num_classes=5).model
    with torch.no_grad():
        xcos.train().grid(torch.rand(16, 3, 112, 112))  # running statistics away from (0, 1)
    pairs = kz_pairs(shared_dir)
    batch = [pairs[i] for i in range(len(pairs))]
    a, b = (torch.stack([item[k] for item in batch]) for k in ("img_a", "img_b"))
    for model in (load_model(mobilefacenet).eval(), xcos.eval()):
        fast = forward_copy(model)
        assert sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fast.modules()) < \
            sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        scores = score_pair_set(model, pairs, batch_size=8, progress=False)
        with torch.no_grad():
            direct = pair_scores(model, a, b)
        for kind, value in direct.items():
            assert torch.allclose(scores[kind], value, atol=1e-5), kind
        assert not torch.allclose(scores["cos"], scores["cos"].mean())  # not a constant score


def load_sources(spec: str):
    from xcos_lightning.datamodules.pairs_file import load_pair_set
    return load_pair_set(spec).sources


def test_xcos_scores_from_distinct_grids_equal_pair_by_pair(shared_dir):
    """The xCos path of score_pair_set computes each distinct image's grid once; the scores equal the model's
    own pair_scores run pair by pair (the images repeat across pairs, as in LFW)."""
    torch.manual_seed(0)
    model = XCosModule(GridBackbone("tiny", grid_channels=8), num_classes=5).model.eval()
    pairs = kz_pairs(shared_dir)
    pairs.sources[3] = pairs.sources[0]  # a repeated image: scored once, used twice
    scores = score_pair_set(model, pairs, batch_size=3, progress=False)
    with torch.no_grad():
        for i in range(len(pairs)):
            item = pairs[i]
            direct = pair_scores(model, item["img_a"][None], item["img_b"][None])
            for kind in ("cos", "xcos"):
                assert float(scores[kind][i]) == pytest.approx(float(direct[kind][0]), abs=1e-5)
