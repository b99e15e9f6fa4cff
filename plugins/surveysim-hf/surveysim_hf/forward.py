"""Small helpers shared by every module that runs a model forward (exact decoding, packed
training, generation, the losses plugin): what lies under a peft wrapper, how wide the output
layer is, which dtype a 4D attention mask needs, and which model types have a plain LM head."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["PLAIN_HEAD_TYPES", "mask_dtype", "output_size", "unwrap"]

#: model types whose CausalLM forward is exactly ``lm_head(decoder(...).last_hidden_state)``, so
#: a caller may run the decoder and put only the hidden states it needs through the head
PLAIN_HEAD_TYPES = frozenset(
    {"llama", "mistral", "qwen2", "qwen3", "smollm3", "phi3", "olmo", "olmo2"}
)


def unwrap(model: Any) -> Any:
    """The transformers model under a peft wrapper (``get_base_model``), else ``model``."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def output_size(model: Any) -> int:
    """Rows of the output layer: the size of the distribution the model predicts, which can
    exceed the tokenizer's vocabulary (padded embedding matrices); ``config.vocab_size`` when the
    model has no output embeddings with a weight."""
    head = unwrap(model).get_output_embeddings()
    if head is not None and hasattr(head, "weight"):
        return int(head.weight.shape[0])
    return int(unwrap(model).config.vocab_size)


def mask_dtype(model: Any) -> torch.dtype:
    """The dtype of the model's first parameter, used for additive 4D attention masks (a mask
    in another dtype than the attention scores is cast or rejected by the attention kernels)."""
    try:
        return next(model.parameters()).dtype
    except StopIteration:  # pragma: no cover
        return torch.float32
