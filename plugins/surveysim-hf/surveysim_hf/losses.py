"""Fine-tuning losses and the interface a loss plugin implements.

A loss is a class registered with ``register_losses``. The core builds it with its validated
options (``Options`` is a pydantic model, or None when it takes none) and the backend calls it on
every batch::

    class Loss:
        Options = None
        def prepare(self, tokenizer) -> None: ...
        def __call__(self, logits, labels, batch) -> torch.Tensor: ...

``logits`` has shape (batch, seq, vocab) and is *not* shifted: ``logits[b, t]`` predicts the
token at ``t + 1``. ``labels`` has shape (batch, seq), aligned with ``batch.input_ids``, with
``-100`` where no loss is taken (the prompt, by default, and padding). ``batch`` is a
:class:`LossBatch` with each example's answer code, answer type, question and the token span of
its answer, so a loss can act on the answer position alone: the logits predicting the first
answer token of example ``b`` are ``logits[b, batch.answer_start[b] - 1]``. ``prepare`` is called
once with the tokenizer before training (e.g. to look up the token ids of the digits).

The value returned must be a scalar to minimise; the validation loss that picks the best epoch is
the same loss, averaged over batches weighted by their number of label tokens.

Packed batches (``packing: true``, the default): the trainer packs each respondent's examples into
one tree sequence (see :mod:`surveysim_hf.packing`). A loss that can score such a batch implements
``packed(model, batch)``, where ``batch`` is the dict of :func:`surveysim_hf.packing.collate_packed`
(``input_ids``, ``position_ids``, the 4D tree ``attention_mask``, ``labels``, ``predictor_index``:
the position whose logits predict each label, ``loss_weight``, ``answer_predictor``: per branch, the
position whose logits predict its first answer token) plus ``answers``, a :class:`LossBatch` of the
branches' examples in the order of ``answer_predictor >= 0``, and returns the weighted mean loss;
:func:`surveysim_hf.packing.packed_logits` runs the forward pass.
``supports_packing`` is true when a class defines ``packed`` at or below the classes that define
its ``__call__`` and ``training_forward`` (so a subclass that changes those only is never silently
bypassed); other losses are trained on separate examples, with a log line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel

from surveysim_hf.texts import IGNORE_INDEX


@dataclass
class LossBatch:
    """One padded batch of training texts with what their answers mean."""

    input_ids: torch.Tensor  # (batch, seq), right-padded
    attention_mask: torch.Tensor  # (batch, seq)
    labels: torch.Tensor  # (batch, seq), -100 where no loss is taken
    answer_start: torch.Tensor  # (batch,) index of the first answer token in input_ids
    answer_length: torch.Tensor  # (batch,) answer tokens, end-of-turn token excluded
    answer_codes: torch.Tensor  # (batch,) float answer codes
    answer_types: list[Any] = field(default_factory=list)  # surveysim AnswerType per example
    questions: list[str] = field(default_factory=list)
    answer_texts: list[str] = field(default_factory=list)

    def to(self, device: torch.device | str) -> LossBatch:
        moved = {
            name: value.to(device) if isinstance(value, torch.Tensor) else value
            for name, value in self.__dict__.items()
        }
        return LossBatch(**moved)

    def label_tokens(self) -> int:
        """Tokens that carry a loss (labels shifted by one, as the loss sees them)."""
        return int((self.labels[:, 1:] != IGNORE_INDEX).sum())


class Loss:
    """Base class of fine-tuning losses (see the module docstring for the contract)."""

    Options: ClassVar[type[BaseModel] | None] = None

    def __init__(self, options: BaseModel | None = None):
        self.options = options

    def prepare(self, tokenizer: Any) -> None:
        """Called once with the tokenizer before training; nothing to do by default."""

    def __call__(
        self, logits: torch.Tensor, labels: torch.Tensor, batch: LossBatch
    ) -> torch.Tensor:
        raise NotImplementedError

    def packed(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss of a packed batch (see the module docstring); optional."""
        raise NotImplementedError

    @property
    def supports_packing(self) -> bool:
        def owner(name: str) -> type:
            return next(c for c in type(self).__mro__ if name in c.__dict__)

        packed_owner = owner("packed")
        # ``packed`` must be at least as specific as whatever computes the unpacked loss
        others = [n for n in ("__call__", "training_forward") if hasattr(self, n)]
        return packed_owner is not Loss and all(issubclass(packed_owner, owner(n)) for n in others)


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

    def __call__(
        self, logits: torch.Tensor, labels: torch.Tensor, batch: LossBatch
    ) -> torch.Tensor:
        return token_cross_entropy(logits, labels)

    def packed(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        from surveysim_hf.packing import packed_loss

        return packed_loss(model, batch)


def collate(encoded: Sequence[Any], examples: Sequence[Any], pad_token_id: int) -> LossBatch:
    """Right-pad encoded examples (see :mod:`surveysim_hf.texts`) into a :class:`LossBatch`."""
    width = max(len(e.input_ids) for e in encoded)
    n = len(encoded)
    input_ids = torch.full((n, width), pad_token_id, dtype=torch.long)
    labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for row, e in enumerate(encoded):
        length = len(e.input_ids)
        input_ids[row, :length] = torch.tensor(e.input_ids)
        labels[row, :length] = torch.tensor(e.labels)
        mask[row, :length] = 1
    return LossBatch(
        input_ids=input_ids,
        attention_mask=mask,
        labels=labels,
        answer_start=torch.tensor([e.answer_start for e in encoded], dtype=torch.long),
        answer_length=torch.tensor([e.answer_length for e in encoded], dtype=torch.long),
        answer_codes=torch.tensor([float(x.answer_code) for x in examples], dtype=torch.float32),
        answer_types=[x.answer_type for x in examples],
        questions=[x.question for x in examples],
        answer_texts=[x.answer_text for x in examples],
    )


# -- extension point: losses that run the model themselves (e.g. surveysim-losses) ------------
def compute_loss(model: Any, loss_fn: Any, batch: LossBatch) -> torch.Tensor:
    """The loss of one batch: ``loss_fn.training_forward(model, batch)`` when the loss defines it
    (it runs the model itself, e.g. over prompt + answer trie), else ``loss_fn(logits, labels,
    batch)`` on the ordinary forward pass over ``batch.input_ids``."""
    training_forward = getattr(loss_fn, "training_forward", None)
    if training_forward is not None:
        return training_forward(model, batch)
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    return loss_fn(logits, batch.labels, batch)
