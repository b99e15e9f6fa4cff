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

:class:`FrozenStore` keeps the cached states on disk (``store_frozen_layers``), so that another
fine-tune of the same text through the same frozen layers (a sweep over the learning rate, rank,
epochs or loss; a resumed run) reads them instead of computing them again. The key covers what
the states are a function of: the frozen layers' and embeddings' weights, the model's config and
attention implementation, the dtype, device type, library versions and batching, and every
packed sequence's tokens, positions and tree. A file is trusted only if its SHA-256 matches the
one written beside it; it holds tensors only (safetensors), never a pickle.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from surveysim_core.files import atomic_write, atomic_write_text, file_sha256

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


class FrozenStore:
    """Frozen-layer states on disk: ``<root>/<key>.safetensors`` and ``<key>.json`` (its SHA-256).

    States are a list per split (``True``: training, ``False``: validation) of ``(length,
    hidden)`` tensors, one per packed sequence.
    """

    VERSION = "1"

    def __init__(self, root: Path):
        self.root = Path(root)

    def key(
        self,
        frozen: FrozenPrefix,
        units: dict[bool, list[dict[str, Any]]],
        batch_size: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> str:
        """The hash of everything the states depend on (see the module docstring)."""
        import transformers

        decoder = frozen.decoder
        config = decoder.config.to_dict() if hasattr(decoder.config, "to_dict") else {}
        config.pop("_name_or_path", None)  # the same weights under another path: same states
        h = hashlib.sha256()
        h.update(
            json.dumps(
                [
                    self.VERSION, frozen.k, config, str(dtype), device.type, batch_size,
                    getattr(decoder.config, "_attn_implementation", None),
                    torch.__version__, transformers.__version__,
                ],
                sort_keys=True,
                default=str,
            ).encode()
        )  # fmt: skip
        below = ("embed_tokens.", "rotary_emb.", *(f"layers.{i}." for i in range(frozen.k)))
        named = [*decoder.named_parameters(), *decoder.named_buffers()]
        for name, tensor in sorted(named, key=lambda pair: pair[0]):
            if name.startswith(below):
                h.update(f"|{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
                data = tensor.detach().cpu().contiguous()
                h.update(data.view(torch.uint8).numpy() if data.numel() else b"")
        for training in (True, False):
            h.update(f"|split {training} {len(units[training])}|".encode())
            for unit in units[training]:
                for field in ("input_ids", "position_ids", "parents"):
                    h.update(np.asarray(unit[field], dtype=np.int64).tobytes())
                    h.update(b"/")
        return h.hexdigest()[:32]

    def paths(self, key: str) -> tuple[Path, Path]:
        return self.root / f"{key}.safetensors", self.root / f"{key}.json"

    def load(
        self, key: str, lengths: dict[bool, list[int]]
    ) -> tuple[dict[bool, list[torch.Tensor]] | None, str]:
        """The stored states (None if absent or untrustworthy), and why not when a file was
        there but is not used ("" otherwise)."""
        from safetensors.torch import load_file

        data, meta = self.paths(key)
        if not (data.is_file() and meta.is_file()):
            return None, ""
        try:
            expected = json.loads(meta.read_text())["sha256"]
            if file_sha256(data) != expected:
                return None, f"{data} does not match its SHA-256; computing again"
            tensors = load_file(str(data))
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            return None, f"{data} could not be read ({error}); computing again"
        states: dict[bool, list[torch.Tensor]] = {}
        for training, split in ((True, "train"), (False, "val")):
            states[training] = []
            for i, length in enumerate(lengths[training]):
                tensor = tensors.get(f"{split}.{i}")
                if tensor is None or tensor.shape[0] != length:
                    return None, f"{data} does not fit these sequences; computing again"
                states[training].append(tensor)
        return states, ""

    def save(self, key: str, states: dict[bool, list[torch.Tensor]]) -> tuple[Path, int]:
        """Write the states under ``key``; the path and its size in bytes. Raises OutputError."""
        from safetensors.torch import save_file

        data, meta = self.paths(key)
        tensors = {
            f"{'train' if training else 'val'}.{i}": t.detach().cpu().contiguous()
            for training in (True, False)
            for i, t in enumerate(states[training])
        }
        atomic_write(data, lambda tmp: save_file(tensors, str(tmp)))
        size = data.stat().st_size
        atomic_write_text(meta, json.dumps({"sha256": file_sha256(data), "bytes": size}) + "\n")
        return data, size
