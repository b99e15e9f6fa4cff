"""``numeric_penalty_multitoken``: exact full-string answer probabilities against brute force,
the loss formula by hand, cross-entropy equivalence, a gradient step, and training through the
``hf`` backend's extension point."""

from __future__ import annotations

import math

import pytest
import torch
from surveysim_hf.backend import HFBackend
from surveysim_hf.batches import PackedBatch, collate
from surveysim_hf.losses import CrossEntropyLoss
from surveysim_hf.options import HFOptions
from surveysim_hf.testing import write_tiny_model
from surveysim_hf.texts import encode_example
from surveysim_hf.train import read_train_log
from surveysim_losses.multitoken import AnswerSet, MultiTokenNumericPenaltyLoss, TrieScores
from surveysim_losses.options import MultiTokenNumericPenaltyOptions
from surveysim_std.answer_types import IntegerAnswer, IntegerOptions

from surveysim_core.protocols import Example, Prompt

ZERO_TO_TWELVE = IntegerAnswer(IntegerOptions(min=0, max=12))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = write_tiny_model(tmp_path_factory.mktemp("tiny"))
    return (
        folder,
        AutoModelForCausalLM.from_pretrained(folder),
        AutoTokenizer.from_pretrained(folder),
    )


def make_batch(tokenizer, answers, answer_type=ZERO_TO_TWELVE):
    examples = [
        Example(Prompt(f"persona {i}" * (1 + i % 2), "How much?"), a, "q", float(a), answer_type)
        for i, a in enumerate(answers)
    ]
    encoded = [encode_example(tokenizer, e) for e in examples]
    return examples, collate(encoded, examples, tokenizer.pad_token_id)


def loss(**options) -> MultiTokenNumericPenaltyLoss:
    return MultiTokenNumericPenaltyLoss(MultiTokenNumericPenaltyOptions(**options))


def brute_force_probability(model, tokenizer, prompt_ids, answer: str) -> float:
    """P(answer) by plain causal forward passes: the product of the answer's token
    probabilities times the probability that a token not beginning with a digit follows."""
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + answer_ids])
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=ids).logits[0].double(), -1)
    p = 1.0
    for k, token in enumerate(answer_ids):
        p *= float(probs[len(prompt_ids) - 1 + k, token])
    last = probs[-1]
    digit = [i for i in range(len(last)) if tokenizer.decode([i])[:1].isdigit()]
    return p * (1.0 - float(last[digit].sum()))


def test_answer_probabilities_equal_brute_force_full_strings(tiny):
    _, model, tokenizer = tiny
    _, batch = make_batch(tokenizer, ["3", "10", "12"])
    fn = loss()
    fn.prepare(tokenizer)
    with torch.no_grad():
        scores = fn.trie_scores(model, batch)
    for b in range(3):
        prompt_ids = batch.input_ids[b, : int(batch.answer_start[b])].tolist()
        assert scores.answer_sets[b].trie.answers == [str(a) for a in range(13)]
        exact = scores.log_probs[b].exp().double()
        brute = torch.tensor(
            [brute_force_probability(model, tokenizer, prompt_ids, str(a)) for a in range(13)],
            dtype=torch.float64,
        )
        assert torch.allclose(exact, brute, rtol=1e-4, atol=1e-9), (exact, brute)
    assert scores.true_index == [3, 10, 12]


def test_alpha_and_beta_zero_is_token_cross_entropy(tiny):
    _, model, tokenizer = tiny
    _, batch = make_batch(tokenizer, ["3", "10", "12", "0"])
    fn = loss(alpha=0.0, beta=0.0)
    fn.prepare(tokenizer)
    with torch.no_grad():
        plain = CrossEntropyLoss()(model, batch)
        multi = fn(model, batch)  # its own forward pass over prompt + answer trie
    assert float(multi) == pytest.approx(float(plain), rel=1e-5)


