"""Virtual populations: personas (demographics) with weights, from a table, margins or a cross-table.

A :class:`Population` holds one row per persona, indexed by ``persona_id``, one column per
demographic field of the survey (multi-select values as tuples of labels), and a weight per
persona (the weights sum to 1). Every random choice takes a seed.

Raking (iterative proportional fitting) is a small implementation here rather than a library:
``ipfn`` (the usual choice) had its last release in 2021; ``weightipy`` is young and little used;
``balance`` pulls in scikit-learn and statsmodels for one loop of a dozen lines. The tests check it
against a 2x2 table solved by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from surveysim_core.data import MULTI_SEPARATOR
from surveysim_core.errors import DataError
from surveysim_core.survey import SurveySpec

#: margins and cross-table shares must sum to 1 within this tolerance
SHARE_TOLERANCE = 1e-6


@dataclass
class Population:
    """Personas (index ``persona_id``, one column per demographic field) and their weights."""

    personas: pd.DataFrame
    weights: np.ndarray
    source: str

    def __post_init__(self) -> None:
        if len(self.personas) == 0:
            raise DataError(f"{self.source}: the population is empty (no personas)")
        w = np.asarray(self.weights, dtype=float)
        if w.shape != (len(self.personas),) or not np.all(np.isfinite(w)) or np.any(w < 0):
            raise DataError(f"{self.source}: persona weights must be finite and >= 0")
        if w.sum() <= 0:
            raise DataError(f"{self.source}: the population is empty (every weight is 0)")
        self.weights = w / w.sum()

    def __len__(self) -> int:
        return len(self.personas)

    def table(self) -> pd.DataFrame:
        """Personas with a ``weight`` column; multi-select values joined by ``|`` (for CSV)."""
        out = self.personas.copy()
        for col in out.columns:
            if out[col].map(lambda v: isinstance(v, tuple)).any():
                out[col] = out[col].map(
                    lambda v: MULTI_SEPARATOR.join(v) if isinstance(v, tuple) else v
                )
        out["weight"] = self.weights
        return out


def _persona_index(n: int) -> pd.Index:
    return pd.Index([f"p{i:05d}" for i in range(n)], name="persona_id")


def _draw(population: Population, n: int | None, seed: int, replace: bool) -> Population:
    """``n`` personas drawn with probability proportional to weight (seeded), each of weight 1/n;
    all of them, as they are, when ``n`` is None."""
    if n is None:
        return population
    rng = np.random.default_rng(seed)
    if not replace and n >= len(population):
        return population
    picks = rng.choice(len(population), size=n, replace=replace, p=population.weights)
    personas = population.personas.iloc[picks].copy()
    personas.index = _persona_index(n)
    return Population(personas, np.full(n, 1.0 / n), f"{population.source} (sample of {n})")


def read_demographic_table(
    path: str | Path, spec: SurveySpec, extra: tuple[str, ...] = ()
) -> pd.DataFrame:
    """A CSV with one column per demographic field of ``spec`` (and ``extra`` columns), checked
    option by option; multi-select values (``a|b``) become tuples. Errors name file, row, column."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    return check_demographics(table, spec, str(path), extra, require_all=False)


def check_demographics(
    table: pd.DataFrame,
    spec: SurveySpec,
    source: str,
    extra: tuple[str, ...] = (),
    require_all: bool = True,
) -> pd.DataFrame:
    """Validate demographic columns against the survey's options; return them in survey order.

    With ``require_all`` every demographic field must be a column; otherwise at least one.
    Columns that are neither a demographic field, ``extra``, nor ``subject_id``/``persona_id``
    are an error (a misspelt field must not be silently dropped).
    """
    fields = spec.demographics
    allowed = {*fields, *extra, "subject_id", "persona_id"}
    unknown = [c for c in table.columns if c not in allowed]
    if unknown:
        raise DataError(
            f"{source}: unknown column(s) {unknown}: not demographic fields of survey"
            f" {spec.name} ({', '.join(fields)})"
        )
    present = [f for f in fields if f in table.columns]
    missing = [f for f in fields if f not in table.columns]
    if require_all and missing:
        raise DataError(f"{source}: missing demographic column(s): {', '.join(missing)}")
    if not present:
        raise DataError(f"{source}: no demographic column of survey {spec.name}")
    out = pd.DataFrame(index=table.index)
    for name in present:
        fld = fields[name]
        values = []
        for row, value in enumerate(table[name], start=1):
            if isinstance(value, tuple):
                labels = list(value)
            else:
                text = str(value).strip()
                labels = [p.strip() for p in text.split(MULTI_SEPARATOR)] if fld.multi else [text]
            bad = [lab for lab in labels if lab not in fld.options]
            if bad:
                raise DataError(
                    f"{source}: row {row}, column {name}: unknown option(s) {bad}"
                    f" (allowed: {', '.join(fld.options[:8])}{', ...' if len(fld.options) > 8 else ''})"
                )
            values.append(tuple(labels) if fld.multi else labels[0])
        out[name] = values
    for col in extra:
        if col in table.columns:
            out[col] = table[col].to_numpy()
    return out


