"""End-to-end: the ANES 1996 survey through ``surveysim_core.run.execute`` with two baselines.

Expected numbers are computed here from the statsmodels data and the run's own split, not read
from the metrics the run wrote.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import surveysim_anes96.plugin
from surveysim_anes96.codebook import QUESTION_COLUMNS, load_raw

from surveysim_core.config import RunConfig
from surveysim_core.plugins import Plugins
from surveysim_core.run import execute
from surveysim_core.scoring import summary_table

QUESTIONS = ["self_placement", "party_id", "clinton_placement", "dole_placement", "vote"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    plugins = Plugins()
    if "anes96" not in plugins.surveys:
        plugins.register(surveysim_anes96.plugin, "anes96")
    out = tmp_path_factory.mktemp("anes96")
    config = RunConfig.model_validate(
        {
            "survey": "anes96",
            "data": {"source": "synthetic", "seed": 0},
            "evaluation": {"segments": ["education", "age"], "bootstrap": 20},
            "baselines": [{"name": "random"}, {"name": "marginal"}],
            "output": {"dir": str(out)},
        }
    )
    messages: list[str] = []
    from surveysim_core.protocols import Progress

    return execute(
        config, "test.yaml", plugins, run_dir=str(out / "run"), progress=Progress(messages.append)
    )


@pytest.fixture(scope="module")
def raw():
    return load_raw()


@pytest.fixture(scope="module")
def splits(run):
    return pd.read_csv(run.dir / "splits.csv", dtype={"subject_id": str})


def overall(run, system, question, metric):
    m = run.metrics
    rows = m[
        (m["system"] == system)
        & (m["question"] == question)
        & (m["metric"] == metric)
        & (m["segment"] == "all")
    ]
    assert len(rows) == 1, (system, question, metric)
    return float(rows["value"].iloc[0])


def test_data_is_the_whole_sample(run, splits):
    assert (run.dir / "data" / "responses.csv").exists()
    assert (run.dir / "data" / "source.json").exists()
    assert len(splits) == 944
    sizes = splits["split"].value_counts()
    for name, share in [("train", 0.8), ("val", 0.1), ("test", 0.1)]:
        assert abs(sizes[name] - share * 944) <= 1, name


@pytest.mark.parametrize("system", ["random", "marginal"])
def test_metrics_for_every_question(run, system):
    m = run.metrics[(run.metrics["system"] == system) & (run.metrics["segment"] == "all")]
    assert sorted(m["question"].unique()) == sorted(QUESTIONS)
    for qid in QUESTIONS:
        got = set(m.loc[m["question"] == qid, "metric"])
        assert {"kl", "accuracy", "success_rate"} <= got, qid
        if qid == "vote":  # unordered: no distance-based metric
            assert not got & {"rmse", "wasserstein"}
        else:
            assert {"rmse", "wasserstein"} <= got, qid
    # the one undefined value: the correlation of a constant (a sampling baseline's mean as its
    # point prediction gives everyone the same answer)
    undefined = m[~np.isfinite(m["value"])]
    assert set(zip(undefined["metric"], undefined["readout"], strict=True)) <= {
        ("pearson", "expected")
    }
    spread = m.loc[(m["metric"] == "spread") & (m["readout"] == "expected"), "value"]
    assert np.allclose(spread, 0.0, atol=1e-9)


def test_segments_by_education_and_age(run):
    segs = set(run.metrics.loc[run.metrics["system"] == "marginal", "segment"])
    assert "education=high school graduate" in segs
    assert "age=30-39" in segs


def test_true_answers_come_from_the_raw_data(run, raw, splits):
    preds = pd.read_csv(
        run.dir / "systems" / "random" / "predictions.csv", dtype={"subject_id": str}
    )
    assert len(preds) == (splits["split"] == "test").sum() * 5
    for rec in preds.to_dict("records"):
        code = raw.loc[int(rec["subject_id"]), QUESTION_COLUMNS[rec["question"]]]
        assert rec["true_answer"] == code, rec


def test_vote_accuracy_of_random_matches_its_predictions(run):
    preds = pd.read_csv(run.dir / "systems" / "random" / "predictions.csv")
    vote = preds[preds["question"] == "vote"]
    hits = sum(1 for t, a in zip(vote["true_answer"], vote["answer"], strict=True) if t == a)
    assert overall(run, "random", "vote", "accuracy") == pytest.approx(hits / len(vote))


def test_vote_floors_against_hand_computation(run, raw, splits):
    train = splits.loc[splits["split"] == "train", "subject_id"].astype(int)
    test = splits.loc[splits["split"] == "test", "subject_id"].astype(int)
    p_dole = raw.loc[train, "vote"].mean()  # training share of Dole
    c_dole = raw.loc[test, "vote"].mean()  # test share of Dole
    # a model answering Dole with probability p is right with probability p*c + (1-p)*(1-c)
    expected = p_dole * c_dole + (1 - p_dole) * (1 - c_dole)
    assert overall(run, "floor:marginal", "vote", "accuracy") == pytest.approx(expected)
    assert overall(run, "floor:uniform", "vote", "accuracy") == pytest.approx(0.5)
    # KL(human || uniform) with 0.5 pseudo-counts per bin (the std metrics' smoothing)
    n = len(test)
    dole = int(raw.loc[test, "vote"].sum())
    h = np.array([(n - dole + 0.5) / (n + 1), (dole + 0.5) / (n + 1)])
    kl = float(np.sum(h * np.log(h / 0.5)))
    assert overall(run, "floor:uniform", "vote", "kl") == pytest.approx(kl)


def test_summary_table_lists_every_question(run):
    text = summary_table(run.metrics)
    for qid in QUESTIONS:
        assert f"\n{qid}\n" in text
