"""The exact decoder for option labels: the tiny model of ``surveysim_hf.testing``, briefly
trained to answer a three-option question, against one full forward pass per spelling."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from surveysim_hf.generation import HFModel
from surveysim_hf.labels import answer_trie, build_label_trie
from surveysim_hf.testing import tiny_tokenizer, write_tiny_model
from surveysim_hf.texts import prompt_text
from surveysim_std.answer_types import CategoricalAnswer, CategoricalOptions
from surveysim_std.decoders import ExactDecoder, option_strings
from surveysim_std.parsers import choice, first_integer

from surveysim_core.option_order import displayed_options
from surveysim_core.protocols import Prompt

# "Yes" is a prefix of "Yes, strongly": an internal trie node that is also an answer
LABELS = ["Yes", "Yes, strongly", "No"]
# every spelling the choice parser reads as each option, written out by hand
SPELLINGS = {
    0: ["Yes", "yes", "YES"],
    1: ["Yes, strongly", "yes, strongly", "YES, STRONGLY"],
    2: ["No", "no", "NO"],
}
PERSONAS = ["an old farmer", "a young nurse", "a teacher"]
QUESTION = "Do you like trains?"
SINGLE = SimpleNamespace(num_processes=1, is_local_main_process=True)
TEMPERATURES = [1.0, 0.7, 0.0]


def answer_type() -> CategoricalAnswer:
    return CategoricalAnswer(CategoricalOptions(options=LABELS))


def parse_choice(text: str) -> float | None:
    return choice(text, answer_type())


def user_text(shown: list[str]) -> str:
    lines = "\n".join(f"- {label}" for label in shown)
    return f"{QUESTION}\n{lines}\nAnswer:"


def chat(persona: str, shown: list[str]) -> str:
    """The prompt as the tiny tokenizer's ChatML template writes it, spelled out by hand."""
    return (
        f"<|im_start|>system\nYou are {persona}.<|im_end|>\n"
        f"<|im_start|>user\n{user_text(shown)}<|im_end|>\n<|im_start|>assistant\n"
    )


