"""Checks of a run's inputs that no single config field can make: sizes, overlaps between
the population scored and the people trained on. Each raises a named error."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from surveysim_core.errors import ConfigError, DataError

#: fewer respondents than this cannot be split into train, validation and test sets
MIN_SUBJECTS = 10


def check_subjects(subjects: int | None, where: str) -> None:
    """A population size given by the user: None (the default) or at least ``MIN_SUBJECTS``."""
    if subjects is not None and subjects < MIN_SUBJECTS:
        raise ConfigError(f"{where}: {subjects} subjects; give at least {MIN_SUBJECTS}")


def check_seed(seed: int, where: str) -> None:
    """A seed every random generator accepts: 0 to 2**32 - 1."""
    from surveysim_core.config import SEED_MAX

    if not 0 <= seed <= SEED_MAX:
        raise ConfigError(f"{where}: seed {seed} is out of range (0 to {SEED_MAX})")


def check_enough_subjects(
    respondents: pd.DataFrame, splits: Mapping[str, Sequence[str]], source: str
) -> None:
    """Enough respondents for a split with a non-empty training and test set."""
    n = len(respondents)
    if n < MIN_SUBJECTS:
        raise DataError(f"{source}: {n} subjects; a run needs at least {MIN_SUBJECTS}")
    empty = [name for name in ("train", "test") if not len(splits.get(name, []))]
    if empty:
        raise ConfigError(
            f"{source}: split: the {' and '.join(empty)} split is empty with {n} subjects;"
            " change split shares or caps"
        )


def check_population(
    population: pd.DataFrame, splits: Mapping[str, Sequence[str]], source: str
) -> None:
    """Systems must not be scored on people they were fitted or validated on."""
    fitted = set(map(str, splits.get("train", []))) | set(map(str, splits.get("val", [])))
    overlap = sorted(s for s in map(str, population.index) if s in fitted)
    if overlap:
        shown = ", ".join(overlap[:5]) + (", ..." if len(overlap) > 5 else "")
        raise ConfigError(
            f"{source}: evaluation.population: {len(overlap)} participant(s) ({shown}) are in"
            " the training or validation split; scoring needs held-out people"
        )
    dupes = population.index[population.index.duplicated()]
    if len(dupes):
        raise ConfigError(
            f"{source}: evaluation.population: participant {dupes[0]!r} is listed twice"
        )
