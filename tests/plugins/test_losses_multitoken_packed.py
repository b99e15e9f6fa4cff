"""``numeric_penalty_multitoken`` on packed respondents: one tree sequence per respondent (the
prompts as a token trie, every example's answer trie below its prompt) gives the loss and LoRA
gradients of the same examples padded, with and without the frozen-layer cache, and through a
whole ``fine_tune``; a wrong tree changes the loss, so the equalities are not vacuous."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from surveysim_hf.backend import HFBackend
from surveysim_hf.batches import collate
from surveysim_hf.forward import output_size
from surveysim_hf.frozen import frozen_split
from surveysim_hf.options import HFOptions
from surveysim_hf.packing import collate_packed
from surveysim_hf.testing import write_tiny_model
from surveysim_hf.texts import encode_example
from surveysim_hf.train import add_lora, pack_by_respondent, read_train_log
from surveysim_losses.multitoken import MultiTokenNumericPenaltyLoss
from surveysim_losses.options import MultiTokenNumericPenaltyOptions
from surveysim_std.answer_types import IntegerAnswer, IntegerOptions
from test_losses_multitoken import brute_force_probability

from surveysim_core.protocols import Example, Prompt

ZERO_TO_TWELVE = IntegerAnswer(IntegerOptions(min=0, max=12))
QUESTIONS = ["How much, 0-12?", "How many cars, 0-12?", "Rain, 0-12?"]
SETTINGS = [
    {"alpha": 0.0, "beta": 0.0},
    {"alpha": 0.5, "beta": 1.0, "d": 3},
    {"alpha": 0.5, "d": 3, "cross_entropy": "exact"},
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny4"), layers=4)


def respondents(n: int, start: int = 0, memory: bool = False) -> list[Example]:
    """``n`` respondents answering two or three questions (answers one or two digits)."""
    out = []
    for i in range(start, start + n):
        system = f"act as: {{age: {20 + i}, town: t{i % 3}}}"
        history: tuple[tuple[str, str], ...] = ()
        for q, question in enumerate(QUESTIONS[: 2 + i % 2]):
            answer = str((3 * i + 5 * q) % 13)
            prompt = Prompt(system, question, history if memory else ())
            out.append(Example(prompt, answer, f"q{q}", float(answer), ZERO_TO_TWELVE, f"s{i}"))
            history = (*history, (question, answer))
    return out


def multitoken(**options) -> MultiTokenNumericPenaltyLoss:
    return MultiTokenNumericPenaltyLoss(MultiTokenNumericPenaltyOptions(**options))


def lora_model(folder: Path, lora_layers: int | None = None):
    """The tiny model with LoRA adapters whose B matrices are random too, so that every adapter
    parameter gets a gradient (B starts at 0, which leaves A's gradient 0)."""
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(folder)
    model = add_lora(base, HFOptions(model=str(folder), lora_dropout=0.0, lora_layers=lora_layers))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(0.3 * torch.randn(param.shape, generator=generator))
    return model


def batches(model, tokenizer, examples, fn, loss_on="answer", max_tokens=4096):
    """The padded batch of ``examples`` and the same examples packed as the trainer packs them."""
    encoded = [encode_example(tokenizer, e, loss_on) for e in examples]
    padded = collate(encoded, examples, tokenizer.pad_token_id)
    vocab = output_size(model)
    units = pack_by_respondent(
        encoded, examples, max_tokens, lambda rows, chosen: fn.pack_unit(rows, chosen, vocab)
    )
    packed = collate_packed(units, tokenizer.pad_token_id, torch.float32)
    members = [m for u in units for m in u["members"]]
    packed.answers = collate(
        [encoded[m] for m in members], [examples[m] for m in members], tokenizer.pad_token_id
    )
    return padded, packed, units


def loss_and_grads(model, fn, batch, frozen=None):
    model.zero_grad(set_to_none=True)
    if frozen is not None:
        batch.inputs_embeds = frozen.lower_states(batch)
        with frozen.upper():
            value = fn(model, batch)
    else:
        value = fn(model, batch)
    value.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return float(value.detach()), grads


def assert_same(a: tuple[float, dict], b: tuple[float, dict]) -> None:
    assert a[0] == pytest.approx(b[0], rel=1e-5)
    assert a[1].keys() == b[1].keys() and a[1]
    for name in a[1]:
        # float32 sums in another order: equal within 1e-5 of the gradient's own scale
        scale = float(b[1][name].abs().max())
        assert float((a[1][name] - b[1][name]).abs().max()) <= 1e-5 * scale, name
    # every adapter matrix, A and B, gets a gradient: the comparison covers them all
    assert all(float(g.abs().max()) > 0 for g in a[1].values())


def test_layout_of_two_examples_by_hand():
    """Prompts "ABC" and "ABD", answers "12" and "2" on the answer set {1, 2, 12}, tail "E"."""
    from surveysim_hf.packing import pack_answer_tries
    from surveysim_hf.testing import tiny_tokenizer
    from surveysim_hf.tree import build_answer_trie

    tokenizer = tiny_tokenizer()
    A, B, C, D, E, one, two = (tokenizer.convert_tokens_to_ids(c) for c in "ABCDE12")
    trie = build_answer_trie(tokenizer, ["1", "2", "12"])
    # BFS: node 0 "1", node 1 "2" (both below the prompt), node 2 "2" below node 0 ("12")
    assert trie.token.tolist() == [one, two, two] and trie.parent.tolist() == [-1, -1, 0]
    first = {"input_ids": [A, B, C, one, two, E], "answer_start": 3, "answer_length": 2}
    second = {"input_ids": [A, B, D, two, E], "answer_start": 3, "answer_length": 1}
    for e in (first, second):  # labels on the answer and the tail (loss_on: answer)
        e["labels"] = [-100] * 3 + e["input_ids"][3:]
    unit = pack_answer_tries([first, second], [trie, trie], [2, 1])
    # A B C | "1" "2" "12" | E | D | "1" "2" "12" | E
    assert unit["input_ids"] == [A, B, C, one, two, two, E, D, one, two, two, E]
    assert unit["parents"] == [-1, 0, 1, 2, 2, 3, 5, 1, 7, 7, 8, 9]
    assert unit["position_ids"] == [0, 1, 2, 3, 3, 4, 5, 2, 3, 3, 4, 4]
    labelled = {i: y for i, y in enumerate(unit["labels"]) if y != -100}
    assert labelled == {3: one, 5: two, 6: E, 9: two, 11: E}
    assert unit["predictor_index"][3] == 2 and unit["predictor_index"][11] == 9
    assert unit["loss_weight"] == [0, 0, 0, 1, 0, 1, 1, 0, 0, 1, 0, 1]
    assert unit["trie_index"] == [[2, 3, 4, 5], [7, 8, 9, 10]]
    assert unit["answer_predictor"] == [2, 7]
    assert unit["separate_tokens"] == 14 and unit["n_branches"] == 2
    # whole-text loss: "B", labelled by both examples, counts twice; the root "A" never
    for e in (first, second):
        e["labels"] = list(e["input_ids"])
    unit = pack_answer_tries([first, second], [trie, trie], [2, 1])
    assert unit["loss_weight"] == [0, 2, 1, 1, 0, 1, 1, 1, 0, 1, 0, 1]
    with pytest.raises(ValueError, match="tokenised differently"):
        pack_answer_tries([first], [trie], [0])  # "1" is not the answer "12"


@pytest.mark.parametrize("loss_on", ["answer", "all"])
@pytest.mark.parametrize("settings", SETTINGS)
def test_packed_loss_and_gradients_equal_padded(tiny, settings, loss_on):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    model = lora_model(tiny)
    fn = multitoken(**settings)
    fn.prepare(tokenizer)
    examples = respondents(4)
    padded, packed, units = batches(model, tokenizer, examples, fn, loss_on)
    assert [len(u["members"]) for u in units] == [2, 3, 2, 3]
    assert_same(loss_and_grads(model, fn, packed), loss_and_grads(model, fn, padded))
    # the persona once per respondent: fewer tokens than the padded prompt + trie sequences
    assert packed.tokens() < 0.8 * sum(u["separate_tokens"] for u in units)


@pytest.mark.parametrize("settings", SETTINGS)
def test_frozen_layer_cache_gives_the_same_loss_and_gradients(tiny, settings):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    model = lora_model(tiny, lora_layers=2)
    fn = multitoken(**settings)
    fn.prepare(tokenizer)
    padded, packed, _ = batches(model, tokenizer, respondents(4), fn)
    frozen, why = frozen_split(model)
    assert frozen is not None and frozen.k == 2, why
    uncached = loss_and_grads(model, fn, packed)
    cached = loss_and_grads(model, fn, packed, frozen)
    assert packed.inputs_embeds.shape[:2] == packed.input_ids.shape  # trie tokens included
    assert_same(cached, uncached)
    assert_same(cached, loss_and_grads(model, fn, padded))
    assert all(".layers.2." in n or ".layers.3." in n for n in cached[1])


def test_a_respondent_longer_than_pack_max_tokens_is_split(tiny):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    model = lora_model(tiny)
    fn = multitoken(alpha=0.5, beta=1.0, d=3)
    fn.prepare(tokenizer)
    examples = respondents(2, start=1)  # three answers, then two
    _, whole, _ = batches(model, tokenizer, examples, fn)
    longest = int(whole.input_ids.shape[1])
    padded, packed, units = batches(model, tokenizer, examples, fn, max_tokens=longest - 1)
    assert [u["members"] for u in units] == [[0, 1], [2], [3, 4]]
    assert all(len(u["input_ids"]) < longest for u in units)
    assert_same(loss_and_grads(model, fn, packed), loss_and_grads(model, fn, padded))


def test_respondent_memory_packs_the_conversation_once(tiny):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    model = lora_model(tiny)
    fn = multitoken(alpha=0.5, beta=1.0, d=3)
    fn.prepare(tokenizer)
    padded, packed, units = batches(model, tokenizer, respondents(3, memory=True), fn)
    assert_same(loss_and_grads(model, fn, packed), loss_and_grads(model, fn, padded))
    # a three-turn conversation costs about its own length plus the tries, not its prefixes
    assert packed.tokens() < 0.6 * sum(u["separate_tokens"] for u in units)


def test_packed_answer_probabilities_equal_brute_force(tiny):
    """By hand: every P(a) read from the packed sequence equals the product of plain causal
    forward passes over ``prompt + a`` (the answer's tokens, then a non-digit)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    fn = multitoken()
    fn.prepare(tokenizer)
    examples = respondents(1, start=1)  # three questions of one respondent
    padded, packed, _ = batches(model, tokenizer, examples, fn)
    with torch.no_grad():
        scores = fn.packed_trie_scores(model, packed)
    assert scores.true_index == [int(e.answer_text) for e in examples]
    for b in range(len(examples)):
        prompt_ids = padded.input_ids[b, : int(padded.answer_start[b])].tolist()
        brute = [brute_force_probability(model, tokenizer, prompt_ids, str(a)) for a in range(13)]
        got = scores.log_probs[b].exp().double()
        torch.testing.assert_close(got, torch.tensor(brute, dtype=torch.float64), rtol=1e-4, atol=0)
        assert 0.05 < sum(brute) < 1.0 + 1e-9  # real probabilities, not vanishing ones


def test_a_wrong_tree_changes_the_loss(tiny):
    """Hang branch 1's answer trie below the other question's prompt (one parent index), or
    read its first answer token's logits there (one trie position): the loss moves by far more than
    the 1e-5 the equalities above allow, so they depend on the tree being right."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    model = lora_model(tiny)
    fn = multitoken(alpha=0.5, beta=1.0, d=3)
    fn.prepare(tokenizer)
    examples = respondents(3)
    assert [e.answer_text for e in examples[5:]] == ["6", "11"]  # respondent 2
    _, packed, units = batches(model, tokenizer, examples, fn)

    def loss_with(unit):
        batch = collate_packed([*units[:2], unit], tokenizer.pad_token_id, torch.float32)
        batch.answers = packed.answers
        with torch.no_grad():
            return float(fn(model, batch))

    right = loss_with(units[2])
    assert right == pytest.approx(float(fn(model, packed).detach()), rel=1e-6)
    unit = units[2]
    roots = [branch[0] for branch in unit["trie_index"]]
    nodes = unit["trie_index"][1][1:]  # branch 1's trie nodes: "0".."9", then "10".."12"
    one, eleven = nodes[1], nodes[11]
    assert unit["parents"][one] == roots[1] and unit["parents"][eleven] == one
    ids = tokenizer("11", add_special_tokens=False)["input_ids"]
    assert [unit["input_ids"][n] for n in (one, eleven)] == ids
    wrong = {**unit, "parents": list(unit["parents"])}
    wrong["parents"][one] = roots[0]  # "1" (and "11" below it) after question 0's prompt
    moved = loss_with(wrong)
    assert abs(moved - right) > 1e-4 * right, (moved, right)
    # branch 1's first answer token scored after question 0's prompt
    shifted = {**unit, "trie_index": [list(b) for b in unit["trie_index"]]}
    shifted["trie_index"][1][0] = roots[0]
    moved = loss_with(shifted)
    assert abs(moved - right) > 1e-4 * right, (moved, right)


def test_a_packed_batch_for_other_answers_is_an_error(tiny):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    model = lora_model(tiny)
    fn = multitoken()
    fn.prepare(tokenizer)
    _, packed, units = batches(model, tokenizer, respondents(2), fn)
    plain = collate_packed(units, tokenizer.pad_token_id, torch.float32)  # no answers
    with pytest.raises(TypeError, match="pack_unit"):
        fn(model, plain)
    ids = list(units[0]["input_ids"])
    ids[units[0]["trie_index"][0][3]] = tokenizer("x", add_special_tokens=False)["input_ids"][0]
    other = collate_packed([{**units[0], "input_ids": ids}, units[1]], 0, torch.float32)
    other.answers = packed.answers
    with pytest.raises(ValueError, match="trie tokens"):
        fn(model, other)


def fine_tune(folder: Path, run_dir: Path, packing: bool, lora_layers: int | None = None):
    options = HFOptions(
        model=str(folder),
        packing=packing,
        lora_layers=lora_layers,
        lora_dropout=0.0,
        learning_rate=1e-2,
        batch_size=10,  # one step = all 4 respondents' 10 answers, packed or not
        eval_batch_size=10,
        epochs=1,
        progress_bars=False,
        seed=0,
    )
    fn = multitoken(alpha=0.5, beta=1.0, d=3)
    return HFBackend(options, run_dir).fine_tune(
        respondents(4), respondents(2, 100), fn, run_dir / "adapter", False
    )


@pytest.mark.parametrize("lora_layers", [None, 2])
def test_fine_tune_packed_equals_separate_examples(tiny, tmp_path, capsys, lora_layers):
    separate = fine_tune(tiny, tmp_path / "separate", False, lora_layers)
    packed = fine_tune(tiny, tmp_path / "packed", True, lora_layers)
    out = capsys.readouterr().out
    # against the padded prompt + trie + tail sequences (13 trie nodes each on 0-12)
    saved = re.search(r"packed 10 examples into 4 respondent sequences \((\d+)% fewer", out)
    assert saved is not None and int(saved.group(1)) >= 25, out
    assert "does not support packed batches" not in out
    if lora_layers:
        assert "cached the output of 2 frozen layers" in out
    (s_train, s_val), (p_train, p_val) = (
        read_train_log(d / "train_log.csv") for d in (separate, packed)
    )
    assert p_train["loss"] == pytest.approx(s_train["loss"], rel=1e-5)
    assert p_val["loss"] == pytest.approx(s_val["loss"], rel=1e-5)
    # the padded run logs its texts' tokens, fewer than the tries it runs: still more
    assert p_train["tokens"] < s_train["tokens"]
    a = load_file(separate / "adapter_model.safetensors")
    b = load_file(packed / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-5, rtol=1e-4)
    assert max(float(a[k].abs().max()) for k in a if "lora_B" in k) > 1e-3  # the step moved it
