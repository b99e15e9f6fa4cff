"""The pilot's report page: a heatmap of statement x segment and ranked bars with CIs (SVG).

matplotlib is imported inside the drawing functions (Agg backend), so that importing this module
costs nothing at start-up. The page renders from ``pilot_report.html.j2`` in Jinja's sandbox with
StrictUndefined and autoescaping (statement texts are user input).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from surveysim_pilot.pilot import SHIFT_BASIS


def _label(row: Any) -> str:
    text = str(row.text)
    return f"{row.statement}: {text[:50]}{'...' if len(text) > 50 else ''}"


def draw_heatmap(shifts: pd.DataFrame, path: Path) -> Path:
    """Mean shift per statement (rows, by overall shift) and segment (columns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    overall = shifts[shifts["segment"] == "all"].sort_values("mean_shift", ascending=False)
    order = list(overall["statement"])
    labels = [_label(r) for r in overall.itertuples()]
    columns = list(dict.fromkeys(zip(shifts["segment"], shifts["value"], strict=True)))
    grid = shifts.pivot_table(index="statement", columns=["segment", "value"], values="mean_shift")
    grid = grid.reindex(index=order, columns=pd.MultiIndex.from_tuples(columns))
    values = grid.to_numpy(float)
    limit = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
    limit = limit or 1.0
    fig, ax = plt.subplots(
        figsize=(4.5 + 0.45 * len(columns), 1.5 + 0.3 * len(order)), layout="constrained"
    )
    image = ax.imshow(values, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(len(columns)), [f"{s}: {v}" if s != "all" else "all" for s, v in columns],
                  rotation=60, ha="right", fontsize=7)  # fmt: skip
    ax.set_yticks(range(len(order)), labels, fontsize=7)
    if values.size <= 600:
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=6)
    fig.colorbar(image, ax=ax, label="predicted mean shift")
    ax.set_title("Predicted mean shift, statement x segment", fontsize=9)
    fig.savefig(path, format="svg")
    plt.close(fig)
    return path


def draw_ranking(shifts: pd.DataFrame, path: Path) -> Path:
    """Statements ranked by overall mean shift, with 95% bootstrap CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    overall = shifts[shifts["segment"] == "all"].sort_values("mean_shift")
    est = overall["mean_shift"].to_numpy(float)
    err = np.vstack([est - overall["mean_shift_low"], overall["mean_shift_high"] - est])
    fig, ax = plt.subplots(figsize=(7, 1.0 + 0.3 * len(overall)), layout="constrained")
    colors = ["#b2182b" if v < 0 else "#2166ac" for v in est]
    ax.barh(range(len(overall)), est, xerr=np.clip(err, 0, None), color=colors, capsize=2)
    ax.set_yticks(range(len(overall)), [_label(r) for r in overall.itertuples()], fontsize=7)
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_xlabel("predicted mean shift (95% bootstrap CI over personas)")
    ax.set_title("Statements ranked by predicted mean shift (whole population)", fontsize=9)
    fig.savefig(path, format="svg")
    plt.close(fig)
    return path


def write_pilot_report(prepared: Any, shifts: pd.DataFrame, folder: Path) -> Path:
    """``heatmap.svg``, ``ranking.svg`` and ``report.html`` in ``folder``."""
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    draw_heatmap(shifts, folder / "heatmap.svg")
    draw_ranking(shifts, folder / "ranking.svg")
    source = resources.files("surveysim_pilot").joinpath("pilot_report.html.j2")
    env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=True)
    template = env.from_string(source.read_text(encoding="utf-8"))
    table = shifts.sort_values(["segment", "value", "rank"])
    rows = [
        {
            "segment": r.segment, "value": r.value, "rank": r.rank,
            "rank_range": f"{r.rank_low}-{r.rank_high}" if r.rank_low >= 0 else "n/a",
            "statement": r.statement, "text": r.text, "group": r.group, "new": bool(r.new),
            "shift": f"{r.mean_shift:.2f}",
            "shift_ci": f"[{r.mean_shift_low:.2f}, {r.mean_shift_high:.2f}]",
            "rises": f"{r.share_rises:.2f}",
            "rises_ci": f"[{r.share_rises_low:.2f}, {r.share_rises_high:.2f}]",
        }
        for r in table.itertuples()
    ]  # fmt: skip
    html = template.render(
        survey=prepared.plan.survey.name,
        system=prepared.system.label,
        population=prepared.population.source,
        n_personas=len(prepared.population),
        n_statements=int((shifts["segment"] == "all").sum()),
        pre_question=prepared.config.pre_question,
        basis=str(shifts["basis"].iloc[0]) if len(shifts) else SHIFT_BASIS,
        bootstrap=prepared.config.bootstrap,
        rows=rows,
    )
    path = folder / "report.html"
    path.write_text(html, encoding="utf-8")
    return path
