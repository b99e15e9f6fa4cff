"""Train/test ItemSets from the EV-shift synthetic population, for timing the baselines.

Run from the repository root, e.g.
``.venv/bin/python plugins/surveysim-sklearn/benchmarks/time_default_grid.py --train 3000``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from surveysim_core.answers import AnswerType
from surveysim_core.protocols import ItemSet

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "plugins" / "surveysim-evshift"))


class Score0to100(AnswerType):
    """Integer answers 0..100 (stand-in for the core's integer answer type)."""

    def __init__(self):
        super().__init__(None)
        self.support = np.arange(101, dtype=float)
        self.labels = [str(i) for i in range(101)]


ITEM_COLUMNS = ["subject_id", "question", "intervention", "seq", "answer"]


def evshift_itemsets(n_train: int, n_test: int, seed: int = 0) -> tuple[ItemSet, ItemSet]:
    from surveysim_evshift.synth import synthesize_population

    responses, _ = synthesize_population(n_subjects=n_train + n_test, seed=seed)
    demographics = [c for c in responses.columns if c not in ITEM_COLUMNS]
    respondents = responses.groupby("subject_id", sort=False)[demographics].first()
    respondents["household"] = respondents["household"].map(lambda s: tuple(str(s).split("|")))
    items = responses[ITEM_COLUMNS].copy()
    items["intervention"] = items["intervention"].map(lambda v: "" if pd.isna(v) else str(int(v)))
    items["answer"] = items["answer"].astype(float)
    items["answer_text"] = items["answer"].map(lambda v: str(int(v)))
    ids = np.random.default_rng(seed).permutation(respondents.index.to_numpy())
    answer = Score0to100()
    types = {q: answer for q in items["question"].unique()}

    def itemset(subjects) -> ItemSet:
        rows = items[items["subject_id"].isin(set(subjects))].reset_index(drop=True)
        return ItemSet(rows, respondents.loc[list(subjects)], [], types)

    return itemset(ids[:n_train]), itemset(ids[n_train : n_train + n_test])
