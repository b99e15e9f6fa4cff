"""The report's pieces on hand-made metrics: headline wording, failed systems, labels, the
RMSE-KL zoom and the per-system log line."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from surveysim_sklearn.report import _failures, _zoom, kl_rmse_table

from surveysim_core.report import (
    failed_systems,
    headlines,
    system_headline,
    system_label,
)

ROWS = [
    # system, setting, temperature, metric, value, ci_low, ci_high
    ("marginal", "training-marginal", None, "kl", 0.20, 0.10, 0.30),
    ("marginal", "training-marginal", None, "rmse", 30.0, 28.0, 32.0),
    ("catboost", "catboost-1", None, "kl", 0.25, 0.15, 0.35),
    ("catboost", "catboost-1", None, "rmse", 20.0, 18.0, 22.0),
    ("catboost", "catboost-2", None, "kl", 0.30, 0.20, 0.40),
    ("catboost", "catboost-2", None, "rmse", 19.0, 17.0, 21.0),
    ("fine_tuned", "hf", 1.0, "kl", 0.05, 0.01, 0.09),
    ("fine_tuned", "hf", 1.0, "rmse", 24.0, 22.0, 26.0),
    ("fine_tuned", "hf", 1.0, "success_rate", 1.0, 1.0, 1.0),
    ("zero_shot", "hf", 0.0, "success_rate", 0.0, 0.0, 0.0),  # no valid answer: no kl, no rmse
    ("zero_shot", "hf", 1.0, "kl", 4.0, 3.5, 4.5),
    ("zero_shot", "hf", 1.0, "rmse", 72.0, 70.0, 74.0),
    ("zero_shot", "hf", 1.0, "success_rate", 0.9, 0.85, 0.95),
    ("floor:sampling", "", None, "kl", 0.08, 0.03, 0.15),
    ("floor:marginal", "", None, "kl", 0.02, np.nan, np.nan),
    ("floor:marginal", "", None, "rmse", 31.0, np.nan, np.nan),
]


def metrics() -> pd.DataFrame:
    frame = pd.DataFrame(
        ROWS, columns=["system", "setting", "temperature", "metric", "value", "ci_low", "ci_high"]
    )
    frame["temperature"] = frame["temperature"].astype(float)
    frame["question"] = "q"
    frame["segment"] = "all"
    frame["sd"] = np.nan
    frame["n"] = 40
    return frame


def differences() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"system": "fine_tuned", "setting": "hf", "question": "q", "temperature": 1.0,
             "metric": "kl", "against": "marginal baseline", "reference": "marginal",
             "reference_setting": "training-marginal", "value": 0.05, "reference_value": 0.20,
             "difference": -0.15, "ci_low": -0.25, "ci_high": -0.05, "higher_is_better": False},
            {"system": "fine_tuned", "setting": "hf", "question": "q", "temperature": 1.0,
             "metric": "kl", "against": "best baseline", "reference": "marginal",
             "reference_setting": "training-marginal", "value": 0.05, "reference_value": 0.20,
             "difference": -0.15, "ci_low": -0.25, "ci_high": -0.05, "higher_is_better": False},
            {"system": "catboost", "setting": "catboost-2", "question": "q", "temperature": None,
             "metric": "rmse", "against": "marginal baseline", "reference": "marginal",
             "reference_setting": "training-marginal", "value": 19.0, "reference_value": 30.0,
             "difference": -11.0, "ci_low": -13.0, "ci_high": 2.0, "higher_is_better": False},
        ]
    )  # fmt: skip


def test_headline_names_the_best_system_with_its_interval_and_the_floors():
    (h,) = headlines(metrics(), differences())
    kl, rmse = h.sentences
    assert "<b class='best'>fine_tuned t=1</b> with 0.050 (95% CI 0.010 to 0.090)" in kl
    assert "marginal baseline (sampled) (0.200) the difference is -0.150" in kl
    assert "paired 95% CI -0.250 to -0.050: a real improvement" in kl
    assert "CatBoost's best setting scores 0.250 [0.150, 0.350]" in kl
    # 0.05 is inside the sampling floor's range (0.03 to 0.15)
    assert "within sampling noise" in kl
    # a grid system is named with its setting; the interval includes 0: no verdict of "better"
    assert "<b class='best'>catboost [catboost-2]</b> with 19.00" in rmse
    assert "not distinguishable from it at 95%" in rmse
    assert "exact marginal floor scores 31.00" in rmse


def test_labels_tell_the_two_marginals_apart_and_name_settings_of_grids_only():
    assert system_label("marginal", "training-marginal", np.nan, {"catboost"}) == (
        "marginal baseline (sampled)"
    )
    assert system_label("floor:marginal") == "exact marginal floor"
    assert system_label("catboost", "catboost-2", np.nan, {"catboost"}) == "catboost [catboost-2]"
    assert system_label("fine_tuned", "hf", 0.0, {"catboost"}) == "fine_tuned t=0"


def test_failed_systems_are_listed_with_their_success_rate():
    listed = failed_systems(metrics())
    assert listed == ["zero_shot t=0 on q: 0% valid answers (no valid answer, so no KL or RMSE)"]
    table = kl_rmse_table(metrics())
    assert _failures(metrics(), table) == {"q": ["zero_shot t=0: 0% valid"]}


def test_rmse_kl_zoom_keeps_floors_and_baselines_and_leaves_far_outliers_off_scale():
    # anchors (floors, baselines) up to 0.3; values 0.05 .. 4.0 (the zero-shot outlier)
    kl = np.array([0.05, 0.2, 0.25, 0.3, 4.0])
    limit = _zoom(kl, np.array([0.08, 0.2, 0.3]))
    # everything up to 1.6 x 0.3 = 0.48 is kept; the largest such value is 0.3; 8% margin
    assert limit == 0.3 * 1.08
    assert limit < 4.0


def test_system_headline_for_the_log():
    frame = metrics()
    line = system_headline(frame[frame["system"] == "catboost"])
    assert line == (
        "scored catboost (best of 2 settings): q: kl 0.250 [0.150, 0.350], rmse 19.00 [17.00, 21.00]"
    )


def test_headline_table_shows_a_grid_by_its_best_settings_once_each():
    rows = []
    for i, (kl, rmse) in enumerate([(0.3, 20.0), (0.2, 19.0), (0.1, 18.0), (0.4, 21.0)], start=1):
        for metric, value in (("kl", kl), ("rmse", rmse)):
            rows.append(("svr", f"svr-{i}", metric, value))
    frame = pd.DataFrame(rows, columns=["system", "setting", "metric", "value"])
    frame = frame.assign(temperature=np.nan, question="q", segment="all", sd=np.nan,
                         ci_low=frame["value"] - 0.01, ci_high=frame["value"] + 0.01, n=10)  # fmt: skip
    (h,) = headlines(frame, pd.DataFrame())
    assert h.table.count("svr [svr-3] (best kl on test, best rmse on test of the grid)") == 1
    assert "svr-1" not in h.table and "svr-4" not in h.table


def test_readouts_are_named_and_kept_apart():
    rows = [
        # system, setting, readout, temperature, metric, value
        ("marginal", "training-marginal", "answer", None, "kl", 0.20),
        ("marginal", "training-marginal", "answer", None, "rmse", 30.0),
        ("fine_tuned", "hf", "sample", 1.0, "kl", 0.10),
        ("fine_tuned", "hf", "sample", 1.0, "rmse", 25.0),
        ("fine_tuned", "hf", "sample", 1.0, "success_rate", 1.0),
        ("fine_tuned", "hf", "expected", 1.0, "rmse", 18.0),  # E[a]: point metrics only
        ("fine_tuned", "hf", "greedy", 0.0, "kl", 0.9),
        ("fine_tuned", "hf", "greedy", 0.0, "rmse", 22.0),
        ("fine_tuned", "hf", "greedy", 0.0, "success_rate", 1.0),
    ]
    frame = pd.DataFrame(rows, columns=["system", "setting", "readout", "temperature", "metric",
                                        "value"])  # fmt: skip
    frame = frame.assign(question="q", segment="all", sd=np.nan, ci_low=frame["value"] - 0.01,
                         ci_high=frame["value"] + 0.01, n=10)  # fmt: skip
    frame["temperature"] = frame["temperature"].astype(float)
    (h,) = headlines(frame, pd.DataFrame())
    assert "<b class='best'>fine_tuned t=1</b> with 0.100" in h.sentences[0]
    assert "<b class='best'>fine_tuned t=1 (expected)</b> with 18.00" in h.sentences[1]
    # the E[a] readout has no KL and no success rate, and is not a failure
    assert failed_systems(frame) == []
    # one table row per readout: sample, expected and greedy of fine_tuned, and the baseline
    for label in ("fine_tuned t=1<", "fine_tuned t=1 (expected)<", "fine_tuned t=0<"):
        assert h.table.count(label) == 1, label


def test_exact_mass_sums_the_stored_distributions(tmp_path):

    pytest.importorskip("pyarrow")
    from surveysim_std.answer_types import IntegerAnswer, IntegerOptions

    from surveysim_core.report import exact_mass

    five = IntegerAnswer(IntegerOptions(min=1, max=5))
    folder = tmp_path / "systems" / "fine_tuned"
    folder.mkdir(parents=True)
    pd.DataFrame(
        {
            "temperature": [1.0, 1.0, 0.0, 1.0],
            "question": ["q", "q", "q", "other"],
            "probs": [[0.5, 0.5, 0, 0, 0], [0, 0.2, 0.3, 0.4, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 1]],
        }
    ).to_parquet(folder / "distributions.parquet")
    row = pd.Series({"system": "fine_tuned", "temperature": 1.0})
    # t=1 rows of q only: 0.5+0, 0.5+0.2, 0+0.3, 0+0.4, 0+0 (0.1 of the second row is failure)
    np.testing.assert_allclose(exact_mass(tmp_path, row, "q", five), [0.5, 0.7, 0.3, 0.4, 0.0])
    assert exact_mass(tmp_path, pd.Series({"system": "svr", "temperature": 1.0}), "q", five) is None
