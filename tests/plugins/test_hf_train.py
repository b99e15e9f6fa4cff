"""LoRA / QLoRA fine-tuning on a tiny random Llama: learning, best epoch, resume, logs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from surveysim_hf.backend import HFBackend
from surveysim_hf.losses import CrossEntropyLoss
from surveysim_hf.options import HFOptions
from surveysim_hf.testing import write_tiny_model
from surveysim_hf.train import read_train_log

from surveysim_core.protocols import Example, Prompt


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny"))


def examples(n: int, answer: str, start: int = 0) -> list[Example]:
    return [
        Example(
            Prompt(f"act as {{age: {i % 7}}}", "How much, 0-9? Score:"),
            answer,
            "q1",
            float(answer),
            None,
            f"s{i}",
        )
        for i in range(start, start + n)
    ]


def backend(model: Path, run_dir: Path, **options) -> HFBackend:
    defaults = {"learning_rate": 1e-2, "batch_size": 8, "progress_bars": False, "seed": 0}
    return HFBackend(HFOptions(model=str(model), **{**defaults, **options}), run_dir)


def test_lora_learns_a_constant_answer(tiny_model, tmp_path):
    hf = backend(tiny_model, tmp_path, epochs=3)
    before = hf.load(None).generate([examples(1, "7")[0].prompt], 0.0, 4, seed=0)
    adapter = hf.fine_tune(
        examples(32, "7"), examples(8, "7", 100), CrossEntropyLoss(), tmp_path / "adapter", False
    )
    rows = read_train_log(adapter / "train_log.csv")
    train_rows = [r for r in rows if r["split"] == "train"]
    val_rows = [r for r in rows if r["split"] == "val"]
    assert [r["step"] for r in train_rows] == list(range(1, 13))  # 3 epochs x 4 steps
    assert [r["epoch"] for r in val_rows] == [1, 2, 3]
    assert train_rows[-1]["loss"] < 0.5 * train_rows[0]["loss"]
    assert all(r["tokens"] > 0 and r["seconds"] >= 0 for r in rows)
    assert (adapter / "adapter_model.safetensors").is_file()
    assert (adapter / "adapter_config.json").is_file()
    model = hf.load(adapter)
    answers = model.generate([e.prompt for e in examples(5, "0", 200)], 0.0, 4, seed=0)
    assert answers == ["7"] * 5, (before, answers)


class ScriptedValidation(CrossEntropyLoss):
    """Cross-entropy in training; validation losses taken from a script, one per epoch."""

    def __init__(self, script: list[float]):
        super().__init__()
        self.script = list(script)
        self.calls = 0

    def __call__(self, logits, labels, batch):
        if torch.is_grad_enabled():
            return super().__call__(logits, labels, batch)
        value = self.script[self.calls]
        self.calls += 1
        return torch.tensor(value)


def test_best_epoch_is_kept_by_validation_loss(tiny_model, tmp_path):
    hf = backend(tiny_model, tmp_path, epochs=3, eval_batch_size=16)
    loss = ScriptedValidation([3.0, 1.0, 2.0])  # epoch 2 is the best
    adapter = hf.fine_tune(
        examples(16, "7"), examples(4, "7", 100), loss, tmp_path / "adapter", False
    )
    assert loss.calls == 3  # one validation batch per epoch
    val = [r for r in read_train_log(adapter / "train_log.csv") if r["split"] == "val"]
    assert [r["loss"] for r in val] == [3.0, 1.0, 2.0]
    kept = load_file(adapter / "adapter_model.safetensors")
    for epoch in (1, 2, 3):
        saved = load_file(adapter / "epochs" / f"epoch-{epoch}" / "adapter_model.safetensors")
        same = all(torch.equal(kept[k], saved[k]) for k in kept)
        assert same == (epoch == 2), epoch


def test_without_validation_the_last_epoch_is_kept(tiny_model, tmp_path):
    hf = backend(tiny_model, tmp_path, epochs=2)
    adapter = hf.fine_tune(examples(16, "7"), [], CrossEntropyLoss(), tmp_path / "adapter", False)
    kept = load_file(adapter / "adapter_model.safetensors")
    last = load_file(adapter / "epochs" / "epoch-2" / "adapter_model.safetensors")
    assert all(torch.equal(kept[k], last[k]) for k in kept)


class Interrupt(Exception):
    pass


def test_resume_after_interruption_matches_an_uninterrupted_run(tiny_model, tmp_path):
    options = {"epochs": 2, "checkpoint_every": 2, "lora_dropout": 0.1}
    train, val = examples(24, "7"), examples(4, "7", 100)  # 3 steps per epoch, 6 in all
    whole = backend(tiny_model, tmp_path / "a", **options).fine_tune(
        train, val, CrossEntropyLoss(), tmp_path / "a" / "adapter", False
    )

    def crash(step: int) -> None:
        if step == 5:  # the last checkpoint is at step 4
            raise Interrupt

    with pytest.raises(Interrupt):
        backend(tiny_model, tmp_path / "b", **options).fine_tune(
            train, val, CrossEntropyLoss(), tmp_path / "b" / "adapter", False, on_step=crash
        )
    assert not (tmp_path / "b" / "adapter" / "training.json").exists()
    resumed = backend(tiny_model, tmp_path / "b", **options).fine_tune(
        train, val, CrossEntropyLoss(), tmp_path / "b" / "adapter", True
    )
    log_a = read_train_log(whole / "train_log.csv")
    log_b = read_train_log(resumed / "train_log.csv")
    assert [(r["epoch"], r["step"], r["split"]) for r in log_a] == [
        (r["epoch"], r["step"], r["split"]) for r in log_b
    ]
    assert [r["loss"] for r in log_a] == pytest.approx([r["loss"] for r in log_b], abs=1e-6)
    a = load_file(whole / "adapter_model.safetensors")
    b = load_file(resumed / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)


def test_resume_refuses_a_checkpoint_for_other_options(tiny_model, tmp_path):
    from surveysim_hf.train import ResumeMismatch

    train = examples(16, "7")

    def crash(step: int) -> None:
        raise Interrupt

    with pytest.raises(Interrupt):
        backend(tiny_model, tmp_path, epochs=1, checkpoint_every=1).fine_tune(
            train, [], CrossEntropyLoss(), tmp_path / "adapter", False, on_step=crash
        )
    with pytest.raises(ResumeMismatch):
        backend(tiny_model, tmp_path, epochs=1, checkpoint_every=1, lora_r=4).fine_tune(
            train, [], CrossEntropyLoss(), tmp_path / "adapter", True
        )


def test_gradient_accumulation_and_max_steps(tiny_model, tmp_path):
    hf = backend(
        tiny_model, tmp_path, epochs=3, batch_size=4, gradient_accumulation_steps=2, max_steps=3
    )
    adapter = hf.fine_tune(examples(16, "7"), [], CrossEntropyLoss(), tmp_path / "adapter", False)
    rows = read_train_log(adapter / "train_log.csv")
    # 16 examples / (4 x 2) = 2 optimizer steps per epoch; max_steps stops in epoch 2
    assert [(r["epoch"], r["step"]) for r in rows] == [(1, 1), (1, 2), (2, 3)]
    assert all(r["split"] == "train" for r in rows)
    assert rows[0]["tokens"] > 0


def test_qlora_nf4_trains_on_cpu(tmp_path):
    pytest.importorskip("bitsandbytes")
    # bitsandbytes' CPU 4-bit kernel needs input widths that are multiples of its block (64)
    model_dir = write_tiny_model(tmp_path / "tiny64", hidden=64)
    hf = backend(model_dir, tmp_path, epochs=1, quantization="nf4")
    adapter = hf.fine_tune(
        examples(16, "7"), examples(4, "7", 100), CrossEntropyLoss(), tmp_path / "adapter", False
    )
    rows = read_train_log(adapter / "train_log.csv")
    assert [r["split"] for r in rows] == ["train", "train", "val"]
    assert rows[1]["loss"] < rows[0]["loss"]
    model = hf.load(adapter)
    linear = model.model.base_model.model.model.layers[0].self_attn.q_proj.base_layer
    assert type(linear).__name__ == "Linear4bit"
    assert linear.weight.quant_type == "nf4"
    assert len(model.generate([examples(1, "7")[0].prompt], 0.0, 3, seed=0)) == 1
