"""Library messages that tell a surveysim user nothing, silenced where they arise.

- bitsandbytes logs, when peft first imports it on a CPU, that an optional kernel package for
  4-bit matmuls is missing. With ``quantization: none`` no 4-bit matmul runs, so the warning is
  noise in every run log; with ``nf4`` it stays (it explains a slow QLoRA on a CPU).
- peft reads ``model.is_gradient_checkpointing``, which transformers deprecates with a
  FutureWarning that surveysim's own code does not cause and cannot act on.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"


@contextmanager
def library_noise(quantization: str) -> Iterator[None]:
    """Run a peft import or model wrap without the messages above (for ``quantization``)."""
    logger = logging.getLogger(BNB_CPU_LOGGER)
    level = logger.level
    if quantization == "none":
        logger.setLevel(logging.ERROR)
        # bitsandbytes logs it once, when first imported (by peft, by transformers): import it
        # here, where it is silenced, so that no later import outside this block says it
        with contextlib.suppress(ImportError):
            importlib.import_module("bitsandbytes")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r".*is_gradient_checkpointing.*deprecated", category=FutureWarning
            )
            yield
    finally:
        logger.setLevel(level)
