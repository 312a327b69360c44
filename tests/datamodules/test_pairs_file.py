"""pairs.txt parser and data SPEC resolver on real LFW / kz_celeb25 files and generated ones."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xcos_lightning.datamodules.pairs_file import LFW_CROP, load_pair_set, parse_pairs, read_pairs_file
from xcos_lightning.errors import DataFormatError, VerificationSetError

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NAMES = {"Ann_Lee": 3, "Bo": 2, "Cy_Dee_Eff": 1}


def test_lfw_pairs(shared_dir):
    lfw = shared_dir / "data" / "lfw"
    pairs = load_pair_set(f"lfw:{lfw}")
    assert len(pairs) == 6000 and int(pairs.labels.sum()) == 3000 and pairs.problems() == []
    assert pairs.crop == LFW_CROP and pairs.sources[0] == lfw / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg"
    assert pairs.labels[:300].all() and not pairs.labels[300:600].any()  # fold 1: 300 matched, 300 mismatched
    item = pairs[300]
    assert item["img_a"].shape == item["img_b"].shape == (3, 112, 112) and item["label"].item() is False
    assert 0.0 <= item["img_a"].min() and item["img_a"].max() <= 1.0


def test_kz_split_pairs_are_all_genuine_with_self_pairs(shared_dir):
    root = shared_dir / "data" / "kz_celeb25" / "testing"
    match = r"all 750 pairs are marked genuine.*80 of 750 pairs pair an image with itself"
    with pytest.raises(VerificationSetError, match=match):
        load_pair_set(f"pairs:{root}:{root / 'testing_pairs.txt'}")
    pairs = read_pairs_file(root / "testing_pairs.txt", root, check=False)  # indices written as "70."
    assert pairs.sources[0] == root / "Irada_Ramadanova" / "Irada_Ramadanova_0070.jpg"


def test_kz_top_level_pairs_txt_is_malformed(shared_dir):
    kz = shared_dir / "data" / "kz_celeb25"
    with pytest.raises(DataFormatError, match=r"pairs\.txt:838: image number 'Medenova' is not a whole number"):
        read_pairs_file(kz / "pairs.txt", kz / "training")


def test_missing_images_listed(tmp_path, identity_tree):
    root = identity_tree(tmp_path / "faces", NAMES)
    pairs_txt = tmp_path / "pairs.txt"
    pairs_txt.write_text("Ann_Lee\t1\t3\nBo 1 Ann_Lee 9\nGhost 1 2\nBo\t1\tCy_Dee_Eff\t1\n")
    with pytest.raises(DataFormatError) as info:
        read_pairs_file(pairs_txt, root, ext=".png")
    message = str(info.value)
    assert "3 images named by the pairs file are missing" in message
    assert str(root / "Ghost" / "Ghost_0001.png") in message and str(root / "Ann_Lee" / "Ann_Lee_0009.png") in message


@pytest.mark.parametrize("text,match", [
    ("2 1\nAnn_Lee 1 2\nBo 1 Ann_Lee 1\n", "announces 4 pairs but the file lists 2"),
    ("Ann_Lee 1 2\nBo 1\n", r"pairs\.txt:2: expected 'name i j'"),
    ("Ann_Lee 1 2\n../x 1 2\n", r"pairs\.txt:2: identity name '\.\./x'"),
    ("Ann_Lee 1 2.5\n", r"pairs\.txt:1: image number '2\.5'"),
    ("\n\n", "no pair lines"),
])
def test_malformed_lines(tmp_path, text, match):
    (tmp_path / "pairs.txt").write_text(text)
    with pytest.raises(DataFormatError, match=match):
        parse_pairs(tmp_path / "pairs.txt")


def test_spec_resolution_errors(tmp_path):
    with pytest.raises(DataFormatError, match="expected a .bin path, 'lfw:<folder>'"):
        load_pair_set("imagenet")
    with pytest.raises(DataFormatError, match="pairs:<root>:<pairs file>"):
        load_pair_set("pairs:onlyroot")
    with pytest.raises(DataFormatError, match="not found"):
        load_pair_set(str(tmp_path / "absent.bin"))


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory, identity_tree) -> Path:
    return identity_tree(tmp_path_factory.mktemp("pairs_root"), NAMES, fmt="JPEG", ext=".jpg")


pair_line = st.one_of(
    st.sampled_from(sorted(NAMES)).flatmap(
        lambda n: st.tuples(st.just(n), st.integers(1, NAMES[n]), st.just(n), st.integers(1, NAMES[n]))),
    st.tuples(st.sampled_from(sorted(NAMES)), st.integers(1, 1), st.sampled_from(sorted(NAMES)), st.integers(1, 1)),
)


def _render(pair, sep: str, float_index: bool) -> str:
    a, i, b, j = pair
    num = (lambda k: f"{k}.") if float_index else str
    fields = [a, num(i), num(j)] if a == b else [a, num(i), b, num(j)]
    return sep.join(fields)


@SETTINGS
@given(st.lists(pair_line, min_size=1, max_size=12), st.sampled_from(["\t", " ", " \t "]), st.booleans(), st.booleans())
def test_generated_pairs_parse_exactly(tiny_root, pairs, sep, float_index, header):
    text = "\n".join(_render(p, sep, float_index) for p in pairs) + "\n"
    if header and len(pairs) % 2 == 0:
        text = f"1\t{len(pairs) // 2}\n" + text  # "folds per_fold": per_fold matched + per_fold mismatched
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pairs.txt"
        path.write_text(text)
        result = read_pairs_file(path, tiny_root, check=False)
    expected = [tiny_root / n / f"{n}_{k:04d}.jpg" for a, i, b, j in pairs for n, k in ((a, i), (b, j))]
    assert result.sources == expected and result.labels.tolist() == [a == b for a, _, b, _ in pairs]


@SETTINGS
@given(st.lists(pair_line, min_size=1, max_size=8), st.data())
def test_mutated_pairs_files(tiny_root, pairs, data):
    text = bytearray("\n".join(_render(p, "\t", False) for p in pairs).encode())
    for _ in range(data.draw(st.integers(1, 4))):
        spot = data.draw(st.integers(0, len(text)))
        junk = st.binary(max_size=4) | st.sampled_from([b" ", b"\n", b"9", b"_", b"."])
        text[spot:spot + data.draw(st.integers(0, 3))] = data.draw(junk)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pairs.txt"
        path.write_bytes(bytes(text))
        try:
            result = read_pairs_file(path, tiny_root, check=False)
        except DataFormatError as exc:
            assert str(path) in str(exc)
            return
    assert len(result.sources) == 2 * len(result) and all(p.is_file() for p in result.sources)
    assert isinstance(result[0]["img_a"], torch.Tensor)