def test_loss_formula_by_hand():
    """Answers 0-4, d = 2, alpha = 0.5, beta = 0.3, one example with answer 1 and given
    P = (0.1, 0.4, 0.2, 0.1, 0.1) (0.1 left the answer set)."""
    probs = [0.1, 0.4, 0.2, 0.1, 0.1]
    answer_set = AnswerSet(None, torch.arange(5.0, dtype=torch.float64), 4.0, None, None, None)
    scores = TrieScores(
        log_probs=[torch.tensor(probs).log()],
        true_index=[1],
        answer_sets=[answer_set],
        token_nll_sum=torch.tensor(3.0),
        label_tokens=2,
    )
    batch = type("B", (), {"answer_codes": torch.tensor([1.0])})()
    # w: a=0: 1/2, a=1: 1, a=2: 1/2, a=3: 0 (|3-1| = d), a=4: 0; sum 2 -> 1/4, 1/2, 1/4
    pen = -(0.25 * math.log(0.1) + 0.5 * math.log(0.4) + 0.25 * math.log(0.2))
    # E over P renormalised on the answers (sum 0.9): (0*.1 + 1*.4 + 2*.2 + 3*.1 + 4*.1) / 0.9
    expected = (0.4 + 0.4 + 0.3 + 0.4) / 0.9
    dist = ((expected - 1) / 4) ** 2
    ce_tokens = 3.0 / 2
    got = loss(alpha=0.5, d=2, beta=0.3).loss_from_scores(scores, batch)
    assert float(got) == pytest.approx(0.5 * ce_tokens + 0.5 * pen + 0.3 * dist, rel=1e-6)
    got = loss(alpha=0.5, d=2, cross_entropy="exact").loss_from_scores(scores, batch)
    assert float(got) == pytest.approx(0.5 * -math.log(0.4) + 0.5 * pen, rel=1e-6)
    # d small: all weight on the true answer; d huge: nearly uniform over the five answers
    got = loss(alpha=1.0, d=0.5).loss_from_scores(scores, batch)
    assert float(got) == pytest.approx(-math.log(0.4), rel=1e-6)
    got = loss(alpha=1.0, d=1e7).loss_from_scores(scores, batch)
    assert float(got) == pytest.approx(-sum(math.log(p) for p in probs) / 5, rel=1e-5)


def test_a_gradient_step_raises_nearby_answers_more_than_far_ones(tiny):
    folder, _, tokenizer = tiny
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    for name, param in model.named_parameters():  # output layer only (see test_losses.py)
        param.requires_grad_(name.startswith("lm_head"))
    _, batch = make_batch(tokenizer, ["6"] * 4)
    fn = loss(alpha=0.5, d=3)
    fn.prepare(tokenizer)
    with torch.no_grad():
        before = torch.stack(fn.trie_scores(model, batch).log_probs).mean(0)
    fn(model, batch).backward()
    with torch.no_grad():
        model.lm_head.weight -= 0.05 * model.lm_head.weight.grad
        change = torch.stack(fn.trie_scores(model, batch).log_probs).mean(0) - before
    near, far = change[[5, 7]], change[[0, 1, 11, 12]]
    assert change[6] > 0 and near.min() > 0, change
    assert near.min() > far.max(), change


def test_multi_digit_answers_train_through_the_backend(tiny, tmp_path):
    folder, _, _ = tiny
    examples = [
        Example(Prompt(f"p{i}", "How much, 0-12?"), a, "q", float(a), ZERO_TO_TWELVE, f"s{i}")
        for i, a in enumerate(["10", "11", "9", "12"] * 4)
    ]
    backend = HFBackend(
        HFOptions(
            model=str(folder), epochs=1, batch_size=4, progress_bars=False, learning_rate=1e-2
        ),
        tmp_path,
    )
    adapter = backend.fine_tune(examples[:12], examples[12:], loss(), tmp_path / "adapter", False)
    rows = read_train_log(adapter / "train_log.csv")
    assert [r["split"] for r in rows] == ["train"] * 3 + ["val"]
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in rows)


def test_plain_logits_call_says_to_call_the_loss_with_the_model():
    # the 0.1 convention, deprecated: this loss cannot score given logits
    with pytest.warns(DeprecationWarning), pytest.raises(TypeError, match=r"loss\(model, batch\)"):
        loss()(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long), None)


def test_a_packed_batch_without_answer_tries_is_refused(tiny):
    # packed batches must come from the loss's pack_unit (test_losses_multitoken_packed.py)
    _, model, _ = tiny
    assert loss().supports_packing
    packed = PackedBatch(*(torch.zeros(1, 2, dtype=torch.long) for _ in range(6)))
    with pytest.raises(TypeError, match="answer tries"):
        loss()(model, packed)
