"""The RMSE-KL report of a finished run: ``baseline_points.csv`` and ``rmse_kl.png``.

Reads the run's tidy metrics (rows with ``segment == "all"``, metrics ``kl`` and ``rmse``) and
sorts systems into four kinds:

* curve baselines: systems without a temperature that have several hyper-parameter settings
  (``svr``, ``catboost``, any other baseline plugin) except the reference baselines below;
  each setting is one point, and its Pareto front (lowest KL and RMSE) is drawn as a line;
* reference baselines ``random`` and ``marginal``: one distinct marker each;
* null-model floors (``floor:...``): grey markers, what chance or split-half agreement reaches;
* language-model systems (a temperature is set): one labelled marker per system and temperature.

matplotlib is imported inside :func:`draw_rmse_kl` (Agg backend), so importing this module stays
cheap.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from surveysim_core.files import atomic_write

from .pareto import pareto_front

log = logging.getLogger(__name__)

REFERENCE = ("random", "marginal")
FLOOR_PREFIX = "floor:"
POINTS_FILE = "baseline_points.csv"
PICTURE_FILE = "rmse_kl.png"
KEYS = ["system", "setting", "question", "temperature"]


def kl_rmse_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per system, setting, question and temperature with columns ``kl`` and ``rmse``."""
    rows = metrics[(metrics["segment"] == "all") & metrics["metric"].isin(["kl", "rmse"])].copy()
    rows["setting"] = rows["setting"].fillna("").astype(str)
    rows["temperature"] = pd.to_numeric(rows["temperature"], errors="coerce")
    rows["t_key"] = rows["temperature"].fillna(-1.0)  # groupby drops NaN keys
    table = rows.pivot_table(
        index=["system", "setting", "question", "t_key"],
        columns="metric",
        values="value",
        aggfunc="first",
    ).reset_index()
    for name in ("kl", "rmse"):
        if name not in table:
            table[name] = np.nan
    table["temperature"] = table["t_key"].where(table["t_key"] >= 0)
    table.columns.name = None
    return table[[*KEYS, "kl", "rmse"]]


def system_kind(system: str, temperature: float) -> str:
    if system.startswith(FLOOR_PREFIX):
        return "floor"
    if system in REFERENCE:
        return "reference"
    if temperature is not None and np.isfinite(temperature):
        return "model"
    return "baseline"


def _params(settings: pd.DataFrame | None) -> dict[tuple[str, str], dict[str, Any]]:
    out: dict[tuple[str, str], dict[str, Any]] = {}
    if settings is None or len(settings) == 0:
        return out
    for row in settings.itertuples(index=False):
        params = row.params
        if isinstance(params, str):
            try:
                params = json.loads(params) if params else {}
            except json.JSONDecodeError:
                params = {"params": params}
        out[(str(row.system), str(row.setting))] = dict(params or {})
    return out


def baseline_points(table: pd.DataFrame, settings: pd.DataFrame | None) -> pd.DataFrame:
    """Curve-baseline points with their hyper-parameters and whether each is on its front.

    The front is taken per system and question over the settings with both metrics.
    """
    kinds = [system_kind(s, t) for s, t in zip(table["system"], table["temperature"], strict=True)]
    points = table[np.array(kinds) == "baseline"].drop(columns="temperature").copy()
    points = points.dropna(subset=["kl", "rmse"])
    params = _params(settings)
    names: list[str] = []
    for key in zip(points["system"], points["setting"], strict=True):
        names += [n for n in params.get(key, {}) if n not in names]
    for name in names:
        points[name] = [
            params.get(key, {}).get(name)
            for key in zip(points["system"], points["setting"], strict=True)
        ]
    points["on_front"] = False
    for _, group in points.groupby(["system", "question"]):
        mask = pareto_front(group[["kl", "rmse"]].to_numpy())
        points.loc[group.index, "on_front"] = mask
    columns = ["system", "setting", "question", *names, "kl", "rmse", "on_front"]
    return points[columns].sort_values(["system", "question", "kl"]).reset_index(drop=True)


def write_report(run: Any) -> None:
    """Write ``baseline_points.csv`` and ``rmse_kl.png`` into ``run.dir``; no-op without KL/RMSE."""
    metrics = getattr(run, "metrics", None)
    if metrics is None or len(metrics) == 0:
        return
    present = set(metrics.loc[metrics["segment"] == "all", "metric"])
    if not {"kl", "rmse"} <= present:
        log.info("sklearn report: metrics lack kl or rmse; no RMSE-KL picture")
        return
    out_dir = Path(run.dir)
    table = kl_rmse_table(metrics)
    points = baseline_points(table, getattr(run, "settings", None))
    if len(points):
        atomic_write(out_dir / POINTS_FILE, lambda tmp: points.to_csv(tmp, index=False))
    draw_rmse_kl(table, points, out_dir / PICTURE_FILE)