# -- from a table of respondents ---------------------------------------------------------------
def from_table(table: pd.DataFrame, source: str, n: int | None = None, seed: int = 0) -> Population:
    """Personas from a table of respondents (one row each, demographic columns, optional
    ``weight``); ``n`` draws that many, with replacement, in proportion to weight."""
    if len(table) == 0:
        raise DataError(f"{source}: the population is empty (no rows)")
    personas = table.drop(columns=["weight"], errors="ignore").reset_index(drop=True)
    if "weight" in table.columns:
        try:
            weights = pd.to_numeric(table["weight"]).to_numpy(float)
        except (TypeError, ValueError):
            raise DataError(f"{source}: column weight: not numeric") from None
    else:
        weights = np.ones(len(table))
    personas.index = _persona_index(len(personas))
    return _draw(Population(personas, weights, source), n, seed, replace=True)


# -- raking to margins -------------------------------------------------------------------------
def check_margins(
    margins: Mapping[str, Mapping[str, float]], spec: SurveySpec, source: str
) -> None:
    """Margins must name single-choice fields of the survey and their options, with shares >= 0
    that sum to 1. Raises :class:`DataError` naming ``source`` and the field."""
    if not margins:
        raise DataError(f"{source}: margins: none given")
    for name, shares in margins.items():
        where = f"{source}: margins.{name}"
        fld = spec.demographics.get(name)
        if fld is None:
            raise DataError(
                f"{where}: survey {spec.name} has no demographic field {name!r}"
                f" ({', '.join(spec.demographics)})"
            )
        if fld.multi:
            raise DataError(f"{where}: a multi-select field cannot be raked to margins")
        unknown = [k for k in shares if k not in fld.options]
        if unknown:
            raise DataError(
                f"{where}: unknown option(s) {unknown} (allowed: {', '.join(fld.options)})"
            )
        negative = [k for k, v in shares.items() if not v >= 0]
        if negative:
            raise DataError(f"{where}: shares must be >= 0 ({negative})")
        total = float(sum(shares.values()))
        if abs(total - 1.0) > SHARE_TOLERANCE:
            raise DataError(f"{where}: shares sum to {total:g}, not 1")


def rake(
    reference: pd.DataFrame,
    margins: Mapping[str, Mapping[str, float]],
    base_weights: np.ndarray | None = None,
    source: str = "margins",
    max_iterations: int = 1000,
    tolerance: float = 1e-10,
) -> np.ndarray:
    """Weights (summing to 1) of the rows of ``reference`` whose margins match ``margins``.

    Iterative proportional fitting: each field's weights are scaled in turn so that its margin
    is right, until every margin is within ``tolerance``. The reference's joint distribution
    (its interactions, e.g. the odds ratio of a 2x2 table) is kept; only the margins move.
    Options missing from a field's margins get share 0.
    """
    w = np.ones(len(reference)) if base_weights is None else np.asarray(base_weights, float).copy()
    if len(w) == 0 or w.sum() <= 0:
        raise DataError(f"{source}: the reference table is empty; nothing to rake")
    w = w / w.sum()
    columns = {name: reference[name].astype(str).to_numpy() for name in margins}
    for name, shares in margins.items():
        for option, share in shares.items():
            if share > 0 and not np.any(w[columns[name] == option] > 0):
                raise DataError(
                    f"{source}: margins.{name}: option {option!r} has share {share:g}, but no"
                    " reference respondent has it, so raking cannot reach it"
                )
    for _ in range(max_iterations):
        for name, shares in margins.items():
            col = columns[name]
            factors = np.zeros(len(w))
            for option, share in shares.items():
                mask = col == option
                current = w[mask].sum()
                if current > 0:
                    factors[mask] = share / current
            w = w * factors
        gap = max(
            abs(w[columns[name] == option].sum() - share)
            for name, shares in margins.items()
            for option, share in shares.items()
        )
        if gap < tolerance:
            return w / w.sum()
    raise DataError(
        f"{source}: raking did not converge in {max_iterations} iterations (largest margin"
        f" error {gap:.2g}); the margins may contradict the reference's joint distribution"
    )


