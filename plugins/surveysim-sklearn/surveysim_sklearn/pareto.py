"""Pareto front of (KL, RMSE) points, both to be minimised."""

from __future__ import annotations

import numpy as np


def pareto_front(points: np.ndarray) -> np.ndarray:
    """Boolean mask of the points no other point dominates (minimising every column).

    ``points`` has shape ``(n, 2)`` (e.g. KL, RMSE). A point is dominated when another point is
    no worse in every column and strictly better in one; duplicates of a front point are all on
    the front. Rows with a non-finite value are never on the front and dominate nothing.
    """
    pts = np.asarray(points, dtype=float)
    if pts.ndim != 2:
        raise ValueError(f"points must have shape (n, k), got {pts.shape}")
    finite = np.all(np.isfinite(pts), axis=1)
    mask = finite.copy()
    candidates = pts[finite]
    for i in np.flatnonzero(finite):
        no_worse = np.all(candidates <= pts[i], axis=1)
        better = np.any(candidates < pts[i], axis=1)
        if np.any(no_worse & better):
            mask[i] = False
    return mask
