"""Fine-tuning losses and the interface a loss plugin implements.

A loss is a class registered with ``register_losses``. The core builds it with its validated
options (``Options`` is a pydantic model, or None when it takes none) and the trainer calls it on
every batch, training and validation alike, as ``loss(model, batch)``::

    class Loss:
        Options = None
        supports_packing = False
        def prepare(self, tokenizer) -> None: ...
        def __call__(self, model, batch) -> torch.Tensor: ...

``prepare`` is called once with the tokenizer before training (e.g. to look up the token ids of
the digits). ``batch`` is one of the two types of :mod:`surveysim_hf.batches`:

- :class:`~surveysim_hf.batches.PaddedBatch`, separate examples right-padded: ``input_ids``,
  ``attention_mask``, ``labels`` (``-100`` where no loss is taken: the prompt, by default, and
  padding) and, per example, the answer's code, type, question, text and token span.
  ``batch.logits(model)`` runs the ordinary forward pass and returns logits of shape
  (batch, seq, vocab), *not* shifted: ``logits[b, t]`` predicts the token at ``t + 1``, so the
  logits predicting the first answer token of example ``b`` are
  ``logits[b, batch.answer_start[b] - 1]``. A loss may run the model its own way instead
  (``numeric_penalty_multitoken`` runs it over prompt + answer trie).
- :class:`~surveysim_hf.batches.PackedBatch`, only for a loss whose ``supports_packing`` is
  true and with ``packing: true`` (the default): each respondent's examples packed into one tree
  sequence (see :mod:`surveysim_hf.packing`): ``input_ids``, ``position_ids``, the 4D tree
  ``attention_mask``, ``labels``, ``predictor_index`` (the position whose logits predict each
  label), ``loss_weight``, ``answer_predictor`` (per branch, the position whose logits predict its
  first answer token) and ``answers``, a ``PaddedBatch`` of the branches' examples in the order of
  ``answer_predictor >= 0``. :func:`surveysim_hf.packing.packed_logits` runs the forward pass;
  the loss must equal the one of the same examples padded (tested for the built-in losses).
  A loss that needs its own layout of the packed sequence defines
  ``pack_unit(rows, examples, vocab_size)``, which packs a list of encoded examples into one
  sequence (the keys of :func:`surveysim_hf.packing.pack_examples`); the trainer then packs
  every respondent with it (``numeric_penalty_multitoken`` adds each question's answer trie,
  :func:`surveysim_hf.packing.pack_answer_tries`).
  For any other loss the trainer trains on padded batches, with a log line.

The value returned must be a scalar to minimise; the validation loss that picks the best epoch is
the same loss, averaged over batches weighted by their number of label tokens.

Deprecated (removed in the release after 0.1): a loss written to the conventions of 0.1,
``__call__(logits, labels, batch)`` with optional ``packed(model, batch)`` or
``training_forward(model, batch)``, is trained through :class:`LegacyLoss` with a
``DeprecationWarning``; :func:`compute_loss`, the name ``LossBatch`` and the methods
``Loss.packed`` / ``Loss.training_forward`` warn and call ``loss(model, batch)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel

from surveysim_hf.batches import Batch, PackedBatch, PaddedBatch, collate
from surveysim_hf.loss_compat import (
    REMOVED_IN,
    LegacyLoss,
    also_taking_logits,
    is_legacy,
    legacy_supports_packing,
    takes_logits,
)
from surveysim_hf.texts import IGNORE_INDEX

__all__ = [
    "Batch",
    "CrossEntropyLoss",
    "LegacyLoss",
    "Loss",
    "PackedBatch",
    "PaddedBatch",
    "as_loss",
    "collate",
    "compute_loss",
    "token_cross_entropy",
]


class Loss:
    """Base class of fine-tuning losses (see the module docstring for the contract)."""

    Options: ClassVar[type[BaseModel] | None] = None
    #: whether ``__call__`` scores a :class:`PackedBatch` (else the trainer gives padded batches)
    supports_packing: ClassVar[bool] = False

    def __init__(self, options: BaseModel | None = None):
        self.options = options

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # surveysim_hf.loss_compat: the 0.1 conventions keep working for one release
        call = cls.__dict__.get("__call__")
        if call is not None and not takes_logits(call):
            cls.__call__ = also_taking_logits(call)  # type: ignore[method-assign]
        if is_legacy(cls) and "supports_packing" not in cls.__dict__:
            cls.supports_packing = property(  # type: ignore[assignment]
                lambda self: legacy_supports_packing(type(self))
            )

    def prepare(self, tokenizer: Any) -> None:
        """Called once with the tokenizer before training; nothing to do by default."""

    def __call__(self, model: Any, batch: Batch) -> torch.Tensor:
        """The loss of one batch (a scalar to minimise)."""
        raise NotImplementedError

    def packed(self, model: Any, batch: Mapping[str, Any]) -> torch.Tensor:
        """Deprecated: ``loss(model, batch)`` with a :class:`PackedBatch`."""
        warnings.warn(
            f"{type(self).__name__}.packed(model, batch) is deprecated: call"
            f" loss(model, batch) with a surveysim_hf.batches.PackedBatch; {REMOVED_IN}",
            DeprecationWarning,
            stacklevel=2,
        )
        if not self.supports_packing:
            raise NotImplementedError(f"{type(self).__name__} does not score packed batches")
        return self(model, PackedBatch.from_mapping(batch))

    def training_forward(self, model: Any, batch: PaddedBatch) -> torch.Tensor:
        """Deprecated: ``loss(model, batch)``."""
        warnings.warn(
            f"{type(self).__name__}.training_forward(model, batch) is deprecated: call"
            f" loss(model, batch); {REMOVED_IN}",
            DeprecationWarning,
            stacklevel=2,
        )
        return self(model, batch)

    packed.deprecated_alias = True  # type: ignore[attr-defined]
    training_forward.deprecated_alias = True  # type: ignore[attr-defined]


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the positions whose label is not -100."""
    # shift the labels, not the logits: slicing the (batch, seq, vocab) logits would make the
    # reshape below copy them
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    return F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX
    )


