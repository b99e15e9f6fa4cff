"""Stages and the System interface: a backend that declares its own system kinds, one scorer for
baselines and language models, system ids, metric directions, and the deprecated names."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from pydantic import BaseModel, ConfigDict

from surveysim_core import hookimpl
from surveysim_core.config import RunConfig
from surveysim_core.errors import ConfigError
from surveysim_core.evaluate import system_id
from surveysim_core.protocols import Backend, Metric, Progress
from surveysim_core.run import execute, plan_run
from surveysim_core.scoring import summary_table

QUIET = Progress(lambda message: None)


class FixedAnswerModel:
    """Writes the same answer to every prompt, whatever the temperature."""

    def __init__(self, text: str):
        self.text = text

    def generate(self, prompts, temperature, max_new_tokens, seed):
        return [self.text] * len(prompts)


class KindsBackend(Backend):
    """A backend with two system kinds of its own: ``parrot`` answers 3 with no training,
    ``tuned`` "trains" (writes a marker into its adapter folder) and then answers 5."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        offset: int = 0  # added to every answer, trained or not
        rank: int = 4  # training only
        lr: float = 0.1  # training only

    system_kinds = ("parrot", "tuned")
    training_options = frozenset({"rank", "lr"})
    trained: ClassVar[list[Path]] = []

    def adapter_for(self, kind, train, val, loss, out_dir, resume):
        if kind == "parrot":
            return None
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "marker").write_text(f"{len(train)} examples", encoding="utf-8")
        KindsBackend.trained.append(out_dir)
        return out_dir

    @classmethod
    def system_settings(cls, kind, options, loss):
        if kind == "parrot":  # not trained: training options and the loss do not matter
            return {"options": {k: v for k, v in options.items() if k not in cls.training_options}}
        return {"options": options, "loss": loss}

    def load(self, adapter):
        offset = self.options.offset if self.options is not None else 0
        return FixedAnswerModel(str((5 if adapter is not None else 3) - offset))


class NoLoss:
    def __init__(self, options=None):
        self.options = options


class KindsPlugin:
    @hookimpl
    def register_backends(self, register):
        register("kinds", KindsBackend)

    @hookimpl
    def register_losses(self, register):
        register("no_loss", NoLoss)


@pytest.fixture
def kinds_plugins(satisfaction_plugins):
    satisfaction_plugins.register(KindsPlugin(), "kinds-plugin")
    KindsBackend.trained = []
    yield satisfaction_plugins
    satisfaction_plugins.unregister("kinds-plugin")


def kinds_config(tmp_path: Path, run: dict | None = None, **backend) -> RunConfig:
    return RunConfig.model_validate(
        {
            **(run or {}),
            "survey": "satisfaction",
            "data": {"subjects": 60, "seed": 1},
            "baselines": [{"name": "marginal"}],
            "backend": {"name": "kinds", "loss": {"name": "no_loss"}, **backend},
            "decoding": {"decoder": "sample", "temperatures": [0.0, 1.0]},
            "evaluation": {"bootstrap": 5},
            "output": {"dir": str(tmp_path / "runs")},
        }
    )


def test_the_backend_declares_its_system_kinds_and_the_plan_checks_them(tmp_path, kinds_plugins):
    plan = plan_run(kinds_config(tmp_path), "k.yaml", kinds_plugins)
    assert plan.lm_systems == ["parrot", "tuned"]  # all declared kinds by default
    plan = plan_run(kinds_config(tmp_path, systems=["tuned"]), "k.yaml", kinds_plugins)
    assert plan.lm_systems == ["tuned"]
    # the core knows no kind by name: zero_shot is not a kind of this backend
    with pytest.raises(ConfigError, match=r"k\.yaml: backend\.systems: \['zero_shot'\] not a"):
        plan_run(kinds_config(tmp_path, systems=["zero_shot"]), "k.yaml", kinds_plugins)


