"""peft's adapter levers as hf options: PiSSA / OLoRA initialisation, rsLoRA, DoRA, LoRA+ and
the cosine schedule. Each trains on a tiny random Llama and answers through ``load``; options at
their defaults leave the dumped options (and so every cache key) as they were."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from surveysim_hf.backend import HFBackend
from surveysim_hf.losses import CrossEntropyLoss
from surveysim_hf.options import HFOptions
from surveysim_hf.testing import write_tiny_model
from surveysim_hf.train import make_optimizer, make_scheduler

from surveysim_core.protocols import Example, Prompt

#: HFOptions' dumped keys before the levers existed: what settings and cache keys hash
KEYS_BEFORE_LEVERS = {
    "attention", "batch_size", "cache_frozen_layers", "checkpoint_every", "dtype", "epochs",
    "eval_batch_size", "generation_batch_size", "gradient_accumulation_steps", "learning_rate",
    "lora_alpha", "lora_dropout", "lora_layers", "lora_r", "loss_on", "lr_scheduler",
    "max_length", "max_steps", "model", "pack_max_tokens", "packing", "progress_bars",
    "quantization", "seed", "target_modules", "threads", "warmup_steps", "weight_decay",
}  # fmt: skip


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
