"""LoRA on the top layers only, with the frozen lower layers' output cached across epochs:
the same training as without the cache (loss, validation loss, adapter)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from surveysim_hf.backend import HFBackend
from surveysim_hf.frozen import FrozenStore, first_trainable_layer, frozen_split
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


def train(
    model: Path, run_dir: Path, cache: bool, lora_layers: int | None = 2, **extra: object
) -> Path:
    settings: dict[str, object] = {
        "model": str(model),
        "lora_layers": lora_layers,
        "cache_frozen_layers": cache,
        "lora_dropout": 0.1,  # dropout in the adapted layers draws the same random numbers
        "learning_rate": 1e-2,
        "batch_size": 4,
        "eval_batch_size": 4,
        "epochs": 2,
        "progress_bars": False,
        "seed": 0,
    }
    options = HFOptions.model_validate({**settings, **extra})
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


def adapter(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "adapter_model.safetensors")


def assert_same_adapter(a: Path, b: Path) -> None:
    left, right = adapter(a), adapter(b)
    assert left.keys() == right.keys()
    for key in left:
        assert torch.equal(left[key], right[key]), key


def test_stored_states_are_read_back_by_the_next_fine_tune(tiny_model, tmp_path, capsys):
    """The frozen layers' output is kept on disk; another fine-tune of the same data reads it
    (also with other training options, as in a sweep) and trains exactly the same adapter; a
    damaged file is not trusted."""
    store = Path(os.environ["SURVEYSIM_CACHE"]) / "frozen"
    first = train(tiny_model, tmp_path / "first", cache=True)
    out = capsys.readouterr().out
    assert "cached the output of 2 frozen layers" in out and "kept them in" in out
    [stored] = store.glob("*.safetensors")

    again = train(tiny_model, tmp_path / "again", cache=True)
    out = capsys.readouterr().out
    assert "read the output of 2 frozen layers for 8 sequences" in out
    assert "cached the output" not in out
    assert_same_adapter(first, again)

    # a sweep point: another learning rate reads the same states and trains another adapter,
    # the one it trains without the store
    swept = train(tiny_model, tmp_path / "lr", cache=True, learning_rate=3e-2)
    assert "read the output" in capsys.readouterr().out
    fresh = train(tiny_model, tmp_path / "lr-fresh", cache=True, learning_rate=3e-2,
                  store_frozen_layers=False)  # fmt: skip
    assert "read the output" not in capsys.readouterr().out
    assert_same_adapter(swept, fresh)
    assert any(not torch.equal(adapter(swept)[k], v) for k, v in adapter(first).items())

    # other data: other states
    other = HFOptions(model=str(tiny_model), lora_layers=2, batch_size=4, eval_batch_size=4,
                      epochs=1, progress_bars=False)  # fmt: skip
    HFBackend(other, tmp_path / "o").fine_tune(
        respondents(5), respondents(2, 100), CrossEntropyLoss(), tmp_path / "o" / "adapter", False
    )
    assert "kept them in" in capsys.readouterr().out
    assert len(list(store.glob("*.safetensors"))) == 2

    # one flipped byte: the file no longer matches its hash, so it is computed again
    raw = bytearray(stored.read_bytes())
    raw[-1] ^= 0xFF
    stored.write_bytes(bytes(raw))
    mended = train(tiny_model, tmp_path / "mended", cache=True)
    out = capsys.readouterr().out
    assert "does not match its SHA-256" in out and "cached the output" in out
    assert_same_adapter(first, mended)


def test_the_store_key_follows_the_frozen_weights_only(tiny_model):
    from surveysim_hf.packing import pack_respondent
    from transformers import AutoModelForCausalLM

    model = add_lora(
        AutoModelForCausalLM.from_pretrained(tiny_model),
        HFOptions(model=str(tiny_model), lora_layers=2),
    )
    split, _ = frozen_split(model)
    assert split is not None
    rows = [{"input_ids": [1, 2, 3, 4], "labels": [-100, -100, 3, 4], "answer_start": 2,
             "answer_length": 2}]  # fmt: skip
    units = {True: pack_respondent(rows, 1000), False: []}
    store = FrozenStore(Path("unused"))

    def key() -> str:
        return store.key(split, units, 4, torch.float32, torch.device("cpu"))

    before = key()
    assert key() == before
    with torch.no_grad():
        split.decoder.layers[3].mlp.up_proj.weight.add_(1.0)  # an adapted layer: not frozen
        assert key() == before
        split.decoder.layers[0].mlp.up_proj.weight.add_(1.0)  # a frozen one
        assert key() != before
    units[True][0]["input_ids"] = [1, 2, 3, 5]
    changed = key()
    units[True][0]["input_ids"] = [1, 2, 3, 4]
    assert changed != key()
