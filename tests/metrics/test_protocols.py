"""The engine's reporting rules: groups without pairs are absent, groups misclassified clean are flagged."""
from __future__ import annotations

import pytest
import torch

from helpers.threads import one_torch_thread  # noqa: F401 (autouse fixture)
from xcos_lightning.metrics.protocols import MethodResults, ProtocolConfig


def test_empty_groups_are_absent_and_clean_errors_are_flagged():
    # One genuine pair, rejected at every step (the fast_dev_run case of issue 17: cos below the threshold).
    results = MethodResults(ProtocolConfig(protocols=("deletion",), steps=2), threshold=0.9)
    scores = torch.full((1, 1, 3), 0.5)
    results.deletion["zero"].update(scores, scores, torch.tensor([True]), torch.tensor([7]))
    with pytest.warns(UserWarning) as caught:
        scalars = results.scalars("m")
    messages = [str(w.message) for w in caught]
    assert scalars["deletion_genuine"] == scalars["insertion_genuine"] == 0.0
    assert "deletion_impostor" not in scalars and "insertion_impostor" not in scalars  # absent, not NaN
    assert any("no impostor pairs among the" in m and "deletion_impostor" in m for m in messages)
    assert any("misclassified clean at threshold 0.9000" in m for m in messages)
    with pytest.raises(ValueError, match="protocols"):
        ProtocolConfig(protocols=("deletion", "nope"))
    with pytest.raises(ValueError, match="fills"):
        ProtocolConfig(fills=("paint",))
