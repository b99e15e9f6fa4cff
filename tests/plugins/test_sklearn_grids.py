"""Hyper-parameter grids: the paper's sizes, the default subset, ids, options."""

from __future__ import annotations

import pytest
from surveysim_sklearn import grids
from surveysim_sklearn.grids import CatBoostOptions, SVROptions, catboost_settings, svr_settings

from surveysim_core.config import validate_options
from surveysim_core.errors import ConfigError


def test_paper_svr_grid_is_the_product_without_gamma_for_linear():
    settings = svr_settings(SVROptions(grid="paper"))
    # method.md: 4 kernels x 4 C x 3 epsilon x 8 gamma = 384; the linear kernel has no gamma,
    # so its 4 x 3 x 8 = 96 combinations collapse to 4 x 3 = 12: 384 - 96 + 12 = 300
    assert len(settings) == 4 * 4 * 3 * 8 - 4 * 3 * 8 + 4 * 3 == 300
    linear = [p for _, p in settings if p["kernel"] == "linear"]
    assert len(linear) == 12 and all("gamma" not in p for p in linear)
    other = [p for _, p in settings if p["kernel"] != "linear"]
    assert len(other) == 3 * 4 * 3 * 8
    assert {p["gamma"] for p in other} == {2.0**e for e in range(-20, 9, 4)}
    assert {p["epsilon"] for _, p in settings} == {2.0**-10, 2.0**-6, 2.0**-2}
    assert {p["C"] for _, p in settings} == {2.0**-5, 2.0**-1, 2.0**3, 2.0**7}


def test_paper_catboost_grid_is_the_full_product():
    settings = catboost_settings(CatBoostOptions(grid="paper"))
    assert len(settings) == 4 * 2 * 2 * 6 * 5 == 480
    assert {p["l2_leaf_reg"] for _, p in settings} == {0.03, 0.1, 1.0, 3.0, 5.0, 10.0}
    assert {p["bagging_temperature"] for _, p in settings} == {0.0, 0.25, 0.5, 0.75, 1.0}


def test_default_grids_are_documented_subsets_with_paper_ids():
    svr = svr_settings(SVROptions())
    assert len(svr) == 3 + 3 * 2  # linear x 3 C; rbf x 3 C x 2 gamma; epsilon 2^-2 only
    paper = dict(svr_settings(SVROptions(grid="paper")))
    for setting, params in svr:
        assert paper[setting] == params  # same id, same parameters as in the paper's grid
    catboost = catboost_settings(CatBoostOptions())
    assert len(catboost) == 4
    paper = dict(catboost_settings(CatBoostOptions(grid="paper")))
    assert all(paper[s] == p for s, p in catboost)


def test_ids_are_unique_and_stable():
    first = svr_settings(SVROptions(grid="paper"))
    assert len({s for s, _ in first}) == len(first)
    assert first[0] == ("svr-000", {"kernel": "linear", "C": 2.0**-5, "epsilon": 2.0**-10})
    assert svr_settings(SVROptions(grid="paper")) == first


def test_axis_override_replaces_one_axis_and_off_grid_values_get_hash_ids():
    settings = svr_settings(SVROptions(kernel=["rbf"], C=[1.0, 2.0**3]))
    assert len(settings) == 2 * 1 * 2  # C x default epsilon x default gamma
    assert all(p["kernel"] == "rbf" for _, p in settings)
    ids = [s for s, p in settings if p["C"] == 1.0]
    assert all(s.startswith("svr-x") for s in ids)


def test_options_reject_unknown_keys():
    from surveysim_sklearn.svr import SVRBaseline

    with pytest.raises(ConfigError, match="grd"):
        validate_options(SVRBaseline, {"grd": "paper"}, "baselines.0.options", "run.yaml")
    with pytest.raises(ConfigError, match="grid"):
        validate_options(SVRBaseline, {"grid": "full"}, "baselines.0.options", "run.yaml")
    assert validate_options(SVRBaseline, {"grid": "paper"}, "b", "r").grid == "paper"


def test_every_option_is_described():
    for model in (SVROptions, CatBoostOptions):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name}"
    assert grids.SVR_PAPER["kernel"] == ["linear", "poly", "rbf", "sigmoid"]
