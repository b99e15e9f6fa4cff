"""Shared helpers for the tree-attention tests: an offline char-level tokenizer and a tiny
randomly initialised Llama, briefly trained so that it answers with numbers (and sometimes
not), which makes the exact distributions non-trivial."""

from __future__ import annotations

import copy
import functools
import random
import sys
from pathlib import Path

import pytest
import torch

try:  # the plugin may not be installed in the venv yet
    import surveysim_hf  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "surveysim-hf"))

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIALS = ["<pad>", "<eos>", "<unk>", "<|im_start|>", "<|im_end|>"]
CHARS = list("0123456789abcdefghijklmnopqrstuvwxyz :?\n.,")
WORDS = ["cars", "bikes", "trains", "rain", "heat", "noise"]
PERSONAS = ["old farmer", "young city nurse", "retired teacher who likes rain"]


@functools.lru_cache(maxsize=1)
def make_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {t: i for i, t in enumerate(SPECIALS + CHARS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def system_text(persona: str) -> str:
    return f"<|im_start|>system\nyou are a {persona}.<|im_end|>\n"


def question_text(word: str) -> str:
    return (
        f"<|im_start|>user\nhow much do you like {word}? score:<|im_end|>\n<|im_start|>assistant\n"
    )


def prompt_text(persona: str, word: str) -> str:
    return system_text(persona) + question_text(word)


def _answer_for(rng: random.Random, persona: str, word: str) -> str:
    base = (len(persona) * 7 + len(word) * 13) % 101
    r = rng.random()
    if r < 0.08:
        return "no idea"
    if r < 0.15:
        return str(rng.choice([100, 1, 10]))
    return str(max(0, min(100, base + rng.choice([-3, -1, 0, 0, 2, 5, 30]))))


@functools.lru_cache(maxsize=4)
def make_model(attn: str = "eager", steps: int = 120, seed: int = 0) -> LlamaForCausalLM:
    tok = make_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    cfg._attn_implementation = attn
    model = LlamaForCausalLM(cfg)
    rng = random.Random(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threading only adds overhead / contention
    for _ in range(steps):
        texts = []
        for _ in range(16):
            p, w = rng.choice(PERSONAS), rng.choice(WORDS)
            texts.append(prompt_text(p, w) + _answer_for(rng, p, w) + "<|im_end|><eos>")
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        loss = model(**enc, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(threads)
    model.eval()
    return model


def make_lora_model(targets: list[str], steps: int, seed: int, lora_seed: int = 0):
    """A peft LoRA model (rank 4, random non-zero init, no dropout) over a copy of the tiny
    model, so the adapter changes the outputs from the first step."""
    import peft

    base = copy.deepcopy(make_model("eager", steps=steps, seed=seed))  # peft mutates in place
    torch.manual_seed(lora_seed)
    cfg = peft.LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets, init_lora_weights=False
    )
    return peft.get_peft_model(base, cfg)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run faster (and steadier on a shared 2-core box) on one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_fixtures_build():
    tok = make_tokenizer()
    ids = tok("12 ab<eos>", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == "12 ab<eos>"
    assert len(ids) == 6
