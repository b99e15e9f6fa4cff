"""Training only the top decoder layers, with the frozen lower layers' output cached.

With LoRA adapters on the top ``n`` layers only (``lora_layers: n``), every layer below them is
frozen and receives no gradient: the hidden state that enters the first adapted layer is a fixed
function of the training text. :class:`FrozenPrefix` computes it once per packed training (or
validation) sequence, without gradients, and each training step then runs only the adapted layers,
the final norm and the LM head from the cached state. Backward stops at the first adapted layer
either way; the cache saves the lower layers' forward pass on every epoch after the first.

Exactness: the cached state equals the one the full forward computes in training mode as long as
the frozen layers have no active dropout (true of Llama-family models, whose attention dropout is
0; :func:`frozen_split` refuses otherwise), so loss and gradients equal the uncached ones up to
float summation order (tested in ``tests/plugins/test_hf_frozen.py``).

The split works on decoders that keep their blocks in ``layers`` and their final norm in ``norm``
(Llama, Mistral, Qwen, SmolLM, Phi-3, OLMo, ...): it swaps those attributes for the duration of a
forward pass, so the model's own ``forward`` (rotary embeddings from ``position_ids``, the 4D tree
mask) does the work.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

_LAYER = re.compile(r"\.layers\.(\d+)\.")


def decoder_of(model: Any) -> Any:
    """The decoder stack (``LlamaModel`` and kin) under peft / DDP wrappers, or None."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is None or not isinstance(getattr(decoder, "layers", None), torch.nn.ModuleList):
        return None
    if not hasattr(decoder, "norm"):
        return None
    return decoder


def layers_to_transform(model: Any, top: int | None) -> list[int] | None:
    """Indices of the top ``top`` decoder layers (None: every layer)."""
    if top is None:
        return None
    decoder = decoder_of(model)
    count = len(decoder.layers) if decoder is not None else int(model.config.num_hidden_layers)
    if top > count:
        raise ValueError(f"lora_layers is {top} but the model has {count} decoder layers")
    return list(range(count - top, count))


def first_trainable_layer(model: Any) -> int | None:
    """The lowest decoder layer holding a trainable parameter, or None when a parameter below
    the decoder blocks (embeddings) is trainable or no layer is."""
    lowest = None
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        match = _LAYER.search(name)
        if match is None:
            if "embed" in name:
                return None
            continue  # the final norm or LM head: above every layer
        index = int(match.group(1))
        lowest = index if lowest is None else min(lowest, index)
    return lowest


def _has_active_dropout(modules: Sequence[torch.nn.Module], config: Any) -> bool:
    if float(getattr(config, "attention_dropout", 0.0) or 0.0) > 0:
        return True
    return any(
        isinstance(m, torch.nn.Dropout) and m.p > 0 for layer in modules for m in layer.modules()
    )


class FrozenPrefix:
    """Runs the frozen lower ``k`` layers once per sequence, the upper layers per step."""

    def __init__(self, decoder: Any, k: int):
        self.decoder = decoder
        self.k = k
        self.layers = decoder.layers

    @contextmanager
    def _swap(self, layers: torch.nn.ModuleList, norm: torch.nn.Module | None) -> Iterator[None]:
        old_layers, old_norm = self.decoder.layers, self.decoder.norm
        self.decoder.layers = layers
        if norm is not None:
            self.decoder.norm = norm
        try:
            yield
        finally:
            self.decoder.layers, self.decoder.norm = old_layers, old_norm

    def upper(self):
        """Context in which the decoder runs only the adapted layers (input: cached states)."""
        return self._swap(torch.nn.ModuleList(self.layers[self.k :]), None)

    @torch.no_grad()
    def lower_states(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Hidden states ``(B, L, H)`` entering layer ``k`` for a packed batch."""
        with self._swap(torch.nn.ModuleList(self.layers[: self.k]), torch.nn.Identity()):
            was_training = self.decoder.training
            self.decoder.eval()
            try:
                out = self.decoder(
                    input_ids=batch["input_ids"],
                    attention_mask=batch["attention_mask"],
                    position_ids=batch["position_ids"],
                    use_cache=False,
                )
            finally:
                self.decoder.train(was_training)
        return out.last_hidden_state


def frozen_split(model: Any) -> tuple[FrozenPrefix | None, str]:
    """A :class:`FrozenPrefix` for ``model`` (peft-wrapped) when caching is exact and saves
    work, else None; with a reason either way (for the training log)."""
    decoder = decoder_of(model)
    if decoder is None:
        return None, "the model's decoder has no `layers`/`norm` to split"
    k = first_trainable_layer(model)
    if k is None:
        return None, "embeddings are trainable or no decoder layer is"
    if k == 0:
        return None, "every decoder layer is adapted (set lora_layers to adapt the top ones only)"
    config = getattr(decoder, "config", None)
    if _has_active_dropout(list(decoder.layers[:k]), config):
        return None, "the frozen layers have active dropout, so cached states would differ"
    return FrozenPrefix(decoder, k), f"layers 0-{k - 1} frozen: their output is cached"
