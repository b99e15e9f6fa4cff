"""Baselines that need no model: uniform random answers and training-marginal answers."""

from __future__ import annotations

import numpy as np

from surveysim_core.protocols import Baseline, BaselinePrediction, ItemSet
from surveysim_core.weights import item_weights


class RandomBaseline(Baseline):
    """Each answer drawn uniformly from the question's valid answers; its ``expected`` point
    prediction is the mean of the valid answers."""

    gives_expected = True

    def predict(self, train: ItemSet, test: ItemSet, seed: int):
        rng = np.random.default_rng(seed)
        codes = np.full(len(test), np.nan)
        expected = np.full(len(test), np.nan)
        for qid in test.items["question"].unique():
            mask = test.question_mask(qid)
            support = test.answer_types[qid].support
            codes[mask] = rng.choice(support, size=int(mask.sum()))
            expected[mask] = float(np.mean(support))
        yield BaselinePrediction("uniform", {}, codes, expected)


class MarginalBaseline(Baseline):
    """Each answer drawn from the training split's answers to the same question (each training
    answer drawn with probability proportional to its survey weight, if the data have weights);
    its ``expected`` point prediction is the (weighted) training mean, the same for everyone."""

    gives_expected = True

    def predict(self, train: ItemSet, test: ItemSet, seed: int):
        rng = np.random.default_rng(seed)
        codes = np.full(len(test), np.nan)
        expected = np.full(len(test), np.nan)
        weights = item_weights(train.items)
        for qid in test.items["question"].unique():
            mask = test.question_mask(qid)
            in_train = train.question_mask(qid)
            pool = train.items.loc[in_train, "answer"].to_numpy(float)
            p = None if weights is None else weights[in_train] / weights[in_train].sum()
            if len(pool):
                codes[mask] = rng.choice(pool, size=int(mask.sum()), p=p)
                expected[mask] = float(np.average(pool, weights=p))
        yield BaselinePrediction("training-marginal", {}, codes, expected)
