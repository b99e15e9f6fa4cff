"""LoRA on the top layers only, with the frozen lower layers' output cached across epochs:
the same training as without the cache (loss, validation loss, adapter)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from surveysim_hf.backend import HFBackend
from surveysim_hf.frozen import first_trainable_layer, frozen_split
from surveysim_hf.losses import CrossEntropyLoss
from surveysim_hf.options import HFOptions
from surveysim_hf.testing import write_tiny_model
from surveysim_hf.train import add_lora, read_train_log

from surveysim_core.protocols import Example, Prompt

QUESTIONS = ["How much do you like cars, 0-9? Score:", "And bikes, 0-9? Score:"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny4"), layers=4)


def respondents(n: int, start: int = 0) -> list[Example]:
    out = []
    for i in range(start, start + n):
        system = f"act as: {{age: {20 + i}, town: t{i % 3}}}"
        for q, question in enumerate(QUESTIONS):
            answer = str((i + 4 * q) % 10)
            out.append(
                Example(Prompt(system, question), answer, f"q{q}", float(answer), None, f"s{i}")
            )
    return out


def train(model: Path, run_dir: Path, cache: bool, lora_layers: int | None = 2) -> Path:
    options = HFOptions(
        model=str(model),
        lora_layers=lora_layers,
        cache_frozen_layers=cache,
        lora_dropout=0.1,  # dropout in the adapted layers draws the same random numbers
        learning_rate=1e-2,
        batch_size=4,
        eval_batch_size=4,
        epochs=2,
        progress_bars=False,
        seed=0,
    )
    return HFBackend(options, run_dir).fine_tune(
        respondents(6), respondents(2, 100), CrossEntropyLoss(), run_dir / "adapter", False
    )


def test_cached_training_equals_uncached(tiny_model, tmp_path, capsys):
    cached = train(tiny_model, tmp_path / "cached", cache=True)
    assert "cached the output of 2 frozen layers" in capsys.readouterr().out
    plain = train(tiny_model, tmp_path / "plain", cache=False)
    a = load_file(cached / "adapter_model.safetensors")
    b = load_file(plain / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    # only the top two layers carry adapters
    assert all(".layers.2." in k or ".layers.3." in k for k in a)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)
    log_a, log_b = read_train_log(cached / "train_log.csv"), read_train_log(plain / "train_log.csv")
    assert [r["split"] for r in log_a] == [r["split"] for r in log_b]
    for ra, rb in zip(log_a, log_b, strict=True):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5)
    # and training did move the adapters (the comparison is not between two untrained copies)
    assert any(float(a[k].abs().max()) > 0 for k in a if "lora_B" in k)


def test_the_cache_is_not_a_no_op(tiny_model, tmp_path):
    """All layers adapted gives a different result: the equality above is not trivial."""
    top2 = load_file(train(tiny_model, tmp_path / "top2", True) / "adapter_model.safetensors")
    every = load_file(
        train(tiny_model, tmp_path / "all", True, lora_layers=None) / "adapter_model.safetensors"
    )
    assert set(every) > set(top2)


def test_split_refuses_dropout_and_full_adaptation(tiny_model):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    model = add_lora(base, HFOptions(model=str(tiny_model), lora_layers=1))
    assert first_trainable_layer(model) == 3
    split, _ = frozen_split(model)
    assert split is not None and split.k == 3
    model.get_base_model().config.attention_dropout = 0.1
    split, why = frozen_split(model)
    assert split is None and "dropout" in why
    every = add_lora(
        AutoModelForCausalLM.from_pretrained(tiny_model), HFOptions(model=str(tiny_model))
    )
    assert first_trainable_layer(every) == 0
    assert frozen_split(every)[0] is None


def test_lora_layers_larger_than_the_model_is_an_error(tiny_model):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    with pytest.raises(ValueError, match="lora_layers is 9 but the model has 4"):
        add_lora(base, HFOptions(model=str(tiny_model), lora_layers=9))
