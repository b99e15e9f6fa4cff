"""LoRA / QLoRA fine-tuning on a tiny random Llama: learning, best epoch, resume, logs, and
peft's adapter levers (at their defaults they leave the dumped options and cache keys as they were)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from surveysim_hf.backend import HFBackend
from surveysim_hf.losses import CrossEntropyLoss
from surveysim_hf.options import HFOptions
from surveysim_hf.testing import write_tiny_model
from surveysim_hf.train import make_optimizer, make_scheduler, read_train_log

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


# -- peft's adapter levers (PiSSA / OLoRA, rsLoRA, DoRA, LoRA+) and the schedule ---------------
#: HFOptions' dumped keys before the levers existed: what settings and cache keys hash
KEYS_BEFORE_LEVERS = {
    "attention", "batch_size", "cache_frozen_layers", "checkpoint_every", "dtype", "epochs",
    "eval_batch_size", "generation_batch_size", "gradient_accumulation_steps", "learning_rate",
    "lora_alpha", "lora_dropout", "lora_layers", "lora_r", "loss_on", "lr_scheduler",
    "max_length", "max_steps", "model", "pack_max_tokens", "packing", "progress_bars",
    "quantization", "seed", "target_modules", "threads", "warmup_steps", "weight_decay",
}  # fmt: skip


def test_levers_at_their_defaults_leave_the_dumped_options_unchanged():
    assert set(HFOptions().model_dump(mode="json")) == KEYS_BEFORE_LEVERS
    dumped = HFOptions(use_rslora=True, loraplus_lr_ratio=16).model_dump(mode="json")
    assert dumped["use_rslora"] is True and dumped["loraplus_lr_ratio"] == 16
    assert "use_dora" not in dumped and "init_lora_weights" not in dumped


@pytest.mark.parametrize(
    "lever",
    [
        {"init_lora_weights": "pissa"},
        {"init_lora_weights": "olora"},
        {"use_rslora": True},
        {"use_dora": True},
        {"loraplus_lr_ratio": 8.0},
        {"lr_scheduler": "cosine", "warmup_steps": 2},
    ],
    ids=lambda lever: "-".join(f"{k}={v}" for k, v in lever.items()),
)
def test_each_lever_trains_and_its_adapter_answers_on_the_unchanged_base(
    tiny_model, tmp_path, lever
):
    options = HFOptions(
        model=str(tiny_model), learning_rate=1e-2, batch_size=8, epochs=3, progress_bars=False,
        **lever,
    )  # fmt: skip
    hf = HFBackend(options, tmp_path)
    adapter = hf.fine_tune(
        examples(32, "7"), examples(8, "7", 100), CrossEntropyLoss(), tmp_path / "adapter", False
    )
    config = json.loads((adapter / "adapter_config.json").read_text())
    if "init_lora_weights" in lever:
        # converted against the initial adapter: a plain LoRA of rank 2r on the original weights
        assert config["r"] == 2 * options.lora_r
        assert config["init_lora_weights"] is True
    else:
        assert config["r"] == options.lora_r
    assert config["use_rslora"] is options.use_rslora
    assert config["use_dora"] is options.use_dora
    # load() reads the base model afresh from disk: without the conversion a PiSSA / OLoRA
    # adapter would add its principal part to weights that still hold it
    answers = hf.load(adapter).generate([e.prompt for e in examples(5, "0", 200)], 0.0, 4, seed=0)
    assert answers == ["7"] * 5


def test_loraplus_gives_the_b_matrices_ratio_times_the_learning_rate(tiny_model):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    options = HFOptions(model=str(tiny_model), learning_rate=1e-3, loraplus_lr_ratio=16)
    optimizer = make_optimizer(model, options)
    names = {id(p): n for n, p in model.named_parameters()}
    rates = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            rates[names[id(p)]] = group["lr"]
    b = [lr for n, lr in rates.items() if "lora_B" in n]
    a = [lr for n, lr in rates.items() if "lora_A" in n]
    assert b and a and set(b) == {1.6e-2} and set(a) == {1e-3}
    plain = make_optimizer(model, HFOptions(model=str(tiny_model), learning_rate=1e-3))
    assert len(plain.param_groups) == 1


def test_cosine_schedule_matches_the_formula_after_warm_up():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    options = HFOptions(lr_scheduler="cosine", warmup_steps=2)
    scheduler = make_scheduler(optimizer, options, total_steps=10)
    seen = []
    for _ in range(10):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen[:2] == pytest.approx([1 / 3, 2 / 3])
    # after warm-up: 0.5 (1 - cos(pi * left)), left = (10 - step) / 8 going from 1 down
    expected = [0.5 * (1 - math.cos(math.pi * (10 - s) / 8)) for s in range(2, 10)]
    assert seen[2:] == pytest.approx(expected)
    assert seen[2] == pytest.approx(1.0)


def test_the_log_says_how_long_fine_tuning_has_left(tiny_model, tmp_path):
    from surveysim_core.protocols import Progress

    said: list[str] = []
    options = HFOptions(
        model=str(tiny_model), learning_rate=1e-2, batch_size=8, epochs=3, progress_bars=False
    )
    hf = HFBackend(options, tmp_path, progress=Progress(said.append))
    hf.fine_tune(
        examples(32, "7"), examples(8, "7", 100), CrossEntropyLoss(), tmp_path / "adapter", False
    )
    # the plan in steps and answers: 32 answers of 32 respondents, 8 a step, 3 epochs
    assert (
        "fine-tuning plan: 12 optimizer steps over 3 epoch(s) of 32 answers from 32"
        in "\n".join(said)
    )
    eta = [m for m in said if m.startswith("fine-tuning: step")]
    # 12 steps (3 epochs of 4): at each quarter (the first 20 steps are more than the run)
    assert [m.split(",")[0] for m in eta] == [
        "fine-tuning: step 3/12", "fine-tuning: step 6/12", "fine-tuning: step 9/12"
    ]  # fmt: skip
    assert all("training tokens/s" in m and "min left" in m for m in eta)
