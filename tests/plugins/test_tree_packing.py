"""Prefix-shared packed training equals separate examples (loss and LoRA gradients)."""

from __future__ import annotations

import pytest
import torch
from test_tree_fixtures import (  # noqa: F401  (one_thread is an autouse fixture)
    PERSONAS,
    WORDS,
    make_lora_model,
    make_model,
    make_tokenizer,
    one_thread,
)

# isort: split
from surveysim_hf.packing import (
    collate_packed,
    examples_from_chat,
    pack_examples,
    pack_respondent,
    packed_logits,
    packed_loss,
)

peft = pytest.importorskip("peft")

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# three branches of different lengths per respondent
QA = [("how much do you like cars? score:", "7"), ("rain? score:", "100"),
      ("how much do you like trains and heat? score:", "42")]  # fmt: skip


def _tok():
    tok = make_tokenizer()
    tok.chat_template = CHATML
    return tok


def _lora_model(seed=0):
    return make_lora_model(["q_proj", "v_proj", "down_proj"], steps=20, seed=5, lora_seed=seed)


def _separate_loss_and_grads(model, examples, pad_id):
    length = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), length), pad_id)
    att = torch.zeros_like(ids)
    lab = torch.full_like(ids, -100)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n] = torch.tensor(e["input_ids"])
        att[i, :n] = 1
        lab[i, :n] = torch.tensor(e["labels"])
    model.zero_grad()
    loss = model(input_ids=ids, attention_mask=att, labels=lab).loss
    loss.backward()
    return loss.detach(), _grads(model)


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _packed_loss_and_grads(model, packed, pad_id):
    model.zero_grad()
    loss = packed_loss(model, collate_packed(packed, pad_token_id=pad_id))
    loss.backward()
    return loss.detach(), _grads(model)


def _compare(a, b):
    (la, ga), (lb, gb) = a, b
    torch.testing.assert_close(la, lb, atol=1e-5, rtol=1e-5)
    assert ga.keys() == gb.keys() and len(ga) > 0
    for k in ga:
        scale = ga[k].abs().max().clamp_min(1e-6)
        assert ((ga[k] - gb[k]).abs().max() / scale) < 2e-5, k


@pytest.mark.parametrize("loss_on", ["answer", "all"])
def test_packed_equals_separate(loss_on):
    tok, model = _tok(), _lora_model()
    resp = [
        examples_from_chat(tok, f"you are a {p}.", QA[: 3 if j == 0 else 2][::-1] if j else QA,
                           loss_on=loss_on)
        for j, p in enumerate(PERSONAS[:2])
    ]  # fmt: skip
    packed = [pack_examples(r) for r in resp]
    assert [p["n_branches"] for p in packed] == [3, 2]
    # the prefix is shared: the system turn and the start of the user turn
    pre = len(tok(f"<|im_start|>system\nyou are a {PERSONAS[0]}.<|im_end|>\n<|im_start|>user\n",
                  add_special_tokens=False)["input_ids"])  # fmt: skip
    assert packed[0]["position_ids"].count(pre) == 3  # each branch restarts after the prefix
    assert len(packed[0]["input_ids"]) < packed[0]["separate_tokens"] - pre
    flat = [e for r in resp for e in r]
    sep = _separate_loss_and_grads(model, flat, tok.pad_token_id)
    pk = _packed_loss_and_grads(model, packed, tok.pad_token_id)
    _compare(sep, pk)
    # one respondent alone, too
    _compare(
        _separate_loss_and_grads(model, resp[0], tok.pad_token_id),
        _packed_loss_and_grads(model, packed[:1], tok.pad_token_id),
    )


