"""benchmarks/fidelity.py: the CatBoost reference (with --memory it sees the previous answer) and
the table's seed replicates."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("catboost")

from surveysim_core.answers import AnswerType
from surveysim_core.protocols import ItemSet

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fidelity():
    spec = importlib.util.spec_from_file_location("fidelity", REPO / "benchmarks" / "fidelity.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Scale(AnswerType):
    ordered = True

    def __init__(self):
        super().__init__(None)
        self.support = np.arange(0, 101, dtype=float)
        self.labels = [str(v) for v in range(101)]


def anchored(n: int, seed: int) -> ItemSet:
    """``post`` is each person's own ``pre`` answer + 10; the demographics carry nothing."""
    rng = np.random.default_rng(seed)
    ids = [f"r{seed}-{i}" for i in range(n)]
    respondents = pd.DataFrame(
        {"region": rng.choice(["N", "S"], n)}, index=pd.Index(ids, name="subject_id")
    )
    rows = []
    for sid in ids:
        pre = float(rng.integers(0, 91))
        rows += [(sid, "pre", None, 0, pre), (sid, "post", "a", 1, pre + 10)]
    items = pd.DataFrame(rows, columns=["subject_id", "question", "intervention", "seq", "answer"])
    return ItemSet(items, respondents, [], {"pre": Scale(), "post": Scale()})


def test_catboost_reference_uses_the_previous_answer_only_with_memory(fidelity):
    train, measure = anchored(150, 1), anchored(40, 2)
    post = (measure.items["question"] == "post").to_numpy()
    truth = measure.items["answer"].to_numpy(float)[post]
    error = {
        history: np.sqrt(
            np.mean((fidelity.catboost_reference(train, measure, history)[post] - truth) ** 2)
        )
        for history in (False, True)
    }
    assert error[True] < 5 < 20 < error[False], error


def _result(tag: str, seed: int | None, initial: float, **options) -> dict:
    base = {"epochs": 2, "learning_rate": 0.002, **options}
    if seed is not None:
        base["seed"] = seed
    return {
        "tag": tag, "train": 400, "persona": "paper", "memory": False, "loss": "cross_entropy",
        "loss_options": {}, "options": base,
        "questions": {"initial_preference": {"expected": {"pearson": initial}}},
    }  # fmt: skip


def test_seed_spread_groups_replicates_of_one_setting_only(fidelity):
    rows = [
        _result("a", None, 0.76),  # before the seed was recorded: the option's default, 0
        _result("b", 1, 0.39),
        _result("c", 1, 0.10, learning_rate=0.005),  # another setting: no replicate of a/b
        _result("d", 2, 0.50, learning_rate=0.005),
    ]
    lines = fidelity.seed_spread(rows)
    assert lines[0] == "seed replicates: a (seed 0), b (seed 1)"
    assert lines[1].split()[3:] == [
        "+0.76", "+0.39:", "range", "0.37", "(mean", "+0.57,", "min", "+0.39,", "max", "+0.76)"
    ]  # fmt: skip
    assert lines[2] == "seed replicates: c (seed 1), d (seed 2)"
    assert "range 0.40" in lines[3] and "mean +0.30" in lines[3]
    assert len(lines) == 4  # no fine-tuning minutes recorded in these rows
    timed = [{**r, "train_seconds": s} for r, s in zip(rows[:2], (600, 900), strict=True)]
    assert fidelity.seed_spread(timed)[-1] == "   fine-tuning 10.0-15.0 min a seed"


def test_seed_spread_needs_two_seeds(fidelity):
    # the same seed twice (a rerun) is not a seed replicate; a survey of its own is another setting
    other = {**_result("b", 1, 0.1), "survey": "evshift-0to9"}
    assert fidelity.seed_spread([_result("a", 0, 0.7), _result("a2", 0, 0.6), other]) == []
