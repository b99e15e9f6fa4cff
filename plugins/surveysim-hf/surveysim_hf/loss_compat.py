"""The loss conventions of surveysim-hf 0.1, kept working for one release (then removed).

In 0.1 a loss implemented ``__call__(logits, labels, batch)`` on the ordinary forward pass, and
optionally ``packed(model, batch)`` for packed batches or ``training_forward(model, batch)`` to
run the model itself; the trainer chose between them. Now every loss is called as
``loss(model, batch)`` (:mod:`surveysim_hf.losses`). This module recognises a 0.1 loss and
adapts it (:class:`LegacyLoss`), and lets a new loss still be called the 0.1 way with logits
(:func:`also_taking_logits`), so a 0.1 subclass calling ``super().__call__(logits, labels,
batch)`` keeps working.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import warnings
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import torch

from surveysim_hf.batches import Batch, PackedBatch

__all__ = [
    "REMOVED_IN",
    "LegacyCallError",
    "LegacyLoss",
    "also_taking_logits",
    "defining_class",
    "is_legacy",
    "legacy_supports_packing",
    "takes_logits",
]

REMOVED_IN = "it stops working in the release after 0.1"


class LegacyCallError(TypeError):
    """A loss that runs the model itself was called with logits (the 0.1 convention)."""


class _GivenLogits:
    """Stands in for the model when a loss is called the 0.1 way, with logits: the ordinary
    forward pass (:meth:`PaddedBatch.logits`) returns them; anything else is refused."""

    def __init__(self, logits: torch.Tensor, loss: Any):
        self._logits = logits
        self._loss = loss

    def __call__(self, **inputs: Any) -> SimpleNamespace:
        if set(inputs) != {"input_ids", "attention_mask"}:
            self._refuse()
        return SimpleNamespace(logits=self._logits)

    def __getattr__(self, name: str) -> Any:
        self._refuse()

    def _refuse(self) -> Any:
        # not an AttributeError: hasattr() must not swallow it
        raise LegacyCallError(
            f"{type(self._loss).__name__} runs the model itself and cannot score given logits;"
            " call it as loss(model, batch)"
        )


def takes_logits(call: Callable[..., Any]) -> bool:
    """Whether a ``__call__`` (unbound) has the 0.1 signature ``(self, logits, labels, batch)``."""
    try:
        parameters = inspect.signature(call).parameters.values()
    except (TypeError, ValueError):  # a builtin: not a loss's
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [p for p in parameters if p.kind in positional and p.default is p.empty]
    return len(required) >= 4


def also_taking_logits(call: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``call`` (a ``__call__(self, model, batch)``) that also accepts the 0.1 form
    ``loss(logits, labels, batch)``, with a ``DeprecationWarning``."""

    @functools.wraps(call)
    def __call__(self: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        if len(args) == 3 and not kwargs:
            logits, labels, batch = args
            warnings.warn(
                f"calling {type(self).__name__}(logits, labels, batch) is deprecated: call"
                f" loss(model, batch); {REMOVED_IN}",
                DeprecationWarning,
                stacklevel=2,
            )
            if batch is not None and labels is not batch.labels:
                batch = dataclasses.replace(batch, labels=labels)
            return call(self, _GivenLogits(logits, self), batch)
        return call(self, *args, **kwargs)

    return __call__


def defining_class(cls: type, name: str) -> type | None:
    """The class that defines ``name`` for ``cls``, deprecated aliases skipped."""
    for klass in cls.__mro__:
        method = klass.__dict__.get(name)
        if method is not None and not getattr(method, "deprecated_alias", False):
            return klass
    return None


def is_legacy(cls: type) -> bool:
    """Whether instances of ``cls`` follow the 0.1 conventions."""
    call = getattr(cls, "__call__", None)  # noqa: B004 (the method, not callability)
    return (
        (call is not None and takes_logits(call))
        or defining_class(cls, "packed") is not None
        or defining_class(cls, "training_forward") is not None
    )


def legacy_supports_packing(cls: type) -> bool:
    """The 0.1 rule: ``packed`` at least as specific as whatever computes the padded loss, so
    that a subclass changing only the padded loss of a loss that packs is never silently
    trained through its parent's packed path."""
    packed_owner = defining_class(cls, "packed")
    others = [defining_class(cls, name) for name in ("__call__", "training_forward")]
    return packed_owner is not None and all(
        issubclass(packed_owner, other) for other in others if other is not None
    )


class LegacyLoss:
    """A loss written to the 0.1 conventions, called as ``loss(model, batch)``: ``packed`` for a
    packed batch, else ``training_forward(model, batch)`` when it defines it, else
    ``__call__(logits, labels, batch)`` on the ordinary forward pass."""

    def __init__(self, loss: Any):
        self.loss = loss

    @property
    def options(self) -> Any:
        return getattr(self.loss, "options", None)

    @property
    def supports_packing(self) -> bool:
        return bool(getattr(self.loss, "supports_packing", False))

    def prepare(self, tokenizer: Any) -> None:
        self.loss.prepare(tokenizer)

    def __call__(self, model: Any, batch: Batch) -> torch.Tensor:
        cls = type(self.loss)
        if isinstance(batch, PackedBatch):
            return self.loss.packed(model, batch)
        if defining_class(cls, "training_forward") is not None:
            return self.loss.training_forward(model, batch)
        if takes_logits(cls.__call__):
            return self.loss(batch.logits(model), batch.labels, batch)
        return self.loss(model, batch)
