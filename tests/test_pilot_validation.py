"""benchmarks/pilot_validation.py: its figures on hand-built inputs, and the --quick path's
plumbing end to end with a fake fine-tuned run whose model answers with the true shifts."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from surveysim_core import hookimpl
from surveysim_core.protocols import Backend

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pv():
    spec = importlib.util.spec_from_file_location(
        "pilot_validation", REPO / "benchmarks" / "pilot_validation.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_spearman_by_hand(pv):
    # ranks a: 1 2 3 4, b: 2 1 3 4 -> d^2 = 1 + 1 -> rho = 1 - 6*2 / (4*15) = 0.8
    assert pv.spearman(pd.Series([1, 2, 3, 4.0]), pd.Series([20, 10, 30, 40.0])) == pytest.approx(
        0.8
    )
    assert pv.spearman(pd.Series([1, 1, 1.0]), pd.Series([1, 2, 3.0])) is None


def test_spearman_p_value(pv):
    """Exact for few points: 5 statements in the true order are 1 of 5! = 120 pairings."""
    five = pd.Series([1.0, 2, 3, 4, 5])
    assert pv.spearman_p(five, five) == pytest.approx(1 / 120)
    # one swap of neighbours: rho 0.9, reached or beaten by 5 of the 120 pairings
    assert pv.spearman_p(pd.Series([2.0, 1, 3, 4, 5]), five) == pytest.approx(5 / 120)
    assert pv.spearman_p(five[::-1].reset_index(drop=True), five) == pytest.approx(1.0)
    assert pv.spearman_p(pd.Series([1.0] * 5), five) is None
    # many points: random pairings; a strong correlation is far from chance, none is not
    rng = np.random.default_rng(0)
    x = pd.Series(rng.normal(size=35))
    assert pv.spearman_p(x + 0.3 * pd.Series(rng.normal(size=35)), x) < 0.001
    assert pv.spearman_p(pd.Series(rng.normal(size=35)), x) > 0.01


def test_holdout_needs_each_group(pv):
    groups = {"cost": [8, 11], "environmental": [21, 22], "charging": [1, 3]}
    pv.check_holdout(["11", "21", "3", "25", "32"], groups)
    with pytest.raises(SystemExit, match="environmental"):
        pv.check_holdout(["11", "8", "3", "25", "32"], groups)
    pv.check_holdout([], groups)  # --holdout none: a run that saw every statement


def test_figures_with_nothing_held_out(pv):
    truth = {"expected_mean_shift_by_intervention_population": {"1": 1.0, "2": 3.0, "3": 2.0}}
    got = pv.shift_figures(pd.Series({"1": 10.0, "2": 30.0, "3": 20.0}), truth, [])
    assert got["spearman_all"] == pytest.approx(1.0)
    assert got["spearman_unseen"] is None and got["n_unseen"] == 0


def test_interaction_figures_by_hand(pv):
    income = ["less than $10,000", "$10,001 to $40,000", "$40,001 to $80,000",
              "$80,001 to $160,000", "More than $160,000"]  # fmt: skip
    political = ["Strongly liberal", "Somewhat liberal", "Somewhat conservative",
                 "Strongly conservative"]  # fmt: skip
    rows = []
    for s, values in (("8", [5, 4, 3, 2, 1]), ("10", [3, 2, 1, 0, -1])):
        rows += [(s, "income", o, v) for o, v in zip(income, values, strict=True)]
    rows += [(s, "political", o, 0.0) for s in ("21", "22") for o in political]
    rows += [("1", "living_area", "Urban", 1.0), ("1", "living_area", "Rural", 3.0)]
    frame = pd.DataFrame(rows, columns=["statement", "segment", "value", "mean_shift"])
    truth = {
        "intervention_groups": {"cost": [8, 10], "environmental": [21, 22], "charging": [1]},
        "realised_mean_shift_by_group_segment": {
            "cost_by_income": dict(zip(income, [5, 6, 2.6, 1.5, 1.0], strict=True)),
            "environmental_by_political": dict(zip(political, [4.5, 8, -3, -14], strict=True)),
            "charging_by_living_area": {"Urban": 2.0, "Rural": 4.0},
        },
    }
    got = pv.interaction_figures(frame, truth)
    cost = got["cost x income"]
    # predicted means 4 3 2 1 0; contrast 4 - 0 = 4 and truth 5 - 1 = 4: same sign.
    # ranks 5 4 3 2 1 vs 4 5 3 2 1: d^2 = 2, rho = 1 - 12/120 = 0.9; order differs
    assert cost["predicted_contrast"] == pytest.approx(4.0)
    assert cost["sign_recovered"] is True
    assert cost["spearman"] == pytest.approx(0.9)
    assert cost["order_recovered"] is False
    env = got["environmental x political"]  # flat prediction: no sign, no order
    assert env["sign_recovered"] is False and env["spearman"] is None
    charging = got["charging x living_area"]
    assert charging["predicted_contrast"] == pytest.approx(2.0)
    assert charging["sign_recovered"] is True and charging["order_recovered"] is True


class TruthModel:
    """Answers the pre-question with 50 and a statement with 50 + its true population shift
    (split between the two neighbouring answers so that the expected value is exact)."""

    def __init__(self, shift_by_text):
        self.shift_by_text = shift_by_text

    def answer_distribution(self, prompts, answers, temperatures):
        rows = np.zeros((len(prompts), len(answers)))
        for i, p in enumerate(prompts):
            shift = next((s for t, s in self.shift_by_text.items() if t in p.user), 0.0)
            low = int(np.floor(50 + shift))
            frac = 50 + shift - low
            rows[i, low] += 1 - frac
            rows[i, low + 1] += frac
        return {t: rows for t in temperatures}


def test_quick_plumbing_with_a_fake_run(pv, plugins, tmp_path):
    pytest.importorskip("catboost")
    pytest.importorskip("pyarrow")
    from surveysim_evshift.survey import instrument
    from surveysim_evshift.synth import write_population

    data = tmp_path / "out" / "data"
    write_population(data, n_subjects=200, seed=0)
    truth = json.loads((data / "truth.json").read_text())
    texts = {str(k): v for k, v in instrument()["interventions"].items()}
    true = truth["expected_mean_shift_by_intervention_population"]
    shift_by_text = {texts[k]: v for k, v in true.items()}

    class TruthBackend(Backend):
        def load(self, adapter):
            assert adapter is not None and adapter.name == "adapter"
            return TruthModel(shift_by_text)

    class Plugin:
        @hookimpl
        def register_backends(self, register):
            register("truth", TruthBackend)

    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text("{}")
    (run / "adapter" / "adapter_model.safetensors").write_bytes(b"")
    (run / "config.yaml").write_text(
        yaml.safe_dump({"survey": "evshift", "backend": {"name": "truth"}})
    )
    plugins.register(Plugin(), "truth-plugin")
    try:
        result = pv.main(["--quick", "--out", str(tmp_path / "out"), "--run", str(run)], plugins)
    finally:
        plugins.unregister("truth-plugin")
    # held-out statements are absent from the training file, and only from it
    train = pd.read_csv(data / "train_responses.csv", dtype=str, keep_default_na=False)
    full = pd.read_csv(data / "responses.csv", dtype=str, keep_default_na=False)
    held = full["intervention"].isin(pv.DEFAULT_HOLDOUT)
    assert held.any() and not train["intervention"].isin(pv.DEFAULT_HOLDOUT).any()
    assert len(train) == len(full) - held.sum()
    # the fake system reproduces the true shifts: rank correlation 1 over all and the unseen
    assert result["pilot"]["shift"]["spearman_all"] == pytest.approx(1.0)
    assert result["pilot"]["shift"]["spearman_unseen"] == pytest.approx(1.0)
    assert result["pilot"]["shift"]["predicted"]["21"] == pytest.approx(true["21"])
    # it ignores the persona, so no segment contrast is recovered
    assert not any(v["sign_recovered"] for v in result["pilot"]["interactions"].values())
    # CatBoost's text-free fallback gives every unseen statement the same shift: no ranking
    unseen = [result["catboost"]["shift"]["predicted"][s] for s in pv.DEFAULT_HOLDOUT]
    assert max(unseen) == pytest.approx(min(unseen))
    assert result["catboost"]["shift"]["spearman_unseen"] is None
    assert (tmp_path / "out" / "validation.md").read_text().count("|") > 10


@pytest.mark.parametrize("quick", [True, False])
def test_training_run_config_is_valid(pv, plugins, tmp_path, quick):
    from surveysim_core.run import plan_run

    config = pv.run_config("evshift", tmp_path / "train.csv", tmp_path, quick, None)
    plan = plan_run(config, "pilot_validation", plugins)
    assert plan.backend is not None and config.backend.systems == ["fine_tuned"]
    assert config.data.path == str(tmp_path / "train.csv")
    assert (config.backend.options.get("max_steps") == 2) is quick


def test_training_run_config_from_a_cpu_sized_config(pv, plugins, tmp_path):
    from surveysim_core.run import plan_run

    base = REPO / "surveys" / "evshift.yaml"
    config = pv.run_config("evshift", tmp_path / "train.csv", tmp_path, False, None, base)
    plan_run(config, "pilot_validation", plugins)
    default = yaml.safe_load(base.read_text())
    assert config.split.max_train_subjects == default["split"]["max_train_subjects"]
    for key in ("lora_layers", "learning_rate", "epochs", "target_modules"):
        assert config.backend.options[key] == default["backend"]["options"][key]
    assert config.backend.loss.name == default["backend"]["loss"]["name"]


def test_human_sample_shift_by_hand(pv, tmp_path):
    rows = [  # subject, seq, question, intervention, answer
        ("a", 1, "initial_preference", "", 50), ("a", 2, "post_intervention_preference", "1", 60),
        ("a", 3, "post_intervention_preference", "2", 40),
        ("b", 1, "initial_preference", "", 10), ("b", 2, "post_intervention_preference", "1", 30),
        ("c", 1, "initial_preference", "", 90), ("c", 2, "post_intervention_preference", "2", 0),
    ]  # fmt: skip
    responses = pd.DataFrame(
        rows, columns=["subject_id", "seq", "question", "intervention", "answer"]
    )
    got = pv.human_shifts(responses.astype(str), {"a", "b"}).set_index("statement")["mean_shift"]
    # statement 1: a +10, b +20 -> 15; statement 2: a 40 - 60 = -20 (c is not in the sample)
    assert got.to_dict() == {"1": 15.0, "2": -20.0}
    (tmp_path / "splits.csv").write_text("subject_id,split\na,train\nb,test\nc,test\n")
    assert pv.run_subjects(tmp_path, "test") == {"b", "c"}
    assert pv.run_subjects(tmp_path / "none", "test") is None


def test_an_unfinished_training_run_is_resumed_and_a_finished_one_reused(pv, tmp_path,
                                                                       monkeypatch):  # fmt: skip
    import surveysim_core.run as core_run

    calls = []
    monkeypatch.setattr(pv, "run_config", lambda *a, **k: "config")
    monkeypatch.setattr(core_run, "execute", lambda *a, **k: calls.append(k["resume"]))
    train = tmp_path / "train.csv"
    pv.train_run("evshift", train, tmp_path, False, None, None)  # nothing there: a new run
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "status.json").write_text(json.dumps({"finished": False}))
    pv.train_run("evshift", train, tmp_path, False, None, None)  # interrupted: resumed
    (tmp_path / "run" / "status.json").write_text(json.dumps({"finished": True}))
    assert pv.train_run("evshift", train, tmp_path, False, None, None) == tmp_path / "run"
    assert calls == [False, True]  # the finished run is not run again


def test_markdown_prints_rho_with_its_p_value(pv):
    shift = {"spearman_all": 0.72, "p_all": 0.0001, "spearman_unseen": 0.9, "p_unseen": 5 / 120}
    result = {
        "holdout": ["11", "21", "3", "25", "32"], "personas": 500, "survey": "evshift",
        "quick": False, "pilot": {"shift": shift, "interactions": {}},
        "catboost": {"shift": {"spearman_all": 0.5, "spearman_unseen": None}, "interactions": {}},
    }  # fmt: skip
    text = pv.markdown(result)
    assert "| pilot | 0.720 (p < 0.001) | 0.900 (p = 0.042) |" in text
    # older results without p-values, and an undefined rho, still print
    assert "| catboost | 0.500 | undefined (constant) |" in text
