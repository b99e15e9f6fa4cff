"""The ANES 1996 run config decodes every question exactly (the vote's candidate names too) and
reports the vote's position bias for the language model: its zero-shot system, with the tiny
random model of ``surveysim_hf.testing`` in place of SmolLM2 and no training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")
pytest.importorskip("pyarrow")

import surveysim_anes96.plugin
from surveysim_hf.testing import write_tiny_model

from surveysim_core.config import load_config
from surveysim_core.option_order import display_order
from surveysim_core.plugins import Plugins
from surveysim_core.protocols import Progress
from surveysim_core.run import execute

ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = ["self_placement", "party_id", "clinton_placement", "dole_placement", "vote"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    plugins = Plugins()
    if "anes96" not in plugins.surveys:
        plugins.register(surveysim_anes96.plugin, "anes96")
    tmp = tmp_path_factory.mktemp("anes96-exact")
    model = write_tiny_model(tmp / "tiny")
    config = load_config(
        ROOT / "surveys" / "anes96.yaml",
        [
            f"backend.options.model={model}",
            "backend.options.progress_bars=false",
            "backend.systems=[zero_shot]",
            "baselines=[{name: random}]",
            "split.max_test_subjects=16",
            "split.max_val_subjects=3",
            "evaluation.bootstrap=2",
            f"output.dir={tmp / 'runs'}",
        ],
    )
    assert config.decoding.decoder == "exact"
    assert config.decoding.option_order == "forward_reversed"
    return execute(
        config, "anes96.yaml", plugins, run_dir=str(tmp / "run"), progress=Progress(lambda m: None)
    )


def rows(run, question, metric):
    m = run.metrics
    return m[
        (m["system"] == "zero_shot")
        & (m["question"] == question)
        & (m["metric"] == metric)
        & (m["segment"] == "all")
        & (m["temperature"] == 1.0)
        & (m["readout"] == "sample")
    ]


def test_every_question_is_decoded_exactly(run):
    dist = pd.read_parquet(run.dir / "systems" / "zero_shot" / "distributions.parquet")
    assert sorted(dist["question"].unique()) == sorted(QUESTIONS)
    for qid in QUESTIONS:
        nll = rows(run, qid, "nll")["value"]  # nll needs exact distributions
        assert len(nll) == 1 and np.isfinite(nll.iloc[0]), qid
        probs = np.array(
            dist.loc[(dist["question"] == qid) & (dist["temperature"] == 1.0), "probs"].tolist()
        )
        # full probability rows, not one-hot samples: every answer has some mass
        assert (probs > 0).all() and (probs.sum(axis=1) <= 1 + 1e-9).all(), qid


def test_vote_position_bias_from_the_two_orders(run):
    dist = pd.read_parquet(run.dir / "systems" / "zero_shot" / "distributions.parquet")
    vote = dist[(dist["question"] == "vote") & (dist["temperature"] == 1.0)]
    probs = np.array(vote["probs"].tolist())  # columns: Clinton, Dole (the survey's order)
    forward = np.array(
        [display_order("forward_reversed", 2, s, "vote", 0) == (0, 1) for s in vote["subject_id"]]
    )
    assert forward.any() and not forward.all()  # both orders were shown
    # pooled mass per order, normalised, then half the L1 distance (k = 2: one difference)
    share_f = probs[forward].sum(axis=0) / probs[forward].sum()
    share_r = probs[~forward].sum(axis=0) / probs[~forward].sum()
    expected = abs(share_f[0] - share_r[0])
    got = rows(run, "vote", "position_bias")["value"]
    assert len(got) == 1 and got.iloc[0] == pytest.approx(expected, rel=1e-9)
    for position in (1, 2):
        assert len(rows(run, "vote", f"position_share_{position}")) == 1
    # the run's summary shows it beside the vote's other metrics
    summary = (run.dir / "summary.txt").read_text(encoding="utf-8")
    vote_table = summary.split("\nvote\n", 1)[1]
    assert "position_bias" in vote_table.splitlines()[0]
