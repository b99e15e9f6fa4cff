"""The ``sklearn`` plugin's hooks. Light imports only: models load on first use."""

from __future__ import annotations

from typing import Any

from surveysim_core import hookimpl

# the options models live in a light module, so validating a config imports no scikit-learn
_GRIDS = "surveysim_sklearn.grids"


@hookimpl
def register_baselines(register):
    """SVR and CatBoost baselines, imported only when a run uses them."""
    register("svr", "surveysim_sklearn.svr:SVRBaseline", options=f"{_GRIDS}:SVROptions")
    register(
        "catboost",
        "surveysim_sklearn.catboost_baseline:CatBoostBaseline",
        options=f"{_GRIDS}:CatBoostOptions",
    )


@hookimpl
def surveysim_write_report(run: Any):
    """``baseline_points.csv`` and ``rmse_kl.png`` in the run directory."""
    from surveysim_sklearn.report import write_report

    write_report(run)
