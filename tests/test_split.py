"""Subject-level splits: disjoint, complete, 8:1:1, seeded, independent of input order, capped."""

from __future__ import annotations

import random

from surveysim_core.split import split_by_subject

FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}
IDS = [f"s{i:04d}" for i in range(1000)]


def test_splits_are_disjoint_and_cover_every_subject():
    splits = split_by_subject(IDS, FRACTIONS, seed=0)
    sets = {name: set(ids) for name, ids in splits.items()}
    assert sets["train"].isdisjoint(sets["val"])
    assert sets["train"].isdisjoint(sets["test"])
    assert sets["val"].isdisjoint(sets["test"])
    assert sets["train"] | sets["val"] | sets["test"] == set(IDS)
    assert sum(len(ids) for ids in splits.values()) == len(IDS)  # no subject twice


def test_fractions_eight_one_one():
    splits = split_by_subject(IDS, FRACTIONS, seed=3)
    assert {name: len(ids) for name, ids in splits.items()} == {
        "train": 800,
        "val": 100,
        "test": 100,
    }
    # 15 subjects: floor(1.5) = 1 each for val and test, the remainder to train
    small = split_by_subject([f"x{i}" for i in range(15)], FRACTIONS, seed=0)
    assert [len(small[k]) for k in ("train", "val", "test")] == [13, 1, 1]


def test_same_seed_same_split_other_seed_other_split():
    a = split_by_subject(IDS, FRACTIONS, seed=7)
    b = split_by_subject(IDS, FRACTIONS, seed=7)
    c = split_by_subject(IDS, FRACTIONS, seed=8)
    assert a == b
    assert set(a["test"]) != set(c["test"])


def test_split_does_not_depend_on_input_order_or_repeats():
    shuffled = list(IDS)
    random.Random(1).shuffle(shuffled)
    # a subject appears once per answer in long data: repeats must not change anything
    repeated = shuffled + IDS[:300]
    base = split_by_subject(IDS, FRACTIONS, seed=5)
    assert split_by_subject(shuffled, FRACTIONS, seed=5) == base
    assert split_by_subject(repeated, FRACTIONS, seed=5) == base


def test_split_is_random_not_a_slice_of_the_sorted_ids():
    splits = split_by_subject(IDS, FRACTIONS, seed=0)
    assert sorted(splits["test"]) != IDS[-100:]
    assert sorted(splits["train"]) != IDS[:800]


def test_caps_keep_a_subset_within_the_same_split():
    full = split_by_subject(IDS, FRACTIONS, seed=2)
    capped = split_by_subject(IDS, FRACTIONS, seed=2, caps={"train": 50, "val": None, "test": 10})
    assert len(capped["train"]) == 50
    assert len(capped["test"]) == 10
    assert capped["val"] == full["val"]
    for name in FRACTIONS:
        assert set(capped[name]) <= set(full[name])
    # a cap larger than the split changes nothing
    assert split_by_subject(IDS, FRACTIONS, seed=2, caps={"test": 5000})["test"] == full["test"]
