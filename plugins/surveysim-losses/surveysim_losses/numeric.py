"""``numeric_penalty``: the paper's numeric penalty on single-digit answers (0-9 scale).

For an example with true answer ``â`` (a digit) and every candidate answer ``a`` of its answer
type (the ten digits 0-9 on ``evshift-0to9``)::

    w(a, â) = 1 - |a - â| / d   if |a - â| < d, else 0
    L_pen   = - mean over examples of  sum_a [ w(a, â) / sum_a' w(a', â) ] * log p(a | x)
    L       = (1 - alpha) * CE + alpha * L_pen

``p(a | x)`` is the model's softmax over the **full vocabulary** at the first answer position
(the logits that predict the answer's token), read at the token of digit ``a``: probability
the model puts on non-digit tokens is not renormalised away, so the penalty also pushes the
model to answer with a digit. ``CE`` is the usual mean token cross-entropy over the label
tokens (:func:`surveysim_hf.losses.token_cross_entropy`), so ``alpha = 0`` is exactly
``cross_entropy``.
"""

from __future__ import annotations

from typing import Any

import torch
from surveysim_hf.batches import Batch, PackedBatch, PaddedBatch
from surveysim_hf.losses import Loss, token_cross_entropy
from surveysim_hf.packing import packed_cross_entropy, packed_logits

from surveysim_losses.kernel import triangular_weights
from surveysim_losses.options import NumericPenaltyOptions

DIGITS = "0123456789"


class SingleDigitError(ValueError):
    """The paper's penalty was given answers that are not single digits."""


def _hint(question: str, detail: str) -> str:
    return (
        f"numeric_penalty needs answers that are single digits 0-9 (one token each), but"
        f" question {question!r} {detail}. Rescale the answers (for the EV-shift survey:"
        " `survey: evshift-0to9`) or use `backend.loss.name: numeric_penalty_multitoken`,"
        " which scores whole multi-digit answers without rescaling."
    )


class NumericPenaltyLoss(Loss):
    """The paper's numeric penalty plus cross-entropy (see the module docstring)."""

    Options = NumericPenaltyOptions
    supports_packing = True

    def __init__(self, options: NumericPenaltyOptions | None = None):
        super().__init__(options or NumericPenaltyOptions())
        self.digit_ids: list[int] | None = None

    def prepare(self, tokenizer: Any) -> None:
        ids = []
        for digit in DIGITS:
            tokens = tokenizer(digit, add_special_tokens=False)["input_ids"]
            if len(tokens) != 1:
                raise SingleDigitError(
                    f"numeric_penalty needs every digit to be one token, but the tokenizer"
                    f" splits {digit!r} into {tokens}"
                )
            ids.append(int(tokens[0]))
        self.digit_ids = ids

    def support(self, batch: PaddedBatch) -> torch.Tensor:
        """``(batch, 10)`` bool: which digits are valid answers of each example's question."""
        valid = torch.zeros((len(batch.answer_codes), len(DIGITS)), dtype=torch.bool)
        for row, (code, length) in enumerate(
            zip(batch.answer_codes.tolist(), batch.answer_length.tolist(), strict=True)
        ):
            question = batch.questions[row] if batch.questions else "?"
            answer = batch.answer_types[row] if batch.answer_types else None
            codes = getattr(answer, "support", None)
            if codes is None:
                codes = list(range(10))
            codes = [float(c) for c in codes]
            outside = [c for c in codes if not (c.is_integer() and 0 <= c <= 9)]
            if outside:
                raise SingleDigitError(
                    _hint(question, f"has answers up to {max(codes):g} ({answer.describe()})")
                )
            if not (float(code).is_integer() and 0 <= code <= 9) or length != 1:
                raise SingleDigitError(_hint(question, f"has the answer {code:g}"))
            if float(code) not in codes:
                raise ValueError(f"answer {code:g} of question {question!r} is not a valid answer")
            valid[row, [int(c) for c in codes]] = True
        return valid

    def penalty(self, logits: torch.Tensor, batch: PaddedBatch) -> torch.Tensor:
        """``L_pen`` alone (mean over the batch's examples)."""
        rows = torch.arange(logits.size(0), device=logits.device)
        return self.penalty_at(logits[rows, batch.answer_start.to(logits.device) - 1], batch)

    def penalty_at(self, first: torch.Tensor, batch: PaddedBatch) -> torch.Tensor:
        """``L_pen`` from ``first`` ``(batch, V)``: each example's logits that predict its
        first answer token."""
        if self.digit_ids is None:
            raise RuntimeError("call prepare(tokenizer) before computing the loss")
        valid = self.support(batch).to(first.device)
        log_p = torch.log_softmax(first.float(), dim=-1)[:, self.digit_ids]  # full vocabulary
        answers = batch.answer_codes.to(first.device)
        digits = torch.arange(10, device=first.device)
        weights = triangular_weights(digits, answers, self.options.d) * valid
        weights = (weights / weights.sum(dim=1, keepdim=True)).to(log_p.dtype)
        return -(weights * log_p).sum(dim=1).mean()

    def combine(self, ce: torch.Tensor, pen: torch.Tensor) -> torch.Tensor:
        alpha = self.options.alpha
        return ce if alpha == 0 else (1 - alpha) * ce + alpha * pen

    def __call__(self, model: Any, batch: Batch) -> torch.Tensor:
        if isinstance(batch, PackedBatch):
            # one forward pass gives the label logits and each branch's first-answer logits
            labels, first = packed_logits(model, batch, batch.answer_predictor)
            return self.combine(
                packed_cross_entropy(labels, batch), self.penalty_at(first, batch.answers)
            )
        return self.from_logits(batch.logits(model), batch)

    def from_logits(self, logits: torch.Tensor, batch: PaddedBatch) -> torch.Tensor:
        """The loss of a padded batch from its ordinary logits ``(batch, seq, vocab)``."""
        # the penalty is computed even at alpha 0: it checks the answers
        return self.combine(token_cross_entropy(logits, batch.labels), self.penalty(logits, batch))
