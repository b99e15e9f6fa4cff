"""Baselines that need no model: uniform random answers and training-marginal answers."""

from __future__ import annotations

import numpy as np

from surveysim_core.protocols import Baseline, BaselinePrediction, ItemSet
from surveysim_core.weights import item_weights


class RandomBaseline(Baseline):
    """Each answer drawn uniformly from the question's valid answers."""

    def predict(self, train: ItemSet, test: ItemSet, seed: int):
        rng = np.random.default_rng(seed)
        codes = np.full(len(test), np.nan)
        for qid in test.items["question"].unique():
            mask = test.question_mask(qid)
            support = test.answer_types[qid].support
            codes[mask] = rng.choice(support, size=int(mask.sum()))
        yield BaselinePrediction("uniform", {}, codes)


class MarginalBaseline(Baseline):
    """Each answer drawn from the training split's answers to the same question (each training
    answer drawn with probability proportional to its survey weight, if the data have weights)."""

    def predict(self, train: ItemSet, test: ItemSet, seed: int):
        rng = np.random.default_rng(seed)
        codes = np.full(len(test), np.nan)
        weights = item_weights(train.items)
        for qid in test.items["question"].unique():
            mask = test.question_mask(qid)
            in_train = train.question_mask(qid)
            pool = train.items.loc[in_train, "answer"].to_numpy(float)
            p = None if weights is None else weights[in_train] / weights[in_train].sum()
            if len(pool):
                codes[mask] = rng.choice(pool, size=int(mask.sum()), p=p)
        yield BaselinePrediction("training-marginal", {}, codes)
