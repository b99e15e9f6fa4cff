"""``HFModel.answer_distribution`` (exact decoder) against ``HFModel.generate`` (the sampler)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
from test_tree_fixtures import (  # noqa: F401  (one_thread is an autouse fixture)
    PERSONAS,
    WORDS,
    make_model,
    make_tokenizer,
    one_thread,
    question_text,
    system_text,
)

# isort: split
from surveysim_hf.generation import HFModel

from surveysim_core.protocols import Prompt

ANSWERS = [str(i) for i in range(101)]
SINGLE = SimpleNamespace(num_processes=1, is_local_main_process=True)


class RawPromptModel(HFModel):
    """The fixtures' prompts are already in chat layout: tokenise system + user as is."""

    def prompt_ids(self, prompts):
        return [
            self.tokenizer(p.system + p.user, add_special_tokens=False)["input_ids"]
            for p in prompts
        ]


def hf_model(batch_size: int = 64) -> HFModel:
    tok = make_tokenizer()
    model = RawPromptModel(make_model("eager"), tok, SINGLE, batch_size, progress_bars=False)
    model.stop_ids = {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")}
    return model


def leading_answer(text: str) -> int:
    """Index of the answer the generation begins with (-1: none or outside 0..100)."""
    m = re.match(r"\d+", text)
    return (
        int(m.group()) if m and str(int(m.group())) == m.group() and int(m.group()) <= 100 else -1
    )


def prompts_of(personas, words) -> list[Prompt]:
    return [Prompt(system_text(p), question_text(w)) for p in personas for w in words]


def test_sampling_through_generate_agrees_with_answer_distribution():
    """Issue item 2 through the production sampler: 800 ancestral samples of one prompt per
    temperature (each copy has its own random stream) vs the exact distribution. Categories:
    answers with expected count >= 5, the other answers, and "left the answer set". Tolerance:
    chi-square p-value > 1e-3 and total variation over these categories < 0.1 (sampling noise
    alone gives about 0.05 here: ~20 categories of a few per cent at n = 800)."""
    from scipy import stats

    model = hf_model()
    prompt = prompts_of(PERSONAS[:1], WORDS[:1])[0]
    exact = model.answer_distribution([prompt], ANSWERS, [1.0, 0.7])
    n = 800
    for t in (1.0, 0.7):
        texts = model.generate([prompt] * n, temperature=t, max_new_tokens=4, seed=11)
        got = np.array([leading_answer(x) for x in texts])
        p = exact[t][0]
        big = np.nonzero(p * n >= 5)[0]
        expected = np.concatenate([p[big], [p.sum() - p[big].sum(), max(0.0, 1 - p.sum())]])
        observed = np.concatenate(
            [
                [np.sum(got == a) for a in big],
                [np.sum(~np.isin(got, big) & (got >= 0))],
                [np.sum(got < 0)],
            ]
        )
        keep = expected * n > 1e-9
        chi = stats.chisquare(observed[keep], expected[keep] / expected[keep].sum() * n)
        assert chi.pvalue > 1e-3, (t, chi)
        tv = 0.5 * np.abs(observed / n - expected).sum()
        assert tv < 0.1, (t, tv)
        assert p.sum() > 0.3 and len(big) >= 3  # not vacuous: real mass on several answers


def test_greedy_generate_equals_exact_greedy_and_order_is_kept():
    model = hf_model(batch_size=4)
    # question-major order (as the run passes them): sorting by persona must be undone
    prompts = [Prompt(system_text(p), question_text(w)) for w in WORDS for p in PERSONAS]
    exact = model.answer_distribution(prompts, ANSWERS, [0.0, 1.0])
    texts = model.generate(prompts, temperature=0.0, max_new_tokens=4, seed=0)
    greedy = [leading_answer(x) for x in texts]
    onehot = exact[0.0]
    assert onehot.shape == (len(prompts), 101)
    got = [int(row.argmax()) if row.sum() > 0 else -1 for row in onehot]
    assert got == greedy
    assert sum(g >= 0 for g in greedy) >= 3  # not vacuous
    # rows follow the input order: each equals the prompt answered alone
    for i in (0, 7, len(prompts) - 1):
        alone = model.answer_distribution([prompts[i]], ANSWERS, [1.0])[1.0][0]
        np.testing.assert_allclose(exact[1.0][i], alone, atol=2e-6)


def test_prefix_sharing_saves_tokens():
    shared, plain = hf_model(), hf_model()
    prompts = prompts_of(PERSONAS, WORDS)
    a = shared.answer_distribution(prompts, ANSWERS, [1.0])
    b = plain.answer_distribution(prompts, ANSWERS, [1.0], share_prefix=False)
    np.testing.assert_allclose(a[1.0], b[1.0], atol=2e-6)
    # each persona's system turn once per packed group (groups of at most 1024 tokens): 3030
    # instead of 3708 positions with these short prompts and 101-answer tries
    assert shared.exact_tokens < 0.9 * plain.exact_tokens


@pytest.mark.parametrize("world", [2])
def test_split_between_processes_keeps_personas_together(world, monkeypatch):
    """Two fake processes: each answers a contiguous run of the persona-sorted order."""
    from contextlib import contextmanager

    seen: list[list[int]] = []

    @contextmanager
    def split(items):
        per = -(-len(items) // world)
        for r in range(world):
            seen.append(list(items[r * per : (r + 1) * per]))
        yield seen[0] + seen[1]  # one process that plays both ranks

    model = hf_model()
    model.accelerator = SimpleNamespace(
        num_processes=world, is_local_main_process=True, split_between_processes=split
    )
    monkeypatch.setattr("accelerate.utils.gather_object", lambda pairs: pairs)
    prompts = [Prompt(system_text(p), question_text(w)) for w in WORDS[:2] for p in PERSONAS]
    got = model.answer_distribution(prompts, ANSWERS, [1.0])[1.0]
    one = hf_model().answer_distribution(prompts, ANSWERS, [1.0])[1.0]
    np.testing.assert_allclose(got, one, atol=2e-6)
    systems = [{prompts[i].system for i in part} for part in seen]
    assert len(systems[0] & systems[1]) <= 1  # at most one persona straddles the cut


def test_forward_tokens_count_every_position_run_while_answering():
    model = hf_model(batch_size=2)
    prompts = prompts_of(PERSONAS[:2], WORDS[:1])
    ids = model.prompt_ids(prompts)
    texts = model.generate(prompts, temperature=1.0, max_new_tokens=3, seed=0)
    steps = max(len(model.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    # one batch of two: the padded prompt, then one position per row for each later step
    # (a step that generated a stop token is counted, the decoded text does not hold it)
    width = max(len(i) for i in ids)
    assert model.generated_tokens in {2 * (width + s - 1) for s in (steps, min(steps + 1, 3))}
    assert model.forward_tokens == model.generated_tokens
    model.answer_distribution(prompts, ANSWERS, [1.0])
    assert model.exact_tokens > 0
    assert model.forward_tokens == model.generated_tokens + model.exact_tokens