def test_baselines_and_backend_kinds_run_through_one_scorer(tmp_path, kinds_plugins):
    run = execute(
        kinds_config(tmp_path), "k.yaml", kinds_plugins, run_dir=str(tmp_path / "r"),
        progress=QUIET,
    )  # fmt: skip
    metrics = pd.read_csv(run.dir / "metrics.csv", keep_default_na=False, na_values=[""])
    assert {"marginal", "parrot", "tuned"} <= set(metrics["system"])
    # the trained kind trained once, into the run's adapter folder, on the training answers
    assert KindsBackend.trained == [run.dir / "adapter"]
    assert (run.dir / "adapter" / "marker").read_text() == "48 examples"
    # hand-worked RMSE: parrot always answers 3, tuned always 5
    preds = pd.read_csv(run.dir / "systems" / "marginal" / "predictions.csv")
    truth = preds["true_answer"].tolist()
    for system, answer in [("parrot", 3), ("tuned", 5)]:
        expected = math.sqrt(sum((answer - y) ** 2 for y in truth) / len(truth))
        rows = metrics[
            (metrics["system"] == system)
            & (metrics["metric"] == "rmse")
            & (metrics["segment"] == "all")
        ]
        assert sorted(rows["temperature"]) == [0.0, 1.0]
        assert rows["value"].to_numpy() == pytest.approx([expected, expected])
        lm_preds = pd.read_csv(
            run.dir / "systems" / system / "predictions.csv", dtype={"text": str}
        )
        # one layout of predictions for every system
        assert list(lm_preds.columns[: len(preds.columns)]) == list(preds.columns)
        assert set(lm_preds["answer"]) == {answer} and set(lm_preds["text"]) == {str(answer)}
    # each system's rows carry the id of its full settings, which settings.csv spells out
    settings = pd.read_csv(run.dir / "settings.csv")
    assert list(settings["system"]) == ["marginal", "parrot", "tuned"]
    for _, row in settings.iterrows():
        full = json.loads(row["settings"])
        assert system_id(full) == row["system_id"]
        ids = set(metrics.loc[metrics["system"] == row["system"], "system_id"])
        assert ids == {row["system_id"]}
    tuned = json.loads(settings.loc[settings["system"] == "tuned", "settings"].iloc[0])
    assert tuned["kind"] == "tuned" and tuned["backend"] == "kinds"
    assert tuned["decoding"]["temperatures"] == [0.0, 1.0]
    floors = metrics[metrics["system"].str.startswith("floor:")]
    assert floors["system_id"].isna().all()


def test_system_id_is_short_stable_and_depends_on_every_setting():
    a = {"kind": "tuned", "options": {"lora_r": 8, "lr": 1e-4}}
    assert system_id(a) == system_id({"options": {"lr": 1e-4, "lora_r": 8}, "kind": "tuned"})
    assert system_id(a) != system_id({"kind": "tuned", "options": {"lora_r": 4, "lr": 1e-4}})
    assert len(system_id(a)) == 10 and int(system_id(a), 16) >= 0


def test_summary_picks_a_grids_best_setting_by_each_metrics_own_direction():
    class Error(Metric):
        lower_is_better = True
        summary = True

    class Hits(Metric):
        lower_is_better = False
        summary = True

    class Count(Metric):  # no direction: shown, never used to pick a best
        summary = True

    class Hidden(Metric):
        lower_is_better = True

    rows = []
    for i, (error, hits) in enumerate([(0.5, 0.1), (0.2, 0.3), (0.9, 0.8), (0.4, 0.2)]):
        for metric, value in [("error", error), ("hits", hits), ("count", i), ("hidden", 0)]:
            rows.append(
                {"system": "grid", "setting": f"s{i}", "question": "q", "temperature": np.nan,
                 "segment": "all", "metric": metric, "value": value}
            )  # fmt: skip
    table = summary_table(
        pd.DataFrame(rows),
        catalogue={"count": Count(), "hits": Hits(), "error": Error(), "hidden": Hidden()},
    )
    lines = table.splitlines()
    header = next(line for line in lines if line.strip().startswith("system"))
    # directed metrics first, in catalogue order; a metric not for the summary is left out
    assert header.split() == ["system", "t", "hits", "error", "count"]
    assert any(line.strip().startswith("grid best error on test (s1)") for line in lines)
    assert any(line.strip().startswith("grid best hits on test (s2)") for line in lines)
    assert not any("best count" in line for line in lines)


