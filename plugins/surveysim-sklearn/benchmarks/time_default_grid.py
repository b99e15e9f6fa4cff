"""Wall time of the SVR and CatBoost baselines on the EV-shift synthetic population.

Usage (repository root): ``.venv/bin/python plugins/surveysim-sklearn/benchmarks/time_default_grid.py
[--train 3000] [--test 400] [--grid default] [--only svr|catboost]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evshift_itemsets import evshift_itemsets


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--test", type=int, default=400)
    parser.add_argument("--grid", default="default")
    parser.add_argument("--only", choices=["svr", "catboost"])
    args = parser.parse_args()
    train, test = evshift_itemsets(args.train, args.test)
    print(f"train rows {len(train.items)}, test rows {len(test.items)}")
    from surveysim_sklearn.catboost_baseline import CatBoostBaseline
    from surveysim_sklearn.svr import SVRBaseline

    truth = test.items["answer"].to_numpy(dtype=float)
    total = 0.0
    for cls in (SVRBaseline, CatBoostBaseline):
        if args.only and not cls.__module__.endswith(args.only.replace("catboost", "catboost_")):
            continue
        baseline = cls(cls.Options(grid=args.grid))
        start = time.perf_counter()
        for pred in baseline.predict(train, test, seed=0):
            rmse = np.sqrt(np.nanmean((pred.codes - truth) ** 2))
            elapsed = time.perf_counter() - start
            print(f"{elapsed:7.1f}s {pred.setting:14s} rmse {rmse:6.2f} {pred.params}", flush=True)
        took = time.perf_counter() - start
        total += took
        print(f"{cls.__name__}: {len(baseline.settings())} settings in {took:.1f}s")
    print(f"total {total:.1f}s")


if __name__ == "__main__":
    main()
