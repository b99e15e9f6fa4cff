"""Pareto front of (KL, RMSE) points, checked against fronts worked out by hand."""

from __future__ import annotations

import numpy as np
from surveysim_sklearn.pareto import pareto_front


def test_front_of_a_hand_made_set():
    points = np.array(
        [
            [0.10, 30.0],  # 0 front: lowest KL
            [0.20, 25.0],  # 1 front
            [0.25, 26.0],  # 2 dominated by 1 (higher KL and RMSE)
            [0.30, 20.0],  # 3 front
            [0.50, 20.0],  # 4 dominated by 3 (same RMSE, higher KL)
            [0.60, 18.0],  # 5 front: lowest RMSE
            [0.15, 31.0],  # 6 dominated by 0
            [0.90, 40.0],  # 7 dominated by everything
        ]
    )
    expected = [True, True, False, True, False, True, False, False]
    assert pareto_front(points).tolist() == expected


def test_duplicates_and_non_finite_points():
    points = np.array([[1.0, 1.0], [1.0, 1.0], [2.0, 0.5], [np.nan, 0.1], [0.5, np.inf]])
    # both copies of (1, 1) stay: neither is strictly better; NaN/inf rows are never on the front
    assert pareto_front(points).tolist() == [True, True, True, False, False]


def test_single_and_empty():
    assert pareto_front(np.array([[3.0, 4.0]])).tolist() == [True]
    assert pareto_front(np.zeros((0, 2))).tolist() == []
