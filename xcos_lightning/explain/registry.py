"""Explainer registry: methods register their class by name; every caller builds them with ``build_explainer``.

The package's ``__init__`` imports every built-in method's module, so they are registered before any caller of
this module runs (importing it imports the package first).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, TypeVar

from torch import nn

from xcos_lightning.errors import ModelSpecError
from xcos_lightning.explain.base import Explainer

_EXPLAINERS: dict[str, type[Explainer]] = {}
E = TypeVar("E", bound=type[Explainer])
# Options a caller may give every method at once (benchmark --n-masks / --seed, the monitor's n_masks / seed):
# each goes to the methods whose constructor takes it and is ignored by the others. Any other option is
# passed as is, so a misspelt one fails.
SHARED_OPTIONS = ("n_masks", "seed")


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
    """Names accepted by ``create_explainer`` and ``build_explainer``."""
    return sorted(_EXPLAINERS)


def create_explainer(name: str, **kwargs) -> Explainer:
    """Build the explainer registered as ``name`` with its constructor's keyword arguments."""
    if name not in _EXPLAINERS:
        raise KeyError(f"unknown explainer {name!r}; choose one of {sorted(_EXPLAINERS)}")
    return _EXPLAINERS[name](**kwargs)


def explains_xcos(name: str, options: dict[str, Any] | None = None) -> bool:
    """Whether method ``name`` with ``options`` explains the xCos score (so takes the xCos threshold): the
    intrinsic ``xcos`` maps, and the gradient methods with ``score="xcos"``."""
    return name == "xcos" or (options or {}).get("score") == "xcos"


def build_explainer(name: str, model: nn.Module, **options: Any) -> Explainer:
    """The one way callers (benchmark, compare, the monitor) build an explainer of ``model``.

    ``model``: the eval-mode embedding model ((B, 3, H, W) in [0, 1] -> (B, D)); methods of the xCos score
    (``explains_xcos``) need an xCos model (``model.has_xcos``) and receive it as their pair model, the others
    as ``embed_fn``. ``threshold``: give the threshold of the score the method explains (``explains_xcos``).
    ``SHARED_OPTIONS`` go only to methods that take them; every other option is a constructor argument
    (Grad-CAM finds its layer itself, ``gradcam.default_target_layer``). Raises ``ModelSpecError`` naming
    the method for a model it cannot explain or an option it does not take.
    """
    if name not in _EXPLAINERS:
        raise ModelSpecError(f"unknown explainer {name!r}; choose one of {sorted(_EXPLAINERS)}")
    cls = _EXPLAINERS[name]
    accepted = set(inspect.signature(cls.__init__).parameters)
    kwargs = {k: v for k, v in options.items() if k not in SHARED_OPTIONS or k in accepted}
    if explains_xcos(name, options) and not getattr(model, "has_xcos", False):
        raise ModelSpecError(f"method {name!r} explains the xCos score; {type(model).__name__} has no xCos head "
                             "(train with attention, or drop the method)")
    kwargs["model" if name == "xcos" else "embed_fn"] = model
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ModelSpecError(f"method {name!r} with options {options}: {err}") from err


def parse_method(token: str) -> tuple[str, dict[str, Any]]:
    """``"name:key=value:..."`` -> (name, options); values become int, float or bool where they read as one,
    and tuples where they hold ``/`` (``occlusion:stride=16:patch_sizes=16/32``)."""
    name, *options = token.split(":")
    kwargs: dict[str, Any] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise ValueError(f"method {token!r}: option {option!r} is not key=value")
        items = tuple(_literal(v) for v in value.split("/"))
        kwargs[key] = items if "/" in value else items[0]
    return name, kwargs


def _literal(text: str) -> Any:
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
