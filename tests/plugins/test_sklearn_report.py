"""The sklearn plugin's hooks: lazy registration, baseline_points.csv and rmse_kl.png."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from types import SimpleNamespace

import numpy as np
import pandas as pd
from surveysim_sklearn import plugin

from surveysim_core.plugins import Plugins

# (system, setting, temperature) -> {question: (kl, rmse)}
POINTS = {
    ("svr", "svr-002", None): {"q1": (0.50, 20.0), "q2": (0.004, 30.0)},
    ("svr", "svr-005", None): {"q1": (0.30, 22.0), "q2": (0.002, 31.0)},
    ("svr", "svr-008", None): {"q1": (0.40, 23.0), "q2": (0.2, 29.0)},  # q1: dominated by 005
    ("catboost", "catboost-169", None): {"q1": (0.20, 21.0), "q2": (0.01, 28.0)},
    ("catboost", "catboost-289", None): {"q1": (0.10, 25.0), "q2": (0.02, 28.5)},  # q2: dominated
    ("random", "uniform", None): {"q1": (0.05, 40.0), "q2": (0.03, 41.0)},
    ("marginal", "training-marginal", None): {"q1": (0.01, 35.0), "q2": (0.001, 36.0)},
    ("floor:uniform", "", None): {"q1": (0.9, 38.0), "q2": (0.9, 39.0)},
    ("floor:split_half", "", None): {"q1": (0.02, 30.0), "q2": (0.01, 31.0)},
    ("zero_shot", "", 0.0): {"q1": (1.2, 33.0), "q2": (1.5, 35.0)},
    ("zero_shot", "", 1.0): {"q1": (0.3, 38.0), "q2": (0.1, 40.0)},
    ("fine_tuned", "", 1.0): {"q1": (0.04, 26.0), "q2": (0.02, 27.0)},
}
PARAMS = {
    "svr-002": {"kernel": "linear", "C": 0.03125, "epsilon": 0.25},
    "svr-005": {"kernel": "linear", "C": 0.5, "epsilon": 0.25},
    "svr-008": {"kernel": "linear", "C": 8.0, "epsilon": 0.25},
    "catboost-169": {"learning_rate": 0.01},
    "catboost-289": {"learning_rate": 0.1},
}


def metrics_frame() -> pd.DataFrame:
    rows = []
    for (system, setting, temperature), by_question in POINTS.items():
        for question, (kl, rmse) in by_question.items():
            base = {"system": system, "setting": setting, "question": question}
            base["temperature"] = np.nan if temperature is None else temperature
            for metric, value in (("kl", kl), ("rmse", rmse), ("success", 1.0)):
                rows.append({**base, "segment": "all", "metric": metric, "value": value})
                # a segment row that would change every front if it were (wrongly) used
                rows.append({**base, "segment": "region=North", "metric": metric, "value": 0.0})
    frame = pd.DataFrame(rows)
    frame["sd"] = np.nan
    frame["n"] = 100
    return frame


def settings_frame() -> pd.DataFrame:
    rows = [
        {"system": s.split("-")[0], "setting": s, "params": json.dumps(p, sort_keys=True)}
        for s, p in PARAMS.items()
    ]
    rows.append({"system": "random", "setting": "uniform", "params": "{}"})
    return pd.DataFrame(rows)


def test_report_writes_points_and_picture(tmp_path):
    run = SimpleNamespace(dir=tmp_path, metrics=metrics_frame(), settings=settings_frame())
    plugin.surveysim_write_report(run=run)

    points = pd.read_csv(tmp_path / "baseline_points.csv")
    assert set(points["system"]) == {"svr", "catboost"}  # no reference, floor or model rows
    assert len(points) == 5 * 2
    front = {(r.system, r.setting, r.question): r.on_front for r in points.itertuples()}
    # fronts worked out by hand from POINTS, per system and question
    assert front[("svr", "svr-002", "q1")] and front[("svr", "svr-005", "q1")]
    assert not front[("svr", "svr-008", "q1")]
    assert front[("svr", "svr-002", "q2")] and front[("svr", "svr-005", "q2")]
    assert front[("svr", "svr-008", "q2")]  # lowest RMSE of svr on q2
    assert front[("catboost", "catboost-169", "q1")] and front[("catboost", "catboost-289", "q1")]
    assert front[("catboost", "catboost-169", "q2")]
    assert not front[("catboost", "catboost-289", "q2")]
    row = points[(points["setting"] == "svr-008") & (points["question"] == "q1")].iloc[0]
    assert (row["kl"], row["rmse"], row["kernel"], row["C"]) == (0.40, 23.0, "linear", 8.0)
    assert points.columns[:3].tolist() == ["system", "setting", "question"]
    assert points.columns[-5:].tolist() == [
        "kl",
        "rmse",
        "on_front",
        "chosen_on_validation",
        "oracle",
    ]

    picture = tmp_path / "rmse_kl.png"
    assert picture.stat().st_size > 10_000
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    height, width = matplotlib.image.imread(picture).shape[:2]
    assert width > height  # two question panels side by side


def test_the_setting_chosen_on_validation_is_starred_and_the_front_is_the_oracle(
    tmp_path, monkeypatch
):
    import matplotlib.figure

    metrics = metrics_frame()
    # the run chose svr-008 on validation for q1 (by KL and RMSE), svr-002 for q2 by RMSE only
    chosen = (
        (metrics["system"] == "svr")
        & (
            ((metrics["setting"] == "svr-008") & (metrics["question"] == "q1"))
            | ((metrics["setting"] == "svr-002") & (metrics["question"] == "q2")
               & (metrics["metric"] == "rmse"))
        )
        & metrics["metric"].isin(["kl", "rmse"])
    )  # fmt: skip
    metrics["chosen_on"] = np.where(chosen, "validation", "")
    legends: list[list[str]] = []
    save = matplotlib.figure.Figure.savefig

    def recording_savefig(fig, *args, **kwargs):
        legends.append([t.get_text() for legend in fig.legends for t in legend.get_texts()])
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", recording_savefig)
    plugin.surveysim_write_report(
        run=SimpleNamespace(dir=tmp_path, metrics=metrics, settings=settings_frame())
    )
    points = pd.read_csv(tmp_path / "baseline_points.csv", keep_default_na=False)
    marks = {
        (r.setting, r.question): (r.chosen_on_validation, r.oracle) for r in points.itertuples()
    }
    # by hand from POINTS: svr q1 lowest KL svr-005 (0.30), lowest RMSE svr-002 (20.0);
    # svr q2 lowest KL svr-005 (0.002), lowest RMSE svr-008 (29.0)
    assert marks[("svr-008", "q1")] == ("kl,rmse", "")
    assert marks[("svr-005", "q1")] == ("", "kl")
    assert marks[("svr-002", "q1")] == ("", "rmse")
    assert marks[("svr-002", "q2")] == ("rmse", "")
    assert marks[("svr-008", "q2")] == ("", "rmse")
    assert marks[("catboost-169", "q1")] == ("", "rmse")  # lowest catboost RMSE on q1 (21.0)
    assert marks[("catboost-289", "q1")] == ("", "kl")
    assert "svr Pareto front: oracle (chosen on test)" in legends[-1]
    assert "svr chosen on validation" in legends[-1]
    assert "catboost chosen on validation" not in legends[-1]


def test_report_does_nothing_without_kl_or_rmse(tmp_path):
    metrics = metrics_frame()
    run = SimpleNamespace(
        dir=tmp_path, metrics=metrics[metrics["metric"] != "kl"], settings=settings_frame()
    )
    plugin.surveysim_write_report(run=run)
    assert list(tmp_path.iterdir()) == []


def test_plugin_registers_baselines_lazily():
    plugins = Plugins(load_entry_points=False)
    plugins.register(plugin, "sklearn")
    assert list(plugins.baselines) == ["catboost", "svr"]
    assert plugins.baselines.entry("svr").target == "surveysim_sklearn.svr:SVRBaseline"
    assert plugins.baselines.get("svr").__name__ == "SVRBaseline"
    names = {ep.name: ep.value for ep in metadata.entry_points(group="surveysim")}
    assert names.get("sklearn") == "surveysim_sklearn.plugin"


def test_importing_the_plugin_imports_no_heavy_library():
    code = (
        "import sys, surveysim_sklearn.plugin\n"
        "heavy = [m for m in ('sklearn', 'catboost', 'matplotlib', 'joblib') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
