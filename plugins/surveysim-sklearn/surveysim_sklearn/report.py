"""The RMSE-KL report of a finished run: ``baseline_points.csv`` and ``rmse_kl.png``.

Reads the run's tidy metrics (rows with ``segment == "all"``, metrics ``kl`` and ``rmse``) and
sorts systems into four kinds:

* curve baselines: systems without a temperature that have several hyper-parameter settings
  (``svr``, ``catboost``, any other baseline plugin) except the reference baselines below;
  each setting is one point, and its Pareto front (lowest KL and RMSE) is drawn as a line,
  labelled as an oracle: the front is read off the test split. The setting the run chose on the
  validation split (``chosen_on`` in metrics.csv, :mod:`surveysim_core.selection`) is starred;
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
    if "readout" in rows:
        # one point per system and temperature: its answers as sampled (or greedy); E[a] has no
        # KL, and the calibrated readout repeats the sampled one at the chosen temperature
        rows = rows[~rows["readout"].isin(["expected", "calibrated"])]
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


def baseline_points(
    table: pd.DataFrame, settings: pd.DataFrame | None, metrics: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Curve-baseline points with their hyper-parameters and whether each is on its front.

    The front is taken per system and question over the settings with both metrics.
    ``chosen_on_validation`` names the metrics (``kl``, ``rmse``) for which the run chose the
    setting on the validation split; ``oracle`` those for which it is best on the test split.
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
    chosen = _chosen_on_validation(metrics)
    points["chosen_on_validation"] = [
        ",".join(m for m in ("kl", "rmse") if (s, str(g), str(q), m) in chosen)
        for s, g, q in zip(points["system"], points["setting"], points["question"], strict=True)
    ]
    points["oracle"] = ""
    for _, group in points.groupby(["system", "question"]):
        for m in ("kl", "rmse"):
            best = group[m].idxmin()
            points.loc[best, "oracle"] = ",".join(filter(None, [points.loc[best, "oracle"], m]))
    columns = [
        "system", "setting", "question", *names, "kl", "rmse", "on_front",
        "chosen_on_validation", "oracle",
    ]  # fmt: skip
    return points[columns].sort_values(["system", "question", "kl"]).reset_index(drop=True)


def _chosen_on_validation(metrics: pd.DataFrame | None) -> set[tuple[str, str, str, str]]:
    """(system, setting, question, metric) of the settings the run chose on validation."""
    if metrics is None or "chosen_on" not in metrics:
        return set()
    rows = metrics[(metrics["segment"] == "all") & (metrics["chosen_on"] == "validation")]
    return {
        (
            str(r.system),
            "" if pd.isna(r.setting) else str(r.setting),
            str(r.question),
            str(r.metric),
        )
        for r in rows.itertuples(index=False)
    }


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
    points = baseline_points(table, getattr(run, "settings", None), metrics)
    if len(points):
        atomic_write(out_dir / POINTS_FILE, lambda tmp: points.to_csv(tmp, index=False))
    draw_rmse_kl(_with_kl_range(table, metrics), points, out_dir / PICTURE_FILE, metrics)


def _with_kl_range(table: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """``kl_low``/``kl_high``: the 95% range of each KL row (the sampling floor's band)."""
    if "ci_low" not in metrics:
        return table.assign(kl_low=np.nan, kl_high=np.nan)
    kl = metrics[(metrics["segment"] == "all") & (metrics["metric"] == "kl")].copy()
    kl["setting"] = kl["setting"].fillna("").astype(str)
    kl["t_key"] = pd.to_numeric(kl["temperature"], errors="coerce").fillna(-1.0)
    kl = kl.rename(columns={"ci_low": "kl_low", "ci_high": "kl_high"})
    merged = table.assign(t_key=table["temperature"].fillna(-1.0)).merge(
        kl[["system", "setting", "question", "t_key", "kl_low", "kl_high"]],
        on=["system", "setting", "question", "t_key"], how="left",
    )  # fmt: skip
    return merged.drop(columns="t_key")


#: what the legend calls each reference and floor (two different things are both "marginal")
NAMES = {
    "random": "random baseline",
    "marginal": "marginal baseline (sampled)",
    "floor:marginal": "exact marginal floor",
    "floor:uniform": "uniform floor",
    "floor:sampling": "sampling floor (mean, 95% range)",
    "floor:split_half": "split-half floor",
}


def _failures(metrics: pd.DataFrame | None, table: pd.DataFrame) -> dict[str, list[str]]:
    """Per question, systems that have a success rate but no KL or RMSE (no valid answer)."""
    out: dict[str, list[str]] = {}
    if metrics is None or "success_rate" not in set(metrics["metric"]):
        return out
    rate = metrics[(metrics["segment"] == "all") & (metrics["metric"] == "success_rate")]
    valid = table.dropna(subset=["kl", "rmse"])
    seen = {(r.system, str(r.question), r.temperature if pd.notna(r.temperature) else -1.0)
            for r in valid.itertuples(index=False)}  # fmt: skip
    for r in rate.itertuples(index=False):
        t = float(r.temperature) if pd.notna(r.temperature) else -1.0
        if (r.system, str(r.question), t) not in seen:
            name = r.system + (f" t={t:g}" if t >= 0 else "")
            out.setdefault(str(r.question), []).append(f"{name}: {float(r.value):.0%} valid")
    return out


def _zoom(values: np.ndarray, anchors: np.ndarray, spread: float = 1.6) -> float:
    """Upper axis limit: everything up to ``spread`` times the largest anchor (floors and
    reference baselines), so that one far-off system does not squeeze the region that matters."""
    anchors = anchors[np.isfinite(anchors)]
    values = values[np.isfinite(values)]
    if len(anchors) == 0:
        return float(values.max()) * 1.05 if len(values) else 1.0
    limit = float(anchors.max()) * spread
    inside = values[values <= limit]
    return float(max(inside.max() if len(inside) else 0.0, anchors.max())) * 1.08


def draw_rmse_kl(
    table: pd.DataFrame, points: pd.DataFrame, path: Path, metrics: pd.DataFrame | None = None
) -> Path:
    """One panel per question: RMSE against KL for every system; saved as a PNG at ``path``.

    Readability rules: the axes zoom to the floors and reference baselines (plus whatever lies
    near them); a system beyond the zoom is drawn as an arrow at the edge with its values
    written beside it; systems are named in the legend, not on the points, so labels never
    collide; floors without an RMSE (sampling, split-half) are vertical lines; systems with
    no valid answer are listed under the panel with their success rate.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    failures = _failures(metrics, table)
    kl_floor_rows = table[table["system"].isin(["floor:sampling", "floor:split_half"])]
    table_xy = table.dropna(subset=["kl", "rmse"])
    questions = list(dict.fromkeys(list(table["question"].astype(str))))
    questions = [q for q in questions if (table_xy["question"].astype(str) == q).any()]
    if not questions:
        return path
    ncols = min(len(questions), 2)
    nrows = math.ceil(len(questions) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(7 * ncols, 5.6 * nrows), squeeze=False)
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    kinds = np.array(
        [
            system_kind(s, t)
            for s, t in zip(table_xy["system"], table_xy["temperature"], strict=True)
        ]
    )
    baselines = list(dict.fromkeys(points["system"])) if len(points) else []
    model_rows = table_xy[kinds == "model"]
    model_keys = list(
        dict.fromkeys(zip(model_rows["system"], model_rows["temperature"], strict=True))
    )
    models = list(dict.fromkeys(k[0] for k in model_keys))
    colour = {name: cycle[i % len(cycle)] for i, name in enumerate(baselines + models)}
    temps = sorted({k[1] for k in model_keys})
    temp_marker = dict(zip(temps, "os^vDP*hX", strict=False))
    reference_style = {
        "random": dict(marker="X", color="black", s=80),
        "marginal": dict(marker="D", color="dimgray", s=60),
    }
    floor_style = {
        "floor:marginal": dict(marker="P", color="0.3", s=90),
        "floor:uniform": dict(marker="+", color="0.45", s=90),
    }
    handles: dict[str, Any] = {}

    def keep(label: str, artist: Any) -> None:
        handles.setdefault(label, artist)

    for ax, question in zip(axes.flat, questions, strict=False):
        here = (table_xy["question"].astype(str) == question).to_numpy()
        rows = table_xy[here]
        k_here = kinds[here]
        anchors = rows[np.isin(k_here, ["floor", "reference"])]
        pts = points[points["question"].astype(str) == question] if len(points) else points
        # the region that matters is set by the floors and the reference baselines: a system
        # (or a grid's front) far beyond them is worse than guessing and goes off scale
        kl_anchor = anchors["kl"].to_numpy(float)
        rmse_anchor = anchors["rmse"].to_numpy(float)
        kl_floors = kl_floor_rows[kl_floor_rows["question"].astype(str) == question]
        kl_anchor = np.concatenate([kl_anchor, kl_floors["kl"].to_numpy(float)])
        x_hi = _zoom(
            np.concatenate(
                [rows["kl"].to_numpy(float), pts["kl"].to_numpy(float) if len(pts) else []]
            ),
            kl_anchor,
        )
        y_all = np.concatenate(
            [rows["rmse"].to_numpy(float), pts["rmse"].to_numpy(float) if len(pts) else []]
        )
        y_hi = _zoom(y_all, rmse_anchor, spread=1.3)
        inside_y = y_all[np.isfinite(y_all) & (y_all <= y_hi)]
        y_lo = max(0.0, float(inside_y.min()) * 0.9) if len(inside_y) else 0.0
        outside: list[tuple[str, float, float, Any]] = []

        def plot(x, y, label, ax=ax, x_hi=x_hi, y_hi=y_hi, outside=outside, **style):
            x, y = float(x), float(y)
            if x > x_hi or y > y_hi:
                outside.append((label, x, y, style.get("color", "black")))
                return None
            return ax.scatter([x], [y], **style)

        for system in baselines:
            mine = pts[pts["system"] == system]
            if mine.empty:
                continue
            ok = (mine["kl"] <= x_hi) & (mine["rmse"] <= y_hi)
            dots = ax.scatter(
                mine.loc[ok, "kl"], mine.loc[ok, "rmse"], s=12, alpha=0.35, color=colour[system]
            )
            keep(f"{system} settings", dots)
            fr = mine[mine["on_front"] & ok].sort_values("kl")
            (line,) = ax.plot(fr["kl"], fr["rmse"], "-o", ms=3.5, lw=1.6, color=colour[system])
            keep(f"{system} Pareto front: oracle (chosen on test)", line)
            if "chosen_on_validation" in mine:
                picked = mine[(mine["chosen_on_validation"].fillna("") != "") & ok]
                if len(picked):
                    star = ax.scatter(
                        picked["kl"], picked["rmse"], marker="*", s=190, color=colour[system],
                        edgecolor="black", linewidth=0.7, zorder=6,
                    )  # fmt: skip
                    keep(f"{system} chosen on validation", star)
                for r in mine[(mine["chosen_on_validation"].fillna("") != "") & ~ok].itertuples():
                    outside.append((f"{system} chosen on validation ({r.setting})",
                                    float(r.kl), float(r.rmse), colour[system]))  # fmt: skip
            if (~ok).any():
                outside.append((f"{system}: {int((~ok).sum())} setting(s)", float(mine.loc[~ok, "kl"].min()),
                                float(mine.loc[~ok, "rmse"].min()), colour[system]))  # fmt: skip
        for row in rows[k_here == "reference"].itertuples(index=False):
            style = reference_style.get(row.system, dict(marker="X", color="black", s=80))
            artist = plot(row.kl, row.rmse, NAMES.get(row.system, row.system), zorder=4, **style)
            if artist is not None:
                keep(NAMES.get(row.system, row.system), artist)
        for row in rows[k_here == "floor"].itertuples(index=False):
            style = floor_style.get(row.system, dict(marker="+", color="0.55", s=90))
            artist = plot(row.kl, row.rmse, NAMES.get(row.system, row.system), zorder=3, **style)
            if artist is not None:
                keep(NAMES.get(row.system, row.system), artist)
        for row in kl_floors.itertuples(index=False):
            if not np.isfinite(row.kl):
                continue
            if row.system == "floor:sampling":
                # floors are grey: the colour cycle belongs to systems
                line = ax.axvline(row.kl, color="0.35", ls="--", lw=1.2)
                keep(NAMES[row.system], line)
                band = getattr(row, "kl_low", np.nan), getattr(row, "kl_high", np.nan)
                if np.all(np.isfinite(band)):
                    ax.axvspan(band[0], min(band[1], x_hi), color="0.5", alpha=0.12)
            else:
                keep(
                    NAMES.get(row.system, row.system),
                    ax.axvline(row.kl, color="0.5", ls=":", lw=1.2),
                )
        for row in rows[k_here == "model"].itertuples(index=False):
            label = f"{row.system} t={row.temperature:g}"
            artist = plot(
                row.kl, row.rmse, label, marker=temp_marker.get(row.temperature, "o"), s=75,
                color=colour[row.system], edgecolor="black", linewidth=0.6, zorder=5,
            )  # fmt: skip
            if artist is not None:
                keep(label, artist)
        ax.set_xlim(0, x_hi)
        ax.set_ylim(y_lo, y_hi)
        # beyond the zoom: an arrow at the right (or top) edge; the values are written under
        # the panel (inside it they would hide points), one line each
        notes: list[tuple[str, Any]] = []
        for label, x, y, color in sorted(outside, key=lambda o: o[2]):
            ex = min(x, x_hi)
            ey = min(max(y, y_lo), y_hi)
            marker = ">" if x > x_hi else "^"
            ax.scatter([ex], [ey], marker=marker, s=70, color=color, clip_on=False, zorder=6)
            notes.append((f"off scale ({marker}): {label}: KL {x:.2f}, RMSE {y:.1f}", color))
        failed = failures.get(question, [])
        if failed:
            notes.append(("no valid answers, not drawn: " + "; ".join(failed), "firebrick"))
        for i, (text, color) in enumerate(notes):
            ax.text(0.0, -0.2 - 0.06 * i, text, transform=ax.transAxes, fontsize=8,
                    color=color, va="top")  # fmt: skip
        ax.set_title(str(question))
        ax.set_xlabel("KL divergence (lower: population matches better)")
        ax.set_ylabel("RMSE (lower: individuals match better)")
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(questions) :]:
        ax.set_visible(False)
    fig.suptitle("RMSE against KL per question (zoomed to the floors and baselines)")
    ncol = min(len(handles), 4 if ncols > 1 else 2)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=ncol,
               frameon=False, fontsize=8.5)  # fmt: skip
    rows_of_legend = math.ceil(len(handles) / max(ncol, 1))
    # inches: the legend's rows and a margin (tight_layout already makes room for the notes,
    # which are texts of the axes)
    height = fig.get_size_inches()[1]
    bottom = (0.22 * rows_of_legend + 0.1) / height
    fig.tight_layout(rect=(0, bottom, 1, 0.96))
    # the format named: the temporary file's suffix is .tmp
    suffix = Path(path).suffix.lstrip(".") or "png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format=suffix))
    plt.close(fig)
    return path
