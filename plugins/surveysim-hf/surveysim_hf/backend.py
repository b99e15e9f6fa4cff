"""The ``hf`` backend: Hugging Face causal LMs fine-tuned with LoRA or QLoRA.

Training and answering go through Hugging Face Accelerate, so the same code runs on a CPU, one
GPU, or several processes started with ``accelerate launch`` (answers are split across processes
and gathered back in order).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from surveysim_core.protocols import Backend, Example, Progress
from surveysim_hf import models
from surveysim_hf.options import HFOptions


class HFBackend(Backend):
    """Fine-tunes with LoRA/QLoRA and answers with a Hugging Face causal LM."""

    Options = HFOptions
    #: the pre-trained model, and the model with a LoRA adapter trained on the training split
    system_kinds = ("zero_shot", "fine_tuned")
    #: 2: a packed batch holds at most batch_size answers on average (it was rounded to the
    #: nearest respondent, which halved the steps of some runs)
    training_version = "2"
    training_options = frozenset(
        {
            "lora_r", "lora_alpha", "lora_dropout", "target_modules", "epochs", "learning_rate",
            "weight_decay", "lr_scheduler", "warmup_steps", "batch_size",
            "gradient_accumulation_steps", "max_length", "max_steps", "loss_on", "seed",
            "checkpoint_every", "eval_batch_size", "packing", "pack_max_tokens", "lora_layers",
            "cache_frozen_layers", "store_frozen_layers", "init_lora_weights", "use_rslora",
            "use_dora", "loraplus_lr_ratio",
        }
    )  # fmt: skip

    def __init__(
        self,
        options: HFOptions | None,
        run_dir: Path,
        plugins: Any = None,
        progress: Progress | None = None,
    ):
        super().__init__(options or HFOptions(), Path(run_dir), plugins, progress or Progress())
        self._accelerator = None
        self._resolved: models.ResolvedModel | None = None
        #: seconds spent converting / loading the base model, for the run's report
        self.timings: dict[str, float] = {}

    # -- plumbing -------------------------------------------------------------------------------
    @property
    def accelerator(self) -> Any:
        if self._accelerator is None:
            import torch
            from accelerate import Accelerator

            # Accelerate picks multi-process CPU (gloo) only when told it runs on CPU; without a
            # GPU, a torchrun/accelerate launch with several processes must still share the work
            launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
            self._accelerator = Accelerator(cpu=launched and not torch.cuda.is_available())
            self._set_threads()
        return self._accelerator

    def _set_threads(self) -> None:
        import torch

        if self._accelerator.device.type != "cpu":
            return
        local = int(os.environ.get("LOCAL_WORLD_SIZE", self._accelerator.num_processes or 1))
        threads = self.options.threads or max(1, (os.cpu_count() or 1) // max(1, local))
        torch.set_num_threads(threads)

    def model_path(self) -> str:
        """Where the base model is loaded from (converting the default GGUF model once)."""
        if self._resolved is None:
            acc = self.accelerator
            # one process converts; the others wait and then read the cache
            if acc.is_main_process:
                self._resolved = models.resolve(self.options.model)
            acc.wait_for_everyone()
            if self._resolved is None:
                self._resolved = models.resolve(self.options.model)
            if self._resolved.converted_seconds is not None:
                self.timings["convert_seconds"] = self._resolved.converted_seconds
                self.progress(
                    f"converted {self.options.model} to Hugging Face format in"
                    f" {self._resolved.converted_seconds:.1f}s (cached at {self._resolved.path})"
                )
        return self._resolved.path

    def load_base(self) -> tuple[Any, Any]:
        """The base model (full precision or NF4) and its tokenizer, on this process's device."""
        path = self.model_path()
        started = time.perf_counter()
        device = self.accelerator.device
        dtype = models.compute_dtype(self.options.dtype, device.type)
        tokenizer = models.load_tokenizer(path)
        model = models.load_base_model(path, self.options.quantization, dtype, device)
        attention = self.options.attention
        if attention != "auto":  # auto: the model's default (sdpa for most causal LMs)
            model.set_attn_implementation(attention)
        self.timings["load_seconds"] = time.perf_counter() - started
        return model, tokenizer

    # -- Backend --------------------------------------------------------------------------------
    def fine_tune(
        self,
        train: Sequence[Example],
        val: Sequence[Example],
        loss: Any,
        out_dir: Path,
        resume: bool = False,
        on_step: Callable[[int], None] | None = None,
    ) -> Path:
        """Train LoRA adapters, keep the best epoch by validation loss, return its folder."""
        from surveysim_hf.train import fine_tune

        model, tokenizer = self.load_base()
        result = fine_tune(
            model,
            tokenizer,
            train,
            val,
            loss,
            self.options,
            Path(out_dir),
            resume,
            self.accelerator,
            report=self.progress,
            on_step=on_step,
        )
        self.timings["train_tokens_per_second"] = result.tokens_per_second
        return result.adapter_dir

    def load(self, adapter: Path | None) -> Any:
        """The base model, or the base model with the adapter in ``adapter`` applied."""
        from surveysim_hf.generation import HFModel

        model, tokenizer = self.load_base()
        if adapter is not None:
            from surveysim_hf.quiet import library_noise

            with library_noise(self.options.quantization):
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
            if self.options.quantization == "none":
                model = model.merge_and_unload()  # plain weights answer faster
        return HFModel(
            model,
            tokenizer,
            self.accelerator,
            batch_size=self.options.generation_batch_size,
            progress_bars=self.options.progress_bars,
        )
