"""Library noise stays out of run logs (surveysim_hf.quiet), and only where it says nothing."""

from __future__ import annotations

import logging
import warnings

import pytest
from surveysim_hf.options import HFOptions
from surveysim_hf.quiet import BNB_CPU_LOGGER, library_noise
from surveysim_hf.testing import write_tiny_model
from surveysim_hf.train import add_lora


def test_the_4bit_kernel_warning_is_silenced_only_without_quantization(caplog):
    logger = logging.getLogger(BNB_CPU_LOGGER)
    with caplog.at_level(logging.WARNING):
        with library_noise("none"):
            logger.warning("Failed to load CPU gemm_4bit_forward")
        assert not caplog.records
        with library_noise("nf4"):  # QLoRA on a CPU: the slow path is worth a word
            logger.warning("Failed to load CPU gemm_4bit_forward")
        assert len(caplog.records) == 1
    with caplog.at_level(logging.WARNING):
        logger.warning("after the block the logger is as it was")
    assert len(caplog.records) == 2


def test_adding_lora_raises_no_library_deprecation_warning(tmp_path):
    from transformers import AutoModelForCausalLM

    folder = write_tiny_model(tmp_path / "tiny", layers=2)
    base = AutoModelForCausalLM.from_pretrained(folder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        add_lora(base, HFOptions(model=str(folder)))
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]


def test_other_warnings_still_reach_the_user():
    with pytest.warns(FutureWarning, match="something else"), library_noise("none"):
        warnings.warn("something else is deprecated", FutureWarning, stacklevel=1)


@pytest.mark.slow  # two fresh interpreters import torch and peft
def test_a_fresh_process_importing_peft_logs_no_4bit_kernel_warning():
    """The message is logged once, at bitsandbytes' first import, so only a fresh interpreter
    shows whether the silencing comes early enough."""
    import subprocess
    import sys

    code = (
        "import logging; logging.basicConfig(level=logging.WARNING)\n"
        "from surveysim_hf.quiet import library_noise\n"
        "with library_noise({q!r}):\n"
        "    import peft\n"
        "import bitsandbytes\n"
    )
    quiet = subprocess.run([sys.executable, "-c", code.format(q="none")],
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert "gemm_4bit" not in quiet.stderr
    loud = subprocess.run([sys.executable, "-c", code.format(q="nf4")],
                          capture_output=True, text=True, check=True)  # fmt: skip
    if "gemm_4bit" not in loud.stderr:
        pytest.skip("this bitsandbytes logs no missing-kernel warning on import")