def _use_log(values: np.ndarray) -> bool:
    values = values[np.isfinite(values)]
    return bool(len(values) and values.min() > 0 and values.max() / values.min() >= 100)


def draw_rmse_kl(table: pd.DataFrame, points: pd.DataFrame, path: Path) -> Path:
    """One panel per question: RMSE against KL for every system; saved as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = table.dropna(subset=["kl", "rmse"])
    questions = list(dict.fromkeys(table["question"]))
    if not questions:
        return path
    ncols = min(len(questions), 2)
    nrows = math.ceil(len(questions) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.5 * ncols, 5 * nrows), squeeze=False)
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    kinds = np.array(
        [system_kind(s, t) for s, t in zip(table["system"], table["temperature"], strict=True)]
    )
    baselines = list(dict.fromkeys(points["system"])) if len(points) else []
    models = list(dict.fromkeys(table.loc[kinds == "model", "system"]))
    colour = {name: cycle[i % len(cycle)] for i, name in enumerate(baselines + models)}
    model_marker = dict(zip(models, "os^vP*hX", strict=False))
    reference_style = {
        "random": dict(marker="X", color="black", s=90),
        "marginal": dict(marker="D", color="dimgray", s=70),
    }
    handles: dict[str, Any] = {}

    def keep(label: str, artist: Any) -> None:
        handles.setdefault(label, artist)

    for ax, question in zip(axes.flat, questions, strict=False):
        here = table["question"] == question
        for system in baselines:
            pts = points[(points["system"] == system) & (points["question"] == question)]
            if pts.empty:
                continue
            dots = ax.scatter(pts["kl"], pts["rmse"], s=12, alpha=0.4, color=colour[system])
            keep(f"{system} settings", dots)
            front = pts[pts["on_front"]].sort_values("kl")
            (line,) = ax.plot(
                front["kl"], front["rmse"], "-o", ms=3.5, lw=1.6, color=colour[system]
            )
            keep(f"{system} Pareto front", line)
        for row in table[here & (kinds == "reference")].itertuples(index=False):
            style = reference_style.get(row.system, dict(marker="X", color="black", s=80))
            keep(row.system, ax.scatter([row.kl], [row.rmse], zorder=4, **style))
        for row in table[here & (kinds == "floor")].itertuples(index=False):
            marker = ax.scatter([row.kl], [row.rmse], marker="+", s=90, color="0.55", zorder=3)
            keep("null-model floors", marker)
            ax.annotate(
                row.system.removeprefix(FLOOR_PREFIX),
                (row.kl, row.rmse),
                textcoords="offset points",
                xytext=(5, -10),
                fontsize=7,
                color="0.4",
            )
        for row in table[here & (kinds == "model")].itertuples(index=False):
            label = f"{row.system} t={row.temperature:g}"
            marker = ax.scatter(
                [row.kl],
                [row.rmse],
                marker=model_marker.get(row.system, "o"),
                s=70,
                color=colour[row.system],
                edgecolor="black",
                linewidth=0.6,
                zorder=5,
            )
            keep(row.system, marker)
            ax.annotate(
                label, (row.kl, row.rmse), textcoords="offset points", xytext=(6, 4), fontsize=8
            )
        if _use_log(table.loc[here, "kl"].to_numpy(dtype=float)):
            ax.set_xscale("log")
        ax.set_title(str(question))
        ax.set_xlabel("KL divergence (lower: population matches better)")
        ax.set_ylabel("RMSE (lower: individuals match better)")
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(questions) :]:
        ax.set_visible(False)
    fig.suptitle("RMSE against KL per question: baselines, their Pareto fronts and models")
    fig.legend(
        list(handles.values()),
        list(handles),
        loc="lower center",
        ncol=min(len(handles), 4),
        frameon=False,
        fontsize=9,
    )
    rows_of_legend = math.ceil(len(handles) / 4)
    fig.tight_layout(rect=(0, 0.04 + 0.03 * rows_of_legend, 1, 0.97))
    # the format named: the temporary file's suffix is .tmp
    suffix = Path(path).suffix.lstrip(".") or "png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format=suffix))
    plt.close(fig)
    return path
