"""The hf backend as systems: it declares its kinds, and a sweep over training options shares
one zero-shot pass (a tiny random model, exact answers, no training)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")

from surveysim_hf.backend import HFBackend
from surveysim_hf.testing import write_tiny_model

from surveysim_core.config import RunConfig
from surveysim_core.protocols import Progress
from surveysim_core.run import execute, plan_run


def tiny_run_config(folder, systems: list[str], sweep: dict | None = None, **options) -> RunConfig:
    """A run of the satisfaction survey on the tiny model, exact answers at t = 1."""
    return RunConfig.model_validate(
        {
            "survey": "satisfaction",
            "data": {"subjects": 20, "seed": 1},
            "split": {"max_test_subjects": 4},
            "backend": {
                "name": "hf",
                "systems": systems,
                "options": {"model": str(folder), "progress_bars": False, **options},
            },
            "decoding": {"decoder": "exact", "temperatures": [1.0]},
            "sweep": sweep or {},
            "evaluation": {"bootstrap": 2},
        }
    )


def test_hf_declares_its_kinds_and_a_training_sweep_shares_zero_shot(
    tmp_path, satisfaction_plugins
):
    assert HFBackend.system_kinds == ("zero_shot", "fine_tuned")
    folder = write_tiny_model(tmp_path / "tiny")
    config = tiny_run_config(folder, ["zero_shot"], sweep={"backend.options.lora_r": [4, 8]})
    plan = plan_run(config, "hf.yaml", satisfaction_plugins)
    assert [v.label for v in plan.lm_variants] == ["lora_r=4", "lora_r=8"]
    run = execute(
        config, "hf.yaml", satisfaction_plugins, run_dir=str(tmp_path / "r"),
        progress=Progress(lambda m: None),
    )  # fmt: skip
    settings = pd.read_csv(run.dir / "settings.csv")
    assert list(settings["system"]) == ["zero_shot"]  # lora_r does not change zero-shot answers
    options = json.loads(settings["settings"].iloc[0])["options"]
    assert options["model"] == str(folder) and "lora_r" not in options
    # exact answers: each test item's probabilities over 1..5 are a distribution
    rows = run.metrics[(run.metrics["system"] == "zero_shot") & (run.metrics["segment"] == "all")]
    sample = rows[(rows["readout"] == "sample") & (rows["temperature"] == 1.0)]
    nll = sample.loc[sample["metric"] == "nll", "value"]
    assert len(nll) == 1 and np.isfinite(nll.iloc[0]) and nll.iloc[0] > 0
    # exact answers are also read out as E[a], and at the temperature chosen on validation
    assert {"sample", "expected", "calibrated"} <= set(rows["readout"])
    assert not (run.dir / "adapter").exists()  # nothing trained


def test_every_hf_option_is_classed_as_training_only_or_not():
    """A new option must be put in training_options or here: the cache shares zero-shot answers
    across the training-only ones, so a misclassed answer option would reuse wrong answers."""
    from surveysim_hf.options import HFOptions

    answer_options = {
        "model", "quantization", "dtype", "attention", "generation_batch_size", "threads",
        "progress_bars",
    }  # fmt: skip
    assert HFBackend.training_options <= set(HFOptions.model_fields)
    assert set(HFOptions.model_fields) - HFBackend.training_options == answer_options


def test_the_log_says_calibrating_after_the_fine_tune_it_calibrates(tmp_path, satisfaction_plugins):
    """The calibration pass answers with the trained model: the log names it after training."""
    folder = write_tiny_model(tmp_path / "tiny")
    config = tiny_run_config(folder, ["fine_tuned"], max_steps=1, epochs=1)
    said: list[str] = []
    execute(
        config, "hf.yaml", satisfaction_plugins, run_dir=str(tmp_path / "r"),
        progress=Progress(said.append),
    )  # fmt: skip
    trained = next(i for i, m in enumerate(said) if m.startswith("fine-tuned 1 steps"))
    calibrating = next(i for i, m in enumerate(said) if "calibrating the temperature" in m)
    assert trained < calibrating, said