def from_margins(
    reference: pd.DataFrame,
    margins: Mapping[str, Mapping[str, float]],
    spec: SurveySpec,
    source: str,
    n: int | None = None,
    seed: int = 0,
) -> Population:
    """The reference respondents raked to target ``margins``: all of them with raked weights,
    or ``n`` drawn (seeded, with replacement) in proportion to those weights."""
    check_margins(margins, spec, source)
    if len(reference) == 0:
        raise DataError(f"{source}: the reference table is empty; nothing to rake")
    base = reference["weight"].to_numpy(float) if "weight" in reference else None
    personas = reference.drop(columns=["weight"], errors="ignore").reset_index(drop=True)
    weights = rake(personas, margins, base, source)
    keep = weights > 0
    personas = personas.loc[keep].reset_index(drop=True)
    personas.index = _persona_index(len(personas))
    return _draw(Population(personas, weights[keep], source), n, seed, replace=True)


# -- a cross-table of joint shares ---------------------------------------------------------------
def from_cross_table(
    cells: pd.DataFrame,
    spec: SurveySpec,
    source: str,
    reference: pd.DataFrame | None = None,
    n: int | None = None,
    seed: int = 0,
) -> Population:
    """Personas from joint shares: a table with some demographic columns and a ``share`` column.

    If the table names every demographic field, each cell is a persona. Otherwise the reference
    respondents are post-stratified to it: within a cell they keep their relative weights, and
    the cell gets its share, so fields the table leaves out follow the reference.
    """
    if "share" not in cells.columns:
        raise DataError(f"{source}: missing column share")
    if len(cells) == 0:
        raise DataError(f"{source}: the population is empty (no cells)")
    try:
        shares = pd.to_numeric(cells["share"]).to_numpy(float)
    except (TypeError, ValueError):
        raise DataError(f"{source}: column share: not numeric") from None
    if np.any(~(shares >= 0)):
        raise DataError(f"{source}: column share: shares must be >= 0")
    if abs(shares.sum() - 1.0) > SHARE_TOLERANCE:
        raise DataError(f"{source}: column share: shares sum to {shares.sum():g}, not 1")
    table = check_demographics(cells.drop(columns=["share"]), spec, source, require_all=False)
    fields = list(table.columns)
    keys = [tuple(r) for r in table.astype(str).itertuples(index=False)]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise DataError(f"{source}: cell {dict(zip(fields, dupes[0], strict=True))} listed twice")
    if len(fields) == len(spec.demographics):
        personas = table.reset_index(drop=True)
        personas.index = _persona_index(len(personas))
        keep = shares > 0
        pop = Population(personas.loc[keep], shares[keep], source)
        pop.personas.index = _persona_index(len(pop.personas))
        return _draw(pop, n, seed, replace=True)
    if reference is None or len(reference) == 0:
        raise DataError(
            f"{source}: names only {', '.join(fields)}; the other fields come from reference"
            " respondents, and there are none"
        )
    base = reference["weight"].to_numpy(float) if "weight" in reference else np.ones(len(reference))
    personas = reference.drop(columns=["weight"], errors="ignore").reset_index(drop=True)
    ref_keys = list(personas[fields].astype(str).itertuples(index=False, name=None))
    cell_of = {k: i for i, k in enumerate(keys)}
    cell = np.array([cell_of.get(k, -1) for k in ref_keys])
    weights = np.zeros(len(personas))
    for i, key in enumerate(keys):
        members = cell == i
        if shares[i] > 0 and base[members].sum() <= 0:
            raise DataError(
                f"{source}: cell {dict(zip(fields, key, strict=True))} has share {shares[i]:g},"
                " but no reference respondent is in it"
            )
        if members.any():
            weights[members] = shares[i] * base[members] / base[members].sum()
    keep = weights > 0
    personas = personas.loc[keep].reset_index(drop=True)
    personas.index = _persona_index(len(personas))
    return _draw(Population(personas, weights[keep], source), n, seed, replace=True)