def answer_for(rng: random.Random, persona: str) -> str:
    """Each persona prefers one option; some answers are in lower or upper case."""
    r = rng.random()
    preferred = {PERSONAS[0]: "Yes", PERSONAS[1]: "Yes, strongly", PERSONAS[2]: "No"}[persona]
    if r < 0.5:
        return preferred
    if r < 0.65:
        return preferred.lower()
    if r < 0.75:
        return preferred.upper()
    return rng.choice(LABELS)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny model, trained for 150 small steps so that every option gets real mass."""
    from transformers import AutoModelForCausalLM

    folder = write_tiny_model(tmp_path_factory.mktemp("tiny-labels"))
    tok = tiny_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rng = random.Random(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(150):
        texts = []
        for _ in range(16):
            persona = rng.choice(PERSONAS)
            shown = rng.sample(LABELS, len(LABELS))
            texts.append(chat(persona, shown) + answer_for(rng, persona) + "<|im_end|>")
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        loss = model(**enc, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    yield model, tok
    torch.set_num_threads(threads)


@torch.no_grad()
def brute_force(model, tok, prompt: str, text: str, t: float) -> float:
    """P_t(text, then end of turn) from one ordinary forward pass over prompt + text."""
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    a_ids = tok(text, add_special_tokens=False)["input_ids"]
    stop = tok.convert_tokens_to_ids("<|im_end|>")
    logits = model(input_ids=torch.tensor([p_ids + a_ids])).logits[0, len(p_ids) - 1 :]
    lp = torch.log_softmax(logits.double() / t, -1)
    path = sum(float(lp[k, a]) for k, a in enumerate(a_ids))
    return float(np.exp(path + float(lp[len(a_ids), stop])))


def prompts_and_orders() -> list[tuple[Prompt, str]]:
    """Each persona sees the survey's order and two permuted orders (one from the core's
    seeded shuffle): (prompt, its full text spelled out by hand)."""
    out = []
    answer = answer_type()
    orders = [list(LABELS), [LABELS[2], LABELS[0], LABELS[1]]]
    for persona in PERSONAS:
        shuffled = displayed_options(answer, "shuffled", persona, "q", seed=3)
        for shown in [*orders, shuffled]:
            out.append((Prompt(f"You are {persona}.", user_text(shown)), chat(persona, shown)))
    shown = [p.user for p, _ in out]
    assert len(set(shown)) >= 4  # the seeded shuffles add orders beyond the two listed
    return out


def test_option_strings_are_the_spellings_the_parser_reads():
    strings, index = option_strings(answer_type(), parse_choice)
    assert dict(zip(strings, index.tolist(), strict=True)) == {
        s: j for j, spellings in SPELLINGS.items() for s in spellings
    }
    # a template that numbers the options 0..k-1, read by first_integer: only the numbers count
    strings, index = option_strings(answer_type(), lambda s: first_integer(s, answer_type()))
    assert dict(zip(strings, index.tolist(), strict=True)) == {"0": 0, "1": 1, "2": 2}


def test_exact_option_distribution_equals_full_forward_passes(trained):
    model, tok = trained
    hf = HFModel(model, tok, SINGLE, batch_size=4, progress_bars=False)
    assert hf.stop_ids == {tok.convert_tokens_to_ids("<|im_end|>")}
    cases = prompts_and_orders()
    prompts = [p for p, _ in cases]
    for p, text in cases:
        assert prompt_text(tok, p) == text  # the hand-written layout is the model's
    decoded = ExactDecoder().decode(
        hf, prompts, answer_type(), parse_choice, TEMPERATURES, max_new_tokens=20, seed=0
    )
    for t in (1.0, 0.7):
        expected = np.array(
            [
                [sum(brute_force(model, tok, text, s, t) for s in SPELLINGS[j]) for j in range(3)]
                for _, text in cases
            ]
        )
        got = decoded[t].distribution.probs
        assert decoded[t].distribution.exact
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-4)
        # not vacuous: every option (the prefix "Yes" and its extension included) carries real
        # mass somewhere, and most generations are an answer
        assert (expected.max(axis=0) > 0.05).all(), expected
        assert expected.sum(axis=1).min() > 0.5, expected
    # columns are the survey's options whatever order the prompt showed: the persona's
    # preferred option wins in every order
    codes = decoded[1.0].codes.reshape(len(PERSONAS), -1)
    assert (codes == np.array([[0], [1], [2]])).all(), codes


def test_exact_greedy_equals_generate_and_parse(trained):
    model, tok = trained
    hf = HFModel(model, tok, SINGLE, batch_size=4, progress_bars=False)
    prompts = [p for p, _ in prompts_and_orders()]
    decoded = ExactDecoder().decode(
        hf, prompts, answer_type(), parse_choice, [0.0], max_new_tokens=20, seed=0
    )
    texts = hf.generate(prompts, temperature=0.0, max_new_tokens=20, seed=0)
    parsed = np.array([np.nan if (c := parse_choice(x)) is None else c for x in texts])
    np.testing.assert_array_equal(decoded[0.0].codes, parsed)
    assert np.isfinite(parsed).all()  # not vacuous: greedy answers an option everywhere


def test_label_trie_counts_a_token_sequence_once_and_refuses_stop_tokens():
    tok = tiny_tokenizer()
    stop = [tok.convert_tokens_to_ids("<|im_end|>")]
    # two labels whose unknown characters both tokenise to <unk>: one generation, kept once
    trie, columns = build_label_trie(tok, ["No", "Caf\u00e9", "Caf\u00fc"], stop)
    assert trie.answers == ["No", "Caf\u00e9"] and columns.tolist() == [0, 1]
    # the prefix label is an answer node inside the longer label's path
    trie, _ = build_label_trie(tok, LABELS, stop)
    node = trie.answer_node[0]
    assert trie.answer[node] == 0 and node in trie.parent  # "Yes" has a child ","
    assert trie.terminal_mask.nonzero().flatten().tolist() == stop
    with pytest.raises(ValueError, match="stop token"):
        build_label_trie(tok, ["Yes<|im_end|>", "No"], stop)
    # digit strings keep the digit trie (a number ends at any non-digit token)
    trie, _ = answer_trie(tok, ["1", "2", "10"], stop)
    assert trie.continuation_ids is not None and bool(
        trie.terminal_mask[tok.convert_tokens_to_ids("a")]
    )
