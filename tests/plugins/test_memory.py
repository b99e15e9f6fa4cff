"""Respondent memory: conversations in the order answered, packed as one chain, decoded with the
real earlier answers (known respondent) or the model's own (fully virtual); and the compact
persona."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from surveysim_hf.backend import HFBackend
from surveysim_hf.losses import CrossEntropyLoss
from surveysim_hf.options import HFOptions
from surveysim_hf.packing import is_conversation, pack_trie
from surveysim_hf.testing import tiny_tokenizer, write_tiny_model
from surveysim_hf.texts import encode_example, prompt_text

from surveysim_core.config import RunConfig
from surveysim_core.items import with_history
from surveysim_core.plan import plan_run
from surveysim_core.prompts import render_demographics_compact
from surveysim_core.protocols import Example, ItemSet, Prompt

QUESTIONS = ["Cars, 0-9? Score:", "Bikes, 0-9? Score:", "Rain, 0-9? Score:"]


def conversation(i: int) -> list[Example]:
    system = f"act as: {{age: {20 + i}}}"
    out, history = [], ()
    for q, question in enumerate(QUESTIONS):
        answer = str((i + 2 * q) % 10)
        out.append(
            Example(
                Prompt(system, question, history), answer, f"q{q}", float(answer), None, f"s{i}"
            )
        )
        history = (*history, (question, answer))
    return out


def test_with_history_follows_each_respondent_in_order():
    items = pd.DataFrame({"subject_id": ["a", "a", "a", "b", "b"], "seq": [0, 1, 2, 0, 1]})
    prompts = [Prompt("A", "q0"), Prompt("A", "q1"), Prompt("A", "q2"), Prompt("B", "q0"), Prompt("B", "q1")]  # fmt: skip
    out = with_history(prompts, items, ["5", "6", "7", "1", "2"])
    assert [p.history for p in out] == [
        (),
        (("q0", "5"),),
        (("q0", "5"), ("q1", "6")),
        (),
        (("q0", "1"),),
    ]
    assert [p.user for p in out] == [p.user for p in prompts]


def test_compact_persona_is_one_short_list():
    text = render_demographics_compact(
        {"age": "18-25", "household": ["My spouse", "My children"]}, {"age": "age"}
    )
    assert text == "age: 18-25; household: My spouse, My children"


def test_history_reaches_the_chat_text():
    tok = tiny_tokenizer()
    text = prompt_text(tok, conversation(1)[2].prompt)
    assert text.index("Cars, 0-9? Score:") < text.index("Bikes") < text.index("Rain")
    assert "<|im_start|>assistant\n1<|im_end|>" in text  # the first answer, as an assistant turn


def test_a_conversation_packs_as_one_chain():
    tok = tiny_tokenizer()
    rows = [
        {"input_ids": e.input_ids, "labels": e.labels, "answer_start": e.answer_start}
        for e in (encode_example(tok, x) for x in conversation(3))
    ]
    assert is_conversation(rows)
    assert not is_conversation(rows[:1])
    packed = pack_trie(rows)
    # the whole conversation costs the last example's length, not the sum of its prefixes
    assert len(packed["input_ids"]) == len(rows[-1]["input_ids"])
    assert packed["separate_tokens"] == sum(len(r["input_ids"]) for r in rows)
    # every example's answer digit is predicted from the token before it
    for row, predictor in zip(rows, packed["answer_predictor"], strict=True):
        assert packed["input_ids"][predictor + 1] == row["input_ids"][row["answer_start"]]
    assert sum(packed["loss_weight"]) == sum(
        sum(1 for y in r["labels"][1:] if y != -100) for r in rows
    )


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny-memory"))


def test_conversation_training_equals_separate_examples(tiny_model, tmp_path):
    def train(packing: bool, folder: str) -> dict:
        options = HFOptions(
            model=str(tiny_model), packing=packing, lora_dropout=0.0, learning_rate=1e-2,
            batch_size=9, eval_batch_size=9, epochs=1, progress_bars=False, seed=0,
        )  # fmt: skip
        train = [e for i in range(3) for e in conversation(i)]
        val = conversation(50)
        out = HFBackend(options, tmp_path / folder).fine_tune(
            train, val, CrossEntropyLoss(), tmp_path / folder / "adapter", False
        )
        return load_file(out / "adapter_model.safetensors")

    packed, separate = train(True, "packed"), train(False, "separate")
    for key in packed:
        torch.testing.assert_close(packed[key], separate[key], rtol=1e-4, atol=1e-6)
    assert any(float(v.abs().max()) > 0 for k, v in packed.items() if "lora_B" in k)


class HistoryModel:
    """Answers (number of earlier turns + 3) mod 10 with certainty, and records its prompts."""

    def __init__(self):
        self.seen: list[Prompt] = []

    def answer_distribution(self, prompts, answers, temperatures):
        self.seen += list(prompts)
        probs = np.zeros((len(prompts), len(answers)))
        for row, prompt in enumerate(prompts):
            probs[row, (len(prompt.history) + 3) % 10] = 1.0
        return {t: probs for t in temperatures}


def test_fully_virtual_respondents_carry_their_own_answers(tmp_path):
    from surveysim_core.plugins import get_plugins
    from surveysim_core.systems import LanguageModelSystem, _LazyBackend

    config = RunConfig.model_validate(
        {"survey": "evshift-0to9", "decoding": {"decoder": "exact"},
         "backend": {"name": "hf", "systems": ["zero_shot"]},
         "prompts": {"memory": True, "memory_at_evaluation": "virtual"}}
    )  # fmt: skip
    plugins = get_plugins()
    plan = plan_run(config, "test", plugins)
    variant = plan.lm_variants[0]
    backend = _LazyBackend(*variant.backend, tmp_path, plugins, lambda m: None)
    system = LanguageModelSystem(
        "zero_shot", backend, variant, plan, tmp_path / "adapter", False, lambda m: None
    )
    items = pd.DataFrame(
        {
            "subject_id": ["a", "a", "a", "b", "b"],
            "question": ["initial_preference"] + ["post_intervention_preference"] * 2
            + ["initial_preference", "post_intervention_preference"],
            "seq": [0, 1, 2, 0, 1],
            "answer": [9, 9, 9, 0, 0],  # real answers the virtual history must not show
        }
    )  # fmt: skip
    prompts = [Prompt(s, f"question {k}") for s, k in zip("aaabb", [0, 1, 2, 0, 1], strict=True)]
    test = ItemSet(items, pd.DataFrame(index=["a", "b"]), prompts, plan.answer_types)
    model = HistoryModel()
    answers = system._decode_virtual(model, test, [1.0])
    assert answers[1.0].codes.tolist() == [3, 4, 5, 3, 4]
    histories = {(p.system, p.user): p.history for p in model.seen}
    assert histories[("a", "question 2")] == (("question 0", "3"), ("question 1", "4"))
    assert histories[("b", "question 1")] == (("question 0", "3"),)
    assert answers[1.0].distribution.probs[2, 5] == 1.0


def test_a_conversation_longer_than_pack_max_tokens_is_split_between_turns():
    """Each turn extends the one before (respondent memory). Whole, the trie holds 1 + 3 + 3
    + 3 = 10 tokens; with a limit of 7 the first two turns (7 tokens) make one unit and the
    third, on its own, a second: each unit is the token trie of its turns, members in order."""
    from types import SimpleNamespace

    from surveysim_hf.packing import pack_trie
    from surveysim_hf.train import pack_by_respondent

    turns = [[1, 2, 3, 4], [1, 2, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]
    encoded = [
        SimpleNamespace(input_ids=t, labels=[-100] * (len(t) - 1) + [t[-1]],
                        answer_start=len(t) - 1, answer_length=1)
        for t in turns
    ]  # fmt: skip
    examples = [SimpleNamespace(subject_id="r1") for _ in turns]
    rows = [{"input_ids": e.input_ids, "labels": e.labels, "answer_start": e.answer_start,
             "answer_length": e.answer_length} for e in encoded]  # fmt: skip
    assert len(pack_trie(rows)["input_ids"]) == 10
    units = pack_by_respondent(encoded, examples, max_tokens=10)
    assert [u["members"] for u in units] == [[0, 1, 2]]
    units = pack_by_respondent(encoded, examples, max_tokens=7)
    assert [u["members"] for u in units] == [[0, 1], [2]]
    assert units[0]["input_ids"] == pack_trie(rows[:2])["input_ids"] == [1, 2, 3, 4, 5, 6, 7]
    assert units[1]["input_ids"] == pack_trie(rows[2:])["input_ids"]
