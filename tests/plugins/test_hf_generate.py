"""Answering: greedy determinism, seeded sampling, the sampling distribution, left padding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from surveysim_hf.backend import HFBackend
from surveysim_hf.generation import generate_ids
from surveysim_hf.options import HFOptions
from surveysim_hf.testing import write_tiny_model

from surveysim_core.protocols import Prompt

PROMPTS = [Prompt(f"act as {{age: {i}}}", "How much" + "?" * (i % 4) + " Score:") for i in range(7)]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = write_tiny_model(tmp_path_factory.mktemp("tiny"))
    options = HFOptions(model=str(folder), progress_bars=False, generation_batch_size=3)
    return HFBackend(options, Path(tmp_path_factory.mktemp("run"))).load(None)


def test_greedy_is_deterministic_and_independent_of_batching(model):
    first = model.generate(PROMPTS, 0.0, 8, seed=0)
    assert len(first) == len(PROMPTS)
    assert model.generate(PROMPTS, 0.0, 8, seed=123) == first  # the seed does not matter
    model.batch_size = 1
    try:
        one_by_one = model.generate(PROMPTS, 0.0, 8, seed=0)
    finally:
        model.batch_size = 3
    assert one_by_one == first  # left padding does not change the answers


def test_greedy_matches_an_explicit_argmax_loop(model):
    ids = model.prompt_ids(PROMPTS[:1])[0]
    expected = []
    sequence = torch.tensor([ids])
    with torch.no_grad():
        for _ in range(5):
            token = int(model.model(input_ids=sequence).logits[0, -1].argmax())
            expected.append(token)
            if token in model.stop_ids:
                break
            sequence = torch.cat([sequence, torch.tensor([[token]])], dim=1)
    got = generate_ids(
        model.model, [ids], [0], 0.0, 5, model.tokenizer.pad_token_id, model.stop_ids
    )[0]
    assert got == expected


def test_sampling_is_seeded(model):
    a = model.generate(PROMPTS, 1.0, 8, seed=1)
    assert model.generate(PROMPTS, 1.0, 8, seed=1) == a
    assert model.generate(PROMPTS, 1.0, 8, seed=2) != a
    model.batch_size = 1
    try:
        assert model.generate(PROMPTS, 1.0, 8, seed=1) == a  # per-prompt random streams
    finally:
        model.batch_size = 3
    # a prompt's answer does not depend on the other prompts in the call
    assert model.generate(PROMPTS[:3], 1.0, 8, seed=1) == a[:3]


def test_max_new_tokens_is_respected(model):
    ids = model.prompt_ids(PROMPTS)
    new = generate_ids(model.model, ids, range(len(ids)), 1.0, 3, 0, set())
    assert all(len(tokens) == 3 for tokens in new)


class FixedLogits(torch.nn.Module):
    """A 'model' whose next-token logits are always the same, to check the sampler."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None, position_ids=None, **kwargs):
        batch, length = input_ids.shape
        out = self.logits.expand(batch, length, -1)
        return type("Out", (), {"logits": out, "past_key_values": None})()


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_sampling_draws_from_softmax_over_temperature(temperature):
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    n = 4000
    new = generate_ids(FixedLogits(logits), [[0]] * n, range(n), temperature, 1, 0, set())
    counts = torch.bincount(torch.tensor([t[0] for t in new]), minlength=4).double()
    weights = [pow(2.718281828459045, float(x) / temperature) for x in logits]
    expected = torch.tensor([w / sum(weights) for w in weights], dtype=torch.float64)
    observed = counts / n
    # four-sigma band of a binomial proportion
    sigma = (expected * (1 - expected) / n).sqrt()
    assert ((observed - expected).abs() <= 4 * sigma + 1e-9).all(), (observed, expected)


def test_zero_temperature_never_samples():
    logits = torch.tensor([0.1, 0.3, 0.2])
    new = generate_ids(FixedLogits(logits), [[0]] * 10, range(10), 0.0, 2, 0, set())
    assert new == [[1, 1]] * 10


def test_answer_distribution_is_exact_for_single_token_answers(model):
    answers = [str(d) for d in range(10)]
    dist = model.answer_distribution(PROMPTS[:2], answers, [1.0, 0.0])
    assert dist[1.0].shape == (2, 10) and dist[0.0].shape == (2, 10)
    # independent check: P(d) = p(d | prompt) * p(a non-digit follows | prompt, d)
    digit_ids = [model.tokenizer.convert_tokens_to_ids(a) for a in answers]
    ids = model.prompt_ids(PROMPTS[:1])[0]
    with torch.no_grad():
        first = torch.softmax(model.model(input_ids=torch.tensor([ids])).logits[0, -1], -1)
        expected = []
        for d in digit_ids:
            after = model.model(input_ids=torch.tensor([[*ids, d]])).logits[0, -1]
            p_after = torch.softmax(after, -1)
            p_stop = 1.0 - float(p_after[digit_ids].sum())
            expected.append(float(first[d]) * p_stop)
    assert dist[1.0][0].tolist() == pytest.approx(expected, rel=1e-4, abs=1e-7)
