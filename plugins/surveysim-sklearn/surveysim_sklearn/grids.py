"""Hyper-parameter grids of the baselines, and their options (no scikit-learn import here).

The paper's grids (method.md, Baselines) are kept verbatim in ``SVR_PAPER`` and
``CATBOOST_PAPER``. A grid is the product of its axes, except that ``gamma`` does not apply to the
linear kernel: linear settings drop it and the duplicates are removed, so the paper's SVR grid has
4 * 3 (linear) + 3 * 4 * 3 * 8 (poly, rbf, sigmoid) = 300 settings and the CatBoost grid
4 * 2 * 2 * 6 * 5 = 480.

The default grids are subsets of the paper's, chosen so that both baselines of the default
EV-shift run (about 3,000 training subjects, 18,000 answer rows, 400 test subjects) finish within
3 minutes on a 2-core CPU; see the plugin README for the measurements.

A setting's id is its position in the paper's grid (``svr-017``), so the same hyper-parameters get
the same id whichever grid a run uses; a setting outside the paper's grid (set by an explicit
option) gets ``svr-x`` plus a short hash of its parameters.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SVR_PAPER: dict[str, list[Any]] = {
    "kernel": ["linear", "poly", "rbf", "sigmoid"],
    "C": [2.0**-5, 2.0**-1, 2.0**3, 2.0**7],
    "epsilon": [2.0**-10, 2.0**-6, 2.0**-2],
    "gamma": [2.0**e for e in (-20, -16, -12, -8, -4, 0, 4, 8)],
}

# Measured on the EV-shift synthetic population (README): a small epsilon makes libsvm keep most
# of the 15,000 post-intervention rows as support vectors (20-100 s a fit), and the linear kernel
# at C = 2^7 takes over a minute, so the default keeps the paper's widest tube and C up to 2^3;
# gamma 2^-8 and 2^-4 are the values that give non-constant rbf predictions on one-hot features
# (gamma >= 1 predicts the training mean for every unseen respondent).
SVR_DEFAULT: dict[str, list[Any]] = {
    "kernel": ["linear", "rbf"],
    "C": [2.0**-5, 2.0**-1, 2.0**3],
    "epsilon": [2.0**-2],
    "gamma": [2.0**-8, 2.0**-4],
}

CATBOOST_PAPER: dict[str, list[Any]] = {
    "learning_rate": [1e-3, 1e-2, 1e-1, 1.0],
    "random_strength": [1.0, 20.0],
    "one_hot_max_size": [0, 25],
    "l2_leaf_reg": [0.03, 0.1, 1.0, 3.0, 5.0, 10.0],
    "bagging_temperature": [0.0, 0.25, 0.5, 0.75, 1.0],
}

CATBOOST_DEFAULT: dict[str, list[Any]] = {
    "learning_rate": [1e-3, 1e-2, 1e-1, 1.0],
    "random_strength": [1.0],
    "one_hot_max_size": [25],
    "l2_leaf_reg": [3.0],
    "bagging_temperature": [1.0],
}

SVR_KERNELS = Literal["linear", "poly", "rbf", "sigmoid"]


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grid: Literal["default", "paper"] = Field(
        "default",
        description="'paper': the paper's full grid (slow); 'default': a subset that runs in"
        " minutes on a laptop. Any axis given below replaces that axis of the chosen grid.",
    )
    n_jobs: int = Field(-1, description="Processes or threads to use; -1 means all CPU cores.")
    history: bool = Field(
        False,
        description="Add the respondent's previous answer (the item before in answer order, on"
        " its question's 0-1 scale) as a feature: the fair reference for a known-respondent"
        " system (prompts.memory with memory_at_evaluation: known). Off in the method.",
    )


class SVROptions(_Options):
    kernel: list[SVR_KERNELS] | None = Field(None, description="Kernels (replaces the grid's).")
    C: list[float] | None = Field(None, description="Penalties C > 0 (replaces the grid's).")
    epsilon: list[float] | None = Field(
        None, description="Tube widths on the [0, 1] answer scale (replaces the grid's)."
    )
    gamma: list[float] | None = Field(
        None, description="Kernel coefficients for poly, rbf, sigmoid (replaces the grid's)."
    )
    max_iter: int = Field(
        1_000_000,
        ge=1,
        description="Cap on solver iterations per fit (libsvm and liblinear); settings that"
        " hit it (huge C with poly or sigmoid) are logged as not converged.",
    )
    cache_size_mb: float = Field(500.0, gt=0, description="libsvm kernel cache per fit, in MB.")


class CatBoostOptions(_Options):
    learning_rate: list[float] | None = Field(None, description="Replaces the grid's axis.")
    random_strength: list[float] | None = Field(None, description="Replaces the grid's axis.")
    one_hot_max_size: list[int] | None = Field(None, description="Replaces the grid's axis.")
    l2_leaf_reg: list[float] | None = Field(None, description="Replaces the grid's axis.")
    bagging_temperature: list[float] | None = Field(None, description="Replaces the grid's axis.")
    iterations: int = Field(
        1000,
        ge=1,
        description="Boosting rounds per fit (the paper does not say; CatBoost's own"
        " default is 1000).",
    )
    depth: int = Field(6, ge=1, le=16, description="Tree depth (CatBoost's default).")


def _axes(paper: dict[str, list[Any]], default: dict[str, list[Any]], options: BaseModel):
    axes = dict(paper if options.grid == "paper" else default)
    for name in axes:
        value = getattr(options, name, None)
        if value is not None:
            axes[name] = list(value)
    return axes


def expand(axes: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the axes, in order; ``gamma`` dropped for the linear kernel, deduped."""
    names = list(axes)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for values in itertools.product(*(axes[n] for n in names)):
        params = dict(zip(names, values, strict=True))
        if params.get("kernel") == "linear":
            params.pop("gamma", None)
        key = _key(params)
        if key not in seen:
            seen.add(key)
            out.append(params)
    return out


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


def with_ids(prefix: str, settings: list[dict[str, Any]], paper: dict[str, list[Any]]):
    """``(id, params)`` pairs; the id is the setting's position in the paper's grid."""
    position = {_key(p): i for i, p in enumerate(expand(paper))}
    out = []
    for params in settings:
        key = _key(params)
        if key in position:
            out.append((f"{prefix}-{position[key]:03d}", params))
        else:
            digest = hashlib.sha1(key.encode()).hexdigest()[:6]
            out.append((f"{prefix}-x{digest}", params))
    return out


def svr_settings(options: SVROptions) -> list[tuple[str, dict[str, Any]]]:
    return with_ids("svr", expand(_axes(SVR_PAPER, SVR_DEFAULT, options)), SVR_PAPER)


def catboost_settings(options: CatBoostOptions) -> list[tuple[str, dict[str, Any]]]:
    axes = _axes(CATBOOST_PAPER, CATBOOST_DEFAULT, options)
    return with_ids("catboost", expand(axes), CATBOOST_PAPER)
