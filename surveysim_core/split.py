"""Subject-level splits: every answer of a subject lands in the same split."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def split_by_subject(
    subject_ids: Sequence[str],
    fractions: dict[str, float],
    seed: int,
    caps: dict[str, int | None] | None = None,
) -> dict[str, list[str]]:
    """Randomly partition unique subject ids into named splits of the given fractions.

    The ids are sorted before shuffling so that the split depends only on the set of ids and the
    seed, not on file order. Split sizes are ``floor(fraction * n)`` with the remainder going to
    the first split. ``caps`` optionally keeps a seeded subset of each split (for fast runs);
    capping never moves a subject to another split.
    """
    ids = np.array(sorted(set(map(str, subject_ids))), dtype=object)
    rng = np.random.default_rng(seed)
    order = ids[rng.permutation(len(ids))]
    names = list(fractions)
    # rounded first, so that float error (0.7 * 10 = 6.999...) does not lose a subject
    sizes = [int(np.floor(round(fractions[name] * len(ids), 9))) for name in names]
    sizes[0] += len(ids) - sum(sizes)
    out: dict[str, list[str]] = {}
    start = 0
    for name, size in zip(names, sizes, strict=True):
        out[name] = list(order[start : start + size])
        start += size
    for name, cap in (caps or {}).items():
        if cap is not None and cap < len(out[name]):
            out[name] = out[name][:cap]  # already in random order: a prefix is a random subset
    return out