def test_std_metrics_carry_their_direction(plugins):
    directions = {name: plugins.metrics.get(name).lower_is_better for name in plugins.metrics}
    assert directions["kl"] is True and directions["rmse"] is True and directions["nll"] is True
    assert directions["accuracy"] is False and directions["representativeness"] is False
    assert directions["success_rate"] is None


def test_core_defaults_validate_with_only_core_and_std(tmp_path, monkeypatch):
    from conftest import SatisfactionPlugin

    from surveysim_core.plugins import Plugins

    monkeypatch.setenv("SURVEYSIM_LOAD_PLUGINS", "std")
    only_std = Plugins()
    only_std.register(SatisfactionPlugin(), "satisfaction-plugin")
    loaded = {name for name, _ in only_std.pm.list_name_plugin()}
    assert loaded == {"std", "satisfaction-plugin"}
    plan = plan_run(RunConfig(survey="satisfaction"), "defaults.yaml", only_std)
    assert plan.backend is None and list(plan.metrics)  # every default resolved


def test_the_old_private_examples_name_warns_and_still_works(tmp_path, satisfaction_plugins):
    from surveysim_core import run as run_module
    from surveysim_core.items import build_items, examples, load_data

    config = RunConfig.model_validate(
        {"survey": "satisfaction", "data": {"subjects": 20}, "output": {"dir": str(tmp_path)}}
    )
    plan = plan_run(config, "s.yaml", satisfaction_plugins)
    data = load_data(plan, tmp_path, satisfaction_plugins, QUIET)
    items = build_items(plan, data, list(data.respondents.index[:3]))
    with pytest.warns(DeprecationWarning, match="use surveysim_core.items.examples"):
        old = run_module._examples(items)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = examples(items)
    assert old == new and len(new) == 3
    assert [e.answer_text for e in new] == items.items["answer_text"].tolist()


def lm_rmse(metrics: pd.DataFrame, system: str) -> list[float]:
    rows = metrics[
        (metrics["system"] == system)
        & (metrics["metric"] == "rmse")
        & (metrics["segment"] == "all")
    ]
    return rows.sort_values("temperature")["value"].tolist()


def hand_rmse(truth: list[int], answer: int) -> float:
    return math.sqrt(sum((answer - y) ** 2 for y in truth) / len(truth))


