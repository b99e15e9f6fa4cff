"""Training texts, loss masking and the cross-entropy loss, on the tiny character tokenizer."""

from __future__ import annotations

import math

import pytest
import torch
from surveysim_hf.losses import CrossEntropyLoss, collate
from surveysim_hf.testing import tiny_tokenizer
from surveysim_hf.texts import IGNORE_INDEX, encode_example, end_of_turn, prompt_text

from surveysim_core.protocols import Example, Prompt

PROMPT = Prompt("act as {age: 30}", "How much? Score:")


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def example(answer: str = "63") -> Example:
    return Example(PROMPT, answer, "q1", float(answer), None, "s1")


def test_training_text_is_chat_prompt_then_answer_then_end_of_turn(tokenizer):
    encoded = encode_example(tokenizer, example("63"))
    text = tokenizer.decode(encoded.input_ids)
    expected_prompt = (
        "<|im_start|>system\nact as {age: 30}<|im_end|>\n"
        "<|im_start|>user\nHow much? Score:<|im_end|>\n<|im_start|>assistant\n"
    )
    assert prompt_text(tokenizer, PROMPT) == expected_prompt
    assert text == expected_prompt + "63<|im_end|>"
    assert end_of_turn(tokenizer, PROMPT) == "<|im_end|>"
    # one token per character: the answer span covers exactly "6", "3"
    start, length = encoded.answer_start, encoded.answer_length
    assert length == 2
    assert tokenizer.decode(encoded.input_ids[start : start + length]) == "63"


def test_loss_on_answer_masks_the_prompt(tokenizer):
    encoded = encode_example(tokenizer, example("63"), loss_on="answer")
    labelled = [i for i, label in enumerate(encoded.labels) if label != IGNORE_INDEX]
    assert labelled == list(range(encoded.answer_start, len(encoded.input_ids)))
    assert tokenizer.decode([encoded.labels[i] for i in labelled]) == "63<|im_end|>"
    everything = encode_example(tokenizer, example("63"), loss_on="all")
    assert everything.labels == everything.input_ids


def test_max_length_cuts_the_prompt_from_the_left_and_keeps_the_answer(tokenizer):
    encoded = encode_example(tokenizer, example("63"), max_length=10)
    assert len(encoded.input_ids) == 10 and encoded.truncated
    assert tokenizer.decode(encoded.input_ids[-3:]) == "63<|im_end|>"


def test_cross_entropy_is_the_mean_over_label_positions_only(tokenizer):
    examples = [example("63"), example("7")]
    encoded = [encode_example(tokenizer, e) for e in examples]
    batch = collate(encoded, examples, tokenizer.pad_token_id)
    torch.manual_seed(0)
    logits = torch.randn(*batch.input_ids.shape, len(tokenizer))
    # independent computation: an explicit loop over the positions that carry a label
    terms = []
    for b in range(batch.input_ids.size(0)):
        for t in range(1, batch.input_ids.size(1)):
            target = int(batch.labels[b, t])
            if target == IGNORE_INDEX:
                continue
            row = logits[b, t - 1]
            terms.append(-(row[target] - math.log(float(torch.exp(row).sum()))))
    assert len(terms) == 3 + 2 == batch.label_tokens()
    expected = sum(float(x) for x in terms) / len(terms)
    assert float(CrossEntropyLoss()(logits, batch.labels, batch)) == pytest.approx(
        expected, rel=1e-5
    )
    # the batch tells a loss where each answer is and what it means
    assert batch.answer_codes.tolist() == [63.0, 7.0]
    assert batch.answer_length.tolist() == [2, 1]
    first = batch.input_ids[1, batch.answer_start[1]]
    assert tokenizer.decode([int(first)]) == "7"


def test_by_default_no_text_is_cut_so_a_long_conversation_keeps_its_persona(tokenizer):
    from surveysim_hf.options import HFOptions

    limit = HFOptions().max_length
    assert limit is None
    long = Example(
        Prompt("act as {age: 30}" + " persona-start" * 200, "How much?"),
        "63",
        "q1",
        63.0,
        None,
        "s1",
    )
    encoded = encode_example(tokenizer, long, max_length=limit)
    assert not encoded.truncated
    assert "act as {age: 30}" in tokenizer.decode(encoded.input_ids[: encoded.answer_start])
    assert len(encoded.input_ids) > 2000  # longer than the old 512 default, uncut
