"""``surveysim pilot`` through the real hf backend and exact decoder, on a tiny random model.

Checks the plumbing (prompts, answer sets, persona order) with a real model: the shifts in
shifts.csv must equal the weighted differences of means recomputed from the per-persona
distributions, and every distribution must be a probability vector.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("transformers")
pytest.importorskip("pyarrow")


def test_pilot_with_tiny_hf_model(tmp_path, plugins):
    from surveysim_hf.testing import write_tiny_model
    from surveysim_pilot.config import PilotConfig
    from surveysim_pilot.pilot import pilot

    model = write_tiny_model(tmp_path / "tiny")
    personas = tmp_path / "personas.csv"
    pd.DataFrame(
        {
            "political": ["Strongly liberal", "Strongly conservative", "Somewhat liberal"],
            "income": ["less than $10,000", "More than $160,000", "$40,001 to $80,000"],
            "weight": [1, 2, 1],
        }
    ).to_csv(personas, index=False)
    config = PilotConfig.model_validate(
        {
            "survey": "evshift-0to9",
            "system": {
                "kind": "zero_shot",
                "backend": {"name": "hf", "options": {"model": str(model), "progress_bars": False}},
            },
            "population": {"source": "table", "path": str(personas)},
            "pre_question": "initial_preference",
            "statements": {
                "question": "post_intervention_preference",
                "survey": ["21"],
                "new": [{"id": "n1", "text": "Electric cars are fun.", "group": "new"}],
            },
            "segments": ["political"],
            "bootstrap": 20,
            "output": str(tmp_path / "out"),
        }
    )
    out = pilot(config, "cfg.yaml", plugins)
    per = pd.read_parquet(out / "distributions.parquet")
    p_cols = [f"p_{k}" for k in range(10)]
    assert len(per) == 3 * 3
    sums = per[p_cols].to_numpy().sum(axis=1)
    assert np.allclose(sums, 1.0)  # conditioned on a valid answer
    assert ((per["valid_mass"] > 0) & (per["valid_mass"] <= 1 + 1e-9)).all()
    # weights 1:2:1 -> 0.25, 0.5, 0.25; recompute the overall shift from the distributions
    w = np.array([0.25, 0.5, 0.25])
    means = per.pivot(index="persona_id", columns="item", values="mean")
    shifts = pd.read_csv(out / "shifts.csv", keep_default_na=False)
    for item, statement in [("intervention=21", "21"), ("intervention=n1", "n1")]:
        expected = float(w @ (means[item] - means["initial_preference"]).to_numpy())
        got = shifts[(shifts["statement"] == statement) & (shifts["segment"] == "all")]
        assert got["mean_shift"].iloc[0] == pytest.approx(expected)
    assert (out / "report.html").exists()


def test_pilot_loads_a_runs_lora_adapter(tmp_path, plugins):
    """A run directory's adapter/ is applied: fine_tuned answers differ from zero_shot ones.

    The adapter is random (not trained): LoRA with non-zero initial weights changes the outputs.
    """
    import peft
    import torch
    import yaml
    from surveysim_hf.testing import write_tiny_model
    from surveysim_pilot.config import PilotConfig
    from surveysim_pilot.pilot import pilot
    from transformers import AutoModelForCausalLM

    model_dir = write_tiny_model(tmp_path / "tiny")
    run = tmp_path / "run"
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    lora = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    peft.get_peft_model(base, lora).save_pretrained(run / "adapter", safe_serialization=True)
    options = {"model": str(model_dir), "progress_bars": False}
    (run / "config.yaml").write_text(
        yaml.safe_dump({"survey": "evshift-0to9", "backend": {"name": "hf", "options": options}})
    )
    personas = tmp_path / "personas.csv"
    pd.DataFrame({"political": ["Strongly liberal", "Strongly conservative"]}).to_csv(
        personas, index=False
    )
    means = {}
    for kind in ("zero_shot", "fine_tuned"):
        config = PilotConfig.model_validate(
            {
                "survey": "evshift-0to9",
                "system": {"run": str(run), "kind": kind},
                "population": {"source": "table", "path": str(personas)},
                "pre_question": "initial_preference",
                "statements": {"question": "post_intervention_preference", "survey": ["21"]},
                "bootstrap": 5,
                "output": str(tmp_path / kind),
            }
        )
        out = pilot(config, "cfg.yaml", plugins)
        means[kind] = pd.read_parquet(out / "distributions.parquet")["mean"].to_numpy()
    assert not np.allclose(means["zero_shot"], means["fine_tuned"])