def test_prefix_loss_once_and_branch_first_token_labels():
    tok, model = _tok(), _lora_model(1)
    ex = examples_from_chat(tok, "you are a old farmer.", QA, loss_on="all")
    once = pack_examples(ex, prefix_loss="once")
    per = pack_examples(ex)
    n_pre = sum(1 for p, w in zip(once["parents"], once["loss_weight"], strict=True)
                if w > 0 and p >= 0 and once["position_ids"][p] < 20)  # fmt: skip
    assert n_pre > 0 and sum(per["loss_weight"]) > sum(once["loss_weight"])
    # the first token of every branch is labelled and predicted from the prefix end
    firsts = [i for i, p in enumerate(per["parents"]) if i > 0 and p != i - 1]
    assert len(firsts) == 2 and all(per["predictor_index"][i] == per["parents"][i] for i in firsts)
    with torch.no_grad():
        a = packed_loss(model, collate_packed([once], pad_token_id=0))
        b = packed_loss(model, collate_packed([per], pad_token_id=0))
    assert torch.isfinite(a) and torch.isfinite(b) and a != b


def test_manual_prefix_len_and_chunking():
    tok, model = _tok(), _lora_model(2)
    ex = examples_from_chat(tok, "you are a young city nurse.", QA * 2)
    chunks = pack_respondent(ex, max_tokens=120)
    assert len(chunks) > 1 and sum(c["n_branches"] for c in chunks) == 6
    assert all(len(c["input_ids"]) <= 120 for c in chunks)
    _compare(
        _separate_loss_and_grads(model, ex, tok.pad_token_id),
        _packed_loss_and_grads(model, chunks, tok.pad_token_id),
    )
    # a shorter explicit prefix is still exact; a too long one is refused
    short = pack_examples(ex[:3], prefix_len=5)
    _compare(
        _separate_loss_and_grads(model, ex[:3], tok.pad_token_id),
        _packed_loss_and_grads(model, [short], tok.pad_token_id),
    )
    with pytest.raises(ValueError):
        pack_examples(ex[:3], prefix_len=10_000)


def test_bf16_mask_dtype_and_sdpa():
    tok = _tok()
    model = make_model("sdpa", steps=5, seed=9)
    ex = examples_from_chat(tok, "you are a retired teacher.", QA)
    batch = collate_packed([pack_examples(ex)], dtype=torch.float32)
    assert batch["attention_mask"].shape[:2] == (1, 1)
    with torch.no_grad():
        lp = packed_loss(model, batch)
        length = max(len(e["input_ids"]) for e in ex)
        ids = torch.zeros((3, length), dtype=torch.long)
        att = torch.zeros_like(ids)
        lab = torch.full_like(ids, -100)
        for i, e in enumerate(ex):
            n = len(e["input_ids"])
            ids[i, :n], att[i, :n], lab[i, :n] = (
                torch.tensor(e["input_ids"]), 1, torch.tensor(e["labels"]))  # fmt: skip
        ls = model(input_ids=ids, attention_mask=att, labels=lab).loss
    torch.testing.assert_close(lp, ls, atol=1e-5, rtol=1e-5)
    assert len(WORDS) > 0


def test_answer_predictor_gives_the_logits_before_each_answer():
    """``answer_predictor``: per branch, the logits predicting its first answer token, equal to
    the separate example's logits at ``answer_start - 1``; a respondent with one example
    (answer inside the shared prefix) and with several, in one batch."""
    tok, model = _tok(), _lora_model(2)
    resp = [
        examples_from_chat(tok, f"you are a {p}.", qa)
        for p, qa in zip(PERSONAS[:2], [QA, QA[1:2]], strict=True)
    ]
    for r in resp:
        for e in r:
            e["answer_start"] = e["labels"].index(next(y for y in e["labels"] if y != -100))
    batch = collate_packed([pack_examples(r) for r in resp], pad_token_id=tok.pad_token_id)
    assert batch["answer_predictor"].tolist()[1][1:] == [-1, -1]  # one branch, then padding
    with torch.no_grad():
        _, first = packed_logits(model, batch, batch["answer_predictor"])
        for row, e in enumerate(e for r in resp for e in r):
            logits = model(input_ids=torch.tensor([e["input_ids"]])).logits[0]
            torch.testing.assert_close(
                first[row], logits[e["answer_start"] - 1], atol=2e-5, rtol=1e-4
            )
