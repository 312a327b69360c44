"""Several optimizers stepped as one, so the paper's SGD + Adam split keeps one optimizer step per batch.

Lightning counts every optimizer step in ``global_step``; two optimizers would double it (and with it
``max_steps``, logging intervals and resumed progress). ``JointOptimizer`` presents the union of their
parameter groups, so gradient clipping, AMP scaling and LR schedulers see one optimizer.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.optim import Optimizer


class JointOptimizer(Optimizer):
    """Steps ``optimizers`` together; ``param_groups`` are theirs (shared dicts, in order)."""

    def __init__(self, optimizers: list[Optimizer]) -> None:
        params = [p for opt in optimizers for group in opt.param_groups for p in group["params"]]
        super().__init__([{"params": params}], defaults={})
        self.optimizers = optimizers
        # Share the inner group dicts: an LR scheduler writing group["lr"] reaches the inner optimizer.
        self.param_groups = [group for opt in optimizers for group in opt.param_groups]

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.optimizers:
            opt.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state_dict: dict) -> None:
        states = state_dict["optimizers"]
        if len(states) != len(self.optimizers):
            raise ValueError(f"checkpoint holds {len(states)} optimizer states, this model has {len(self.optimizers)}")
        # Each inner load moves its state to its parameters' device.
        for opt, state in zip(self.optimizers, states):
            opt.load_state_dict(state)
        self.param_groups = [group for opt in self.optimizers for group in opt.param_groups]