def test_a_sweep_over_training_options_shares_one_zero_shot_pass(tmp_path, kinds_plugins):
    sweep = {"backend.options.rank": [4, 8], "backend.options.lr": [0.1, 0.2]}
    run = execute(
        kinds_config(tmp_path, run={"sweep": sweep}), "k.yaml", kinds_plugins,
        run_dir=str(tmp_path / "r"), progress=QUIET,
    )  # fmt: skip
    metrics = pd.read_csv(run.dir / "metrics.csv")
    lm = sorted(
        set(metrics["system"])
        - {"marginal"}
        - {s for s in metrics["system"] if s.startswith("floor:")}
    )
    assert lm == [
        "parrot",
        "tuned@rank=4,lr=0.1", "tuned@rank=4,lr=0.2", "tuned@rank=8,lr=0.1", "tuned@rank=8,lr=0.2",
    ]  # fmt: skip
    # 4 trainings, each into its own folder; the untrained kind ran once
    assert len(KindsBackend.trained) == 4 and len(set(KindsBackend.trained)) == 4
    assert all(p.parent == run.dir / "adapters" for p in KindsBackend.trained)
    settings = pd.read_csv(run.dir / "settings.csv")
    assert settings["system_id"].is_unique and len(settings) == 1 + 5  # marginal + 5 LM systems
    tuned = settings[settings["system"] == "tuned@rank=8,lr=0.2"]["settings"].iloc[0]
    assert json.loads(tuned)["options"] == {"offset": 0, "rank": 8, "lr": 0.2}
    assert (
        "rank"
        not in json.loads(settings[settings["system"] == "parrot"]["settings"].iloc[0])["options"]
    )
    truth = pd.read_csv(run.dir / "systems" / "marginal" / "predictions.csv")[
        "true_answer"
    ].tolist()
    assert lm_rmse(metrics, "parrot") == pytest.approx([hand_rmse(truth, 3)] * 2)
    assert lm_rmse(metrics, "tuned@rank=4,lr=0.2") == pytest.approx([hand_rmse(truth, 5)] * 2)
    summary = (run.dir / "summary.txt").read_text()
    assert all(name in summary for name in lm)  # the summary shows every system


def test_variants_name_more_language_model_systems(tmp_path, kinds_plugins):
    variants = [{"label": "shifted", "set": {"backend.options.offset": 1}}]
    config = kinds_config(tmp_path, run={"variants": variants}, systems=["parrot"])
    run = execute(config, "k.yaml", kinds_plugins, run_dir=str(tmp_path / "r"), progress=QUIET)
    truth = pd.read_csv(run.dir / "systems" / "marginal" / "predictions.csv")[
        "true_answer"
    ].tolist()
    assert lm_rmse(run.metrics, "parrot@base") == pytest.approx([hand_rmse(truth, 3)] * 2)
    assert lm_rmse(run.metrics, "parrot@shifted") == pytest.approx([hand_rmse(truth, 2)] * 2)
    with pytest.raises(
        ConfigError, match=r"k\.yaml: \(variants\.0\) backend\.options\.ofset: unknown key"
    ):
        bad = [{"set": {"backend.options.ofset": 1}}]
        plan_run(kinds_config(tmp_path, run={"variants": bad}), "k.yaml", kinds_plugins)


def test_set_on_a_swept_key_gives_the_list_and_only_lm_keys_sweep(tmp_path):
    from surveysim_core.config import load_config

    path = tmp_path / "s.yaml"
    path.write_text(
        "survey: satisfaction\nbackend: {name: kinds}\nsweep: {backend.options.rank: [4, 8]}\n",
        encoding="utf-8",
    )
    assert load_config(path).sweep == {"backend.options.rank": [4, 8]}
    config = load_config(path, ["backend.options.rank=[2, 3, 16]"])
    assert config.sweep == {"backend.options.rank": [2, 3, 16]}
    assert load_config(path, ["backend.options.rank=5"]).sweep == {"backend.options.rank": [5]}
    # a new swept key from the command line
    config = load_config(path, ["sweep.decoding.max_new_tokens=[4, 8]"])
    assert config.sweep == {"backend.options.rank": [4, 8], "decoding.max_new_tokens": [4, 8]}
    with pytest.raises(ConfigError, match=r"s\.yaml: .*sweep: data\.seed: only keys under backend"):
        load_config(path, ["sweep={data.seed: [1, 2]}"])


def test_the_old_summary_metrics_constant_warns_and_still_works():
    from surveysim_core import scoring

    with pytest.warns(DeprecationWarning, match="Metric.lower_is_better"):
        old = scoring.SUMMARY_METRICS
    assert old == {
        "kl": True, "rmse": True, "pearson": False, "accuracy": False, "nll": True,
        "success_rate": False,
    }  # fmt: skip
    with pytest.raises(AttributeError):
        scoring.NO_SUCH_NAME  # noqa: B018
