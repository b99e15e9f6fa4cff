"""The two kinds of batch a loss receives: padded examples or packed respondent sequences.

The trainer (:mod:`surveysim_hf.train`) builds one or the other from its options and the loss's
``supports_packing``, and calls ``loss(model, batch)`` (see :mod:`surveysim_hf.losses`):

- :class:`PaddedBatch`: separate training texts, right-padded; ``batch.logits(model)`` runs the
  ordinary forward pass.
- :class:`PackedBatch`: one tree sequence per respondent (:mod:`surveysim_hf.packing`), with the
  branches' examples as a :class:`PaddedBatch` in ``answers``;
  :func:`surveysim_hf.packing.packed_logits` runs the forward pass.

Both say how many tokens went through the model (``tokens()``) and the weight of their mean loss
(``label_weight()``), which the trainer uses to average validation losses over batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from surveysim_hf.texts import IGNORE_INDEX

__all__ = ["Batch", "PackedBatch", "PaddedBatch", "collate"]


@dataclass
class PaddedBatch:
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

    def to(self, device: torch.device | str) -> PaddedBatch:
        moved = {
            name: value.to(device) if isinstance(value, torch.Tensor) else value
            for name, value in self.__dict__.items()
        }
        return type(self)(**moved)

    def logits(self, model: Any) -> torch.Tensor:
        """The ordinary forward pass: logits ``(batch, seq, vocab)``, not shifted
        (``logits[b, t]`` predicts the token at ``t + 1``)."""
        return model(input_ids=self.input_ids, attention_mask=self.attention_mask).logits

    def label_tokens(self) -> int:
        """Tokens that carry a loss (labels shifted by one, as the loss sees them)."""
        return int((self.labels[:, 1:] != IGNORE_INDEX).sum())

    def tokens(self) -> int:
        """Tokens run through the model, padding excluded."""
        return int(self.attention_mask.sum())

    def label_weight(self) -> float:
        """The weight of this batch's mean loss when averaging over batches."""
        return float(self.label_tokens())


#: the names :class:`PackedBatch` answers to as a mapping (the keys of the dict it replaces)
_PACKED_KEYS = (
    "input_ids",
    "position_ids",
    "attention_mask",
    "labels",
    "predictor_index",
    "loss_weight",
    "answer_predictor",
    "inputs_embeds",
    "answers",
    "trie_index",
)


@dataclass(eq=False)
class PackedBatch(Mapping[str, Any]):
    """Packed tree sequences, right-padded (see :func:`surveysim_hf.packing.collate_packed`).

    It also reads as the read-only mapping it replaces (``batch["labels"]``, ``"answers" in
    batch``), so code written for the dict of earlier releases keeps working; fields that are
    None are absent from the mapping.
    """

    input_ids: torch.Tensor  # (B, L) long
    position_ids: torch.Tensor  # (B, L) long: depth in the tree
    attention_mask: torch.Tensor  # (B, 1, L, L) additive tree mask in the model's dtype
    labels: torch.Tensor  # (B, L) long, -100 where no loss is taken
    predictor_index: torch.Tensor  # (B, L) long: position whose logits predict the label, or -1
    loss_weight: torch.Tensor  # (B, L) float32: weight of each label in the mean loss
    #: (B, most branches) long: per branch, the position whose logits predict its first answer
    #: token, -1 for none
    answer_predictor: torch.Tensor | None = None
    #: (B, L, H) cached hidden states of frozen lower layers, used instead of ``input_ids``
    inputs_embeds: torch.Tensor | None = None
    #: the branches' examples in the order of ``answer_predictor >= 0`` (what each answer means)
    answers: PaddedBatch | None = None
    #: (B, K) long, only for sequences packed with answer tries
    #: (:func:`surveysim_hf.packing.pack_answer_tries`): per branch in the order of ``answers``,
    #: the position of its prompt's last token, then the position of each node of its answer
    #: trie (in trie order); -1 for none
    trie_index: torch.Tensor | None = None
    n_tokens: int = 0  # tokens of the packed sequences, padding excluded

    def __getitem__(self, key: str) -> Any:
        value = getattr(self, key, None) if key in _PACKED_KEYS else None
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return (key for key in _PACKED_KEYS if getattr(self, key) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def to(self, device: torch.device | str) -> PackedBatch:
        moved = {
            f.name: value.to(device)
            if isinstance(value := getattr(self, f.name), (torch.Tensor, PaddedBatch))
            else value
            for f in fields(self)
        }
        return type(self)(**moved)

    def tokens(self) -> int:
        """Tokens run through the model, padding excluded."""
        return self.n_tokens

    def label_weight(self) -> float:
        """The weight of this batch's mean loss when averaging over batches."""
        return float(self.loss_weight.sum())

    @classmethod
    def from_mapping(cls, batch: Mapping[str, Any]) -> PackedBatch:
        """A batch from the dict of earlier releases (``tokens`` becomes ``n_tokens``)."""
        if isinstance(batch, cls):
            return batch
        known = {key: batch[key] for key in _PACKED_KEYS if key in batch}
        return cls(**known, n_tokens=int(batch.get("tokens", 0)))


#: what a loss is called with
Batch = PaddedBatch | PackedBatch


def collate(encoded: Sequence[Any], examples: Sequence[Any], pad_token_id: int) -> PaddedBatch:
    """Right-pad encoded examples (see :mod:`surveysim_hf.texts`) into a :class:`PaddedBatch`."""
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
    return PaddedBatch(
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
