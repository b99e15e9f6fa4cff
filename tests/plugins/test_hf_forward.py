"""The public forward helpers (``surveysim_hf.forward``) on the tiny model, bare and
peft-wrapped; exact.py's old private names are the same objects."""

from __future__ import annotations

import torch
from surveysim_hf import exact, forward
from surveysim_hf.testing import tiny_tokenizer, write_tiny_model


def test_helpers_see_through_the_peft_wrapper(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(write_tiny_model(tmp_path / "tiny"))
    vocab = len(tiny_tokenizer())  # 4 special tokens + the printable characters
    assert vocab == 4 + 98
    assert forward.unwrap(model) is model
    assert forward.output_size(model) == vocab
    assert forward.mask_dtype(model) == torch.float32
    wrapped = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    assert forward.unwrap(wrapped) is model
    assert forward.output_size(wrapped) == vocab
    assert forward.mask_dtype(wrapped.to(torch.bfloat16)) == torch.bfloat16
    assert "llama" in forward.PLAIN_HEAD_TYPES
    # exact.py keeps its old private names as aliases
    assert exact._unwrap is forward.unwrap and exact._output_size is forward.output_size