class CrossEntropyLoss(Loss):
    """Mean token cross-entropy over the label positions (the answer, or the whole text)."""

    supports_packing = True

    def __call__(self, model: Any, batch: Batch) -> torch.Tensor:
        if isinstance(batch, PackedBatch):
            from surveysim_hf.packing import packed_loss

            return packed_loss(model, batch)
        return token_cross_entropy(batch.logits(model), batch.labels)


def as_loss(loss: Any) -> Any:
    """``loss`` as it is called, ``loss(model, batch)``: itself, or a :class:`LegacyLoss` around
    a loss written to the 0.1 conventions (with a ``DeprecationWarning``)."""
    if not is_legacy(type(loss)):
        return loss
    warnings.warn(
        f"loss {type(loss).__name__} follows the 0.1 conventions (__call__(logits, labels,"
        " batch), packed, training_forward), which are deprecated: define __call__(model,"
        f" batch) (see surveysim_hf.losses); {REMOVED_IN}",
        DeprecationWarning,
        stacklevel=2,
    )
    return LegacyLoss(loss)


def compute_loss(model: Any, loss_fn: Any, batch: PaddedBatch) -> torch.Tensor:
    """Deprecated: ``loss_fn(model, batch)``."""
    warnings.warn(
        f"surveysim_hf.losses.compute_loss is deprecated: call loss(model, batch); {REMOVED_IN}",
        DeprecationWarning,
        stacklevel=2,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # one warning is enough
        return as_loss(loss_fn)(model, batch)


def __getattr__(name: str) -> Any:
    if name == "LossBatch":
        warnings.warn(
            "surveysim_hf.losses.LossBatch is deprecated: it is"
            f" surveysim_hf.batches.PaddedBatch; {REMOVED_IN}",
            DeprecationWarning,
            stacklevel=2,
        )
        return PaddedBatch
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
