"""The paper's numeric penalty (``numeric_penalty``): hand-computed values, edge cases, errors,
and the direction of a gradient step on a tiny model."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from surveysim_hf.batches import PaddedBatch, collate
from surveysim_hf.losses import CrossEntropyLoss
from surveysim_hf.testing import tiny_tokenizer, write_tiny_model
from surveysim_hf.texts import encode_example
from surveysim_losses.numeric import NumericPenaltyLoss, SingleDigitError
from surveysim_losses.options import NumericPenaltyOptions
from surveysim_std.answer_types import IntegerAnswer, IntegerOptions

from surveysim_core.plugins import get_plugins
from surveysim_core.protocols import Example, Prompt

ZERO_TO_NINE = IntegerAnswer(IntegerOptions(min=0, max=9))
ZERO_TO_HUNDRED = IntegerAnswer(IntegerOptions(min=0, max=100, bin_width=10))
EOS, OTHER = 10, 11  # a 12-token vocabulary: ids 0-9 are the digits 0-9


class DigitTokenizer:
    """Digit ``k`` is token ``k``."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [int(c) for c in text]}


class FixedLogits:
    """A stand-in model whose ordinary forward pass returns the given logits."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        assert input_ids.shape == attention_mask.shape == self.logits.shape[:2]
        return SimpleNamespace(logits=self.logits)


def loss(**options) -> NumericPenaltyLoss:
    fn = NumericPenaltyLoss(NumericPenaltyOptions(**options))
    fn.prepare(DigitTokenizer())
    return fn


def hand_batch() -> tuple[torch.Tensor, PaddedBatch]:
    """Two examples, padded to 4 tokens.

    1. ``[OTHER, 7, EOS]``, answer 7 at index 1. Logits at position 0 are 0 except token 7 (ln 3)
       and OTHER (ln 2): Z = 10 * 1 + 3 + 2 = 15, p(7) = 3/15 = 1/5, p(any other digit) = 1/15.
       Position 1 (predicts EOS): 0 except EOS (ln 4): Z = 11 + 4 = 15, p(EOS) = 4/15.
    2. ``[OTHER, OTHER, 0, EOS]``, answer 0 at index 2. All logits 0: every p = 1/12.
    """
    logits = torch.zeros(2, 4, 12)
    logits[0, 0, 7] = math.log(3)
    logits[0, 0, OTHER] = math.log(2)
    logits[0, 1, EOS] = math.log(4)
    logits[0, 3] = torch.randn(12)  # padding: must not matter
    ids = torch.tensor([[OTHER, 7, EOS, OTHER], [OTHER, OTHER, 0, EOS]])
    labels = torch.tensor([[-100, 7, EOS, -100], [-100, -100, 0, EOS]])
    batch = PaddedBatch(
        input_ids=ids,
        attention_mask=torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]),
        labels=labels,
        answer_start=torch.tensor([1, 2]),
        answer_length=torch.tensor([1, 1]),
        answer_codes=torch.tensor([7.0, 0.0]),
        answer_types=[ZERO_TO_NINE, ZERO_TO_NINE],
        questions=["q", "q"],
        answer_texts=["7", "0"],
    )
    return logits, batch


def test_hand_computed_value_d3_alpha_half():
    logits, batch = hand_batch()
    # CE: mean over the 4 label tokens: -log(1/5), -log(4/15), -log(1/12), -log(1/12)
    ce = (math.log(5) + math.log(15 / 4) + 2 * math.log(12)) / 4
    # example 1, answer 7, d = 3: w(7) = 1, w(6) = w(8) = 2/3, w(5) = w(9) = 1/3, others 0;
    # sum 3 -> soft labels 1/3, 2/9, 2/9, 1/9, 1/9
    pen1 = -(1 / 3 * math.log(1 / 5) + (2 * 2 / 9 + 2 * 1 / 9) * math.log(1 / 15))
    # example 2, answer 0: w(0) = 1, w(1) = 2/3, w(2) = 1/3; sum 2 -> 1/2, 1/3, 1/6; p = 1/12
    pen2 = -(1 / 2 + 1 / 3 + 1 / 6) * math.log(1 / 12)
    pen = (pen1 + pen2) / 2
    fn = loss(alpha=0.5, d=3)
    assert float(fn.penalty(logits, batch)) == pytest.approx(pen, rel=1e-6)
    assert float(fn(FixedLogits(logits), batch)) == pytest.approx(0.5 * ce + 0.5 * pen, rel=1e-6)
    # alpha weights the two terms
    assert float(loss(alpha=0.2, d=3)(FixedLogits(logits), batch)) == pytest.approx(
        0.8 * ce + 0.2 * pen, rel=1e-6
    )


def test_alpha_zero_is_exactly_cross_entropy():
    _, batch = hand_batch()
    logits = torch.randn(2, 4, 12, generator=torch.Generator().manual_seed(1))
    plain = CrossEntropyLoss()(FixedLogits(logits), batch)
    assert torch.equal(loss(alpha=0.0, d=5)(FixedLogits(logits), batch), plain)


def test_small_d_is_minus_log_p_of_the_true_answer():
    logits, batch = hand_batch()
    # d <= 1: only |a - a_true| = 0 has weight; example 1: -log(1/5), example 2: -log(1/12)
    expected = (math.log(5) + math.log(12)) / 2
    for d in (1.0, 0.5):
        assert float(loss(alpha=1, d=d).penalty(logits, batch)) == pytest.approx(expected, 1e-6)


def test_large_d_is_nearly_uniform_and_d10_weights_every_answer():
    logits, batch = hand_batch()
    # d -> infinity: soft labels 1/10 on every digit
    uniform1 = (math.log(5) + 9 * math.log(15)) / 10
    uniform = (uniform1 + math.log(12)) / 2
    assert float(loss(d=1e7).penalty(logits, batch)) == pytest.approx(uniform, rel=1e-5)
    # the paper's d = 10 on 0-9: answer 0 gives 9 weight 1/10 > 0; weights 1 - k/10, sum 5.5
    pen2 = -sum((1 - k / 10) / 5.5 for k in range(10)) * math.log(1 / 12)
    # answer 7: distances 7, 6, 5, 4, 3, 2, 1, 0, 1, 2 sum to 31, so the weights sum to 10 - 3.1
    pen1 = -sum(
        (1 - abs(k - 7) / 10) / 6.9 * math.log(1 / 5 if k == 7 else 1 / 15) for k in range(10)
    )
    assert float(loss(d=10).penalty(logits, batch)) == pytest.approx((pen1 + pen2) / 2, 1e-6)


def test_multi_digit_answers_are_an_error_that_names_the_fixes():
    logits, batch = hand_batch()
    batch.answer_types = [ZERO_TO_HUNDRED, ZERO_TO_HUNDRED]
    batch.questions = ["initial_preference"] * 2
    with pytest.raises(SingleDigitError) as err:
        loss()(FixedLogits(logits), batch)
    message = str(err.value)
    assert "initial_preference" in message and "100" in message
    assert "survey: evshift-0to9" in message and "numeric_penalty_multitoken" in message
    # an answer of two tokens (without an answer type to say so) is caught too
    _, batch = hand_batch()
    batch.answer_types, batch.answer_codes = [None, None], torch.tensor([7.0, 55.0])
    with pytest.raises(SingleDigitError, match="55"):
        loss(alpha=0.0)(FixedLogits(logits), batch)


def test_registered_lazily_with_validated_options():
    plugins = get_plugins()
    cls = plugins.losses.get("numeric_penalty")
    assert cls is NumericPenaltyLoss
    assert plugins.losses.get("numeric_penalty_multitoken").__name__ == (
        "MultiTokenNumericPenaltyLoss"
    )
    assert NumericPenaltyOptions().alpha == 0.5 and NumericPenaltyOptions().d == 10
    with pytest.raises(ValueError, match="extra"):
        NumericPenaltyOptions(alhpa=0.3)
    fields = NumericPenaltyOptions.model_fields
    assert all(fields[name].description for name in ("alpha", "d"))


# -- a gradient step on a tiny model ---------------------------------------------------------------


def digit_log_probs(model, batch, digit_ids) -> torch.Tensor:
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    rows = torch.arange(len(batch.answer_start))
    return torch.log_softmax(logits[rows, batch.answer_start - 1], -1)[:, digit_ids].mean(0)


def test_a_gradient_step_moves_probability_toward_nearby_answers(tmp_path):
    from transformers import AutoModelForCausalLM

    folder = write_tiny_model(tmp_path / "tiny")
    tokenizer = tiny_tokenizer()
    digit_ids = [tokenizer.convert_tokens_to_ids(c) for c in "0123456789"]
    examples = [
        Example(Prompt(f"persona {i}", "How much, 0-9?"), "5", "q", 5.0, ZERO_TO_NINE, f"s{i}")
        for i in range(6)
    ]
    encoded = [encode_example(tokenizer, e) for e in examples]
    batch = collate(encoded, examples, tokenizer.pad_token_id)

    def change(fn) -> torch.Tensor:
        model = AutoModelForCausalLM.from_pretrained(folder)
        # train the output layer only: in a random 2-layer model a step on every weight moves all
        # logits together through the shared hidden state, which hides what the loss asks for
        for name, param in model.named_parameters():
            param.requires_grad_(name.startswith("lm_head"))
        fn.prepare(tokenizer)
        before = digit_log_probs(model, batch, digit_ids).detach()
        fn(model, batch).backward()
        with torch.no_grad():
            model.lm_head.weight -= 0.05 * model.lm_head.weight.grad
        return digit_log_probs(model, batch, digit_ids).detach() - before

    penalty = change(NumericPenaltyLoss(NumericPenaltyOptions(alpha=0.5, d=3)))
    plain = change(CrossEntropyLoss())
    near = penalty[[4, 6]]
    far = penalty[[0, 1, 8, 9]]
    assert penalty[5] > 0 and near.min() > 0, penalty  # the true answer and its neighbours rise
    assert near.min() > far.max(), penalty  # ... more than far answers
    # cross-entropy alone does not favour the neighbours: they move like far answers
    assert (near.mean() - far.mean()) > 5 * abs(plain[[4, 6]].mean() - plain[[0, 1, 8, 9]].mean())
