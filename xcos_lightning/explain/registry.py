"""Explainer registry: methods register their class by name; callers build them by name."""
from __future__ import annotations

from typing import Callable, TypeVar

from xcos_lightning.explain.base import Explainer

_EXPLAINERS: dict[str, type[Explainer]] = {}
E = TypeVar("E", bound=type[Explainer])


def register_explainer(name: str) -> Callable[[E], E]:
    """Class decorator registering an ``Explainer`` subclass under ``name`` (unique); sets ``cls.name``."""

    def wrap(cls: E) -> E:
        if name in _EXPLAINERS:
            raise ValueError(f"explainer {name!r} is already registered")
        cls.name = name
        _EXPLAINERS[name] = cls
        return cls

    return wrap


def list_explainers() -> list[str]:
    """Names accepted by ``create_explainer``."""
    _import_builtin_explainers()
    return sorted(_EXPLAINERS)


def create_explainer(name: str, **kwargs) -> Explainer:
    """Build the explainer registered as ``name`` with its constructor's keyword arguments."""
    _import_builtin_explainers()
    if name not in _EXPLAINERS:
        raise KeyError(f"unknown explainer {name!r}; choose one of {sorted(_EXPLAINERS)}")
    return _EXPLAINERS[name](**kwargs)


def _import_builtin_explainers() -> None:
    # Importing the modules runs their @register_explainer decorators.
    from xcos_lightning.explain import (  # noqa: F401
        corrrise, gradcam, occlusion, random_map, rise, srise, xcos_intrinsic, xssab,
    )
