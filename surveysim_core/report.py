"""The run's report: ``summary.txt`` and a self-contained ``report.html``.

The page answers, per question: which system comes closest (by KL and by RMSE, with 95%
bootstrap intervals), by how much it beats the marginal baseline and the best baseline (paired
intervals from ``differences.csv``), and how that compares with the noise floors. It then shows
human against model answer histograms, a view per demographic segment, a view per intervention
(when the survey has a context column), the figures plugins drew, and where the numbers came from
(data, model, versions, commit, machine, seeds, times).

Tables are pandas Stylers; figures are matplotlib SVGs embedded as data URIs, so the page works
offline and from a copied folder. matplotlib is optional (it comes with the sklearn plugin): without
it the page says which figures are missing. The page renders in Jinja's sandbox with
StrictUndefined.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml

from surveysim_core.files import atomic_write_text
from surveysim_core.prompts import default_templates
from surveysim_core.scoring import (
    HIGHER_IS_BETTER,
    percentile_interval,
    respondent_resamples,
    summary_table,
)
from surveysim_core.selection import chosen_label, eligible
from surveysim_core.summary import training_throughput

if TYPE_CHECKING:
    from surveysim_core.run import Run

log = logging.getLogger(__name__)

#: segments with fewer test answers than this are flagged in the segment view
SMALL_N = 30

#: what each floor is, one sentence each (shown on the page)
FLOOR_TEXT = {
    "floor:sampling": (
        "the KL (or Wasserstein distance) between the test humans and the same "
        "number of answers drawn from the population itself (training and test answers pooled), "
        "averaged over bootstrap draws; a system that samples one answer per item cannot be "
        "expected to go below it, and one inside its 95% range is as close as sampling noise "
        "allows."
    ),
    "floor:marginal": (
        "the training answers' distribution given exactly to every "
        "respondent (no sampling); it knows the population but nothing about the person, so a "
        "system that uses demographics should beat its RMSE, and an exact-distribution system "
        "reads its KL against it."
    ),
    "floor:uniform": (
        "every answer equally likely; a system above it on KL knows less about "
        "the answer distribution than no knowledge at all."
    ),
    "floor:split_half": (
        "two random halves of the test answers scored against each other; each half has only "
        "n/2 answers, so this floor carries more small-sample bias and usually lies above the "
        "sampling floor, and a good system can sit below it."
    ),
}

FLOOR_TITLE = {
    "floor:sampling": "Sampling floor",
    "floor:marginal": "Exact marginal floor",
    "floor:uniform": "Uniform floor",
    "floor:split_half": "Split-half floor",
}

#: how the two different "marginal"s are named on the page
MARGINAL_BASELINE = "marginal baseline (sampled)"
MARGINAL_FLOOR = "exact marginal floor"

#: libraries whose versions the provenance lists, besides every installed surveysim package
LIBRARIES = [
    "numpy", "pandas", "scikit-learn", "catboost", "torch", "transformers", "peft",
    "accelerate", "matplotlib",
]  # fmt: skip


def _packages() -> list[str]:
    """The surveysim core and plugin distributions installed here, then :data:`LIBRARIES`."""
    own = sorted(
        {
            d.metadata["Name"]
            for d in metadata.distributions()
            if (d.metadata["Name"] or "").lower().startswith("surveysim")
        }
    )
    return own + LIBRARIES


# ----------------------------------------------------------------------------------------------
# small helpers
def _fmt(value: float, digits: int = 3) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    if abs(value) >= 100:
        return f"{value:.1f}"
    if abs(value) >= 10:
        return f"{value:.2f}"
    return f"{value:.{digits}f}"


def _ci(low: float, high: float) -> str:
    if not (np.isfinite(low) and np.isfinite(high)):
        return ""
    return f"[{_fmt(low)}, {_fmt(high)}]"


def _with_ci(row: Any) -> str:
    ci = _ci(row.get("ci_low", np.nan), row.get("ci_high", np.nan))
    return f"{_fmt(row['value'])} {ci}".strip()


def multi_setting(metrics: pd.DataFrame) -> set[str]:
    """Systems with more than one setting (their labels name the setting)."""
    settings = metrics[["system", "setting"]].astype(str).drop_duplicates()
    counts = settings["system"].value_counts()
    return set(counts[counts > 1].index)


#: readouts the labels name (greedy and sample are told by the temperature; see scoring.READOUTS)
NAMED_READOUTS = ("expected", "calibrated")


def system_label(
    system: str,
    setting: Any = "",
    temperature: Any = np.nan,
    multi: set[str] | None = None,
    readout: Any = "",
) -> str:
    """A system's name as the page shows it: ``svr [C=1]``, ``fine_tuned t=1``,
    ``fine_tuned t=1 (expected)``; the setting is left out for systems not in ``multi``."""
    if multi is not None and system not in multi:
        setting = ""
    if system == "marginal":
        name = MARGINAL_BASELINE
    elif system == "floor:marginal":
        name = MARGINAL_FLOOR
    else:
        name = system
    if (
        setting is not None
        and str(setting) not in ("", "nan", "default")
        and not (str(system).startswith("floor:"))
    ):
        name += f" [{setting}]"
    if temperature is not None and pd.notna(temperature):
        name += f" t={float(temperature):g}"
    if readout in NAMED_READOUTS:
        name += f" ({readout})"
    return name


def _label(row: Any, multi: set[str] | None = None) -> str:
    return system_label(
        row["system"], row["setting"], row["temperature"], multi, row.get("readout", "")
    )


def _same(frame: pd.DataFrame, row: Any) -> pd.Series:
    """Rows of ``frame`` of the same system, setting, readout and temperature as ``row``."""
    t = row["temperature"]
    same_t = frame["temperature"].isna() if pd.isna(t) else frame["temperature"] == t
    mask = (frame["system"] == row["system"]) & (frame["setting"] == str(row["setting"])) & same_t
    if "readout" in frame and "readout" in row:
        mask &= frame["readout"] == row["readout"]
    return mask


def _overall(metrics: pd.DataFrame) -> pd.DataFrame:
    out = metrics[metrics["segment"] == "all"].copy()
    out["setting"] = out["setting"].fillna("").astype(str)
    out["temperature"] = pd.to_numeric(out["temperature"], errors="coerce")
    out["readout"] = out["readout"].fillna("").astype(str) if "readout" in out else ""
    for col in ("ci_low", "ci_high", "sd"):
        if col not in out:
            out[col] = np.nan
    return out


def _is_floor(system: Any) -> bool:
    return str(system).startswith("floor:")


def best_row(rows: pd.DataFrame, metric: str) -> pd.Series | None:
    """The row with the best point value of ``metric`` among non-floor systems, or None.

    Of a grid baseline only its setting chosen on the validation split takes part
    (:func:`surveysim_core.selection.eligible`): the grid is not tuned on the test split."""
    cand = eligible(rows)
    cand = cand[
        (cand["metric"] == metric)
        & ~cand["system"].astype(str).str.startswith("floor:")
        & cand["value"].notna()
    ]
    if cand.empty:
        return None
    index = cand["value"].idxmax() if metric in HIGHER_IS_BETTER else cand["value"].idxmin()
    return cand.loc[index]


def system_headline(frame: pd.DataFrame) -> str:
    """One line per scored system for the log: its best KL and RMSE per question, with CIs."""
    if frame.empty:
        return "scored: no rows"
    rows = _overall(frame)
    system = str(rows["system"].iloc[0])
    parts = []
    for qid, q in rows.groupby("question", sort=False):
        bits = []
        for metric in ("kl", "rmse", "success_rate"):
            best = best_row(q, metric)
            if best is not None:
                bits.append(f"{metric} {_with_ci(best)}")
        if bits:
            parts.append(f"{qid}: " + ", ".join(bits))
    settings = rows[["setting", "temperature", "readout"]].drop_duplicates()
    kind = "settings" if rows["setting"].nunique() > 1 else "temperatures and readouts"
    note = f" (best of {len(settings)} {kind})" if len(settings) > 1 else ""
    return f"scored {system}{note}: " + "; ".join(parts)


def _svg_uri(fig: Any) -> str:
    buf = io.StringIO()
    import matplotlib.pyplot as plt

    # no date and fixed element ids: re-rendering a run gives the same page
    with plt.rc_context({"svg.hashsalt": "surveysim"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})

    plt.close(fig)
    data = base64.b64encode(buf.getvalue().encode("utf-8")).decode("ascii")
    return f"data:image/svg+xml;base64,{data}"


def _pyplot() -> Any | None:
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _styled(frame: pd.DataFrame, caption: str = "", small: pd.Series | None = None) -> str:
    """A pandas Styler table as HTML (small-n rows marked with the ``small-n`` class)."""
    from markupsafe import Markup

    styler = frame.style.hide(axis="index")
    if caption:
        styler = styler.set_caption(caption)
    if small is not None and small.any():
        flags = pd.DataFrame("", index=frame.index, columns=frame.columns)
        flags.loc[small.to_numpy()] = "small-n"
        styler = styler.set_td_classes(flags)
    styler = styler.set_table_attributes('class="results"')
    # a table id from the content, not a random one: re-rendering a run gives the same page
    styler = styler.set_uuid(hashlib.sha256(frame.to_csv().encode()).hexdigest()[:8])
    return Markup(styler.to_html())


# ----------------------------------------------------------------------------------------------
# predictions
def read_predictions(run_dir: Path) -> pd.DataFrame:
    """Every system's per-item predictions (``systems/<system>/predictions.*``), stacked."""
    frames = []
    for path in sorted((run_dir / "systems").glob("*/predictions.*")):
        if path.suffix == ".csv":
            frame = pd.read_csv(path, dtype={"subject_id": str})
        elif path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            continue
        frames.append(frame)
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    out["setting"] = out["setting"].fillna("").astype(str)
    out["temperature"] = pd.to_numeric(out["temperature"], errors="coerce")
    return out


def _of(preds: pd.DataFrame, row: pd.Series) -> pd.DataFrame:
    t = row["temperature"]
    same_t = preds["temperature"].isna() if pd.isna(t) else preds["temperature"] == t
    return preds[
        (preds["system"] == row["system"]) & (preds["setting"] == str(row["setting"])) & same_t
    ]


# ----------------------------------------------------------------------------------------------
# sections
@dataclass
class Headline:
    question: str
    sentences: list[str]
    table: str


def _diff_sentence(
    diffs: pd.DataFrame, best: pd.Series, against: str, multi: set[str] | None = None
) -> str | None:
    if diffs.empty:
        return None
    d = diffs[
        (diffs["system"] == best["system"])
        & (diffs["setting"].fillna("").astype(str) == str(best["setting"]))
        & (diffs["question"].astype(str) == str(best["question"]))
        & (diffs["metric"] == best["metric"])
        & (diffs["against"] == against)
    ]
    if pd.isna(best["temperature"]):
        d = d[d["temperature"].isna()]
    else:
        d = d[d["temperature"] == best["temperature"]]
    if "readout" in d:
        d = d[d["readout"].fillna("").astype(str) == str(best.get("readout", ""))]
    if d.empty:
        return None
    r = d.iloc[0]
    ref = system_label(r["reference"], r["reference_setting"], multi=multi)
    low, high = r["ci_low"], r["ci_high"]
    higher = best["metric"] in HIGHER_IS_BETTER
    if np.isfinite(low) and np.isfinite(high):
        better = (low > 0) if higher else (high < 0)
        worse = (high < 0) if higher else (low > 0)
        verdict = (
            "a real improvement"
            if better
            else "worse"
            if worse
            else "not distinguishable from it at 95%"
        )
        ci = f" (paired 95% CI {_fmt(low)} to {_fmt(high)}: {verdict})"
    else:
        ci = " (no paired interval: this system was kept from an earlier run)"
    if r["reference"] == "marginal":
        point = str(r.get("reference_readout", "")) == "expected"
        ref = "the marginal baseline's mean (its point prediction)" if point else MARGINAL_BASELINE
    elif against != "marginal baseline":
        ref = f"the {against}, {ref}"
    return (
        f"Against {ref} ({_fmt(r['reference_value'])}) the difference is "
        f"{_fmt(r['difference'])}{ci}."
    )


def headlines(metrics: pd.DataFrame, diffs: pd.DataFrame) -> list[Headline]:
    """Per question: the best system by KL and by RMSE in plain words, and a compact table."""
    overall = _overall(metrics)
    multi = multi_setting(metrics)
    out = []
    for qid, q in overall.groupby("question", sort=False):
        sentences = []
        floors = q[q["system"].astype(str).str.startswith("floor:")]

        def floor(system: str, metric: str, floors: pd.DataFrame = floors) -> pd.Series | None:
            f = floors[(floors["system"] == system) & (floors["metric"] == metric)]
            return None if f.empty else f.iloc[0]

        for metric, what in (
            ("kl", "answer distribution (KL divergence, lower is better)"),
            ("rmse", "individual answers (RMSE, lower is better)"),
        ):
            best = best_row(q, metric)
            if best is None:
                continue
            label = _label(best, multi)
            text = [
                f"Closest {what}: <b class='best'>{label}</b> with {_fmt(best['value'])}"
                + (
                    f" (95% CI {_fmt(best['ci_low'])} to {_fmt(best['ci_high'])})."
                    if np.isfinite(best["ci_low"])
                    else "."
                )
            ]
            for against in ("marginal baseline", "best baseline"):
                sentence = _diff_sentence(diffs, best, against, multi)
                if sentence:
                    text.append(sentence)
            cat = best_row(q[q["system"] == "catboost"], metric)
            if cat is not None and best["system"] != "catboost":
                text.append(f"CatBoost's best setting scores {_with_ci(cat)}.")
            fs, fm = floor("floor:sampling", metric), floor("floor:marginal", metric)
            if fs is not None:
                text.append(
                    f"Sampling floor {_fmt(fs['value'])} (95% range {_fmt(fs['ci_low'])} to "
                    f"{_fmt(fs['ci_high'])}): "
                    + (
                        "the best system is within sampling noise of the population."
                        if best["value"] <= fs["ci_high"]
                        else "the best system is still above what sampling noise explains."
                    )
                )
            if fm is not None:
                text.append(f"The {MARGINAL_FLOOR} scores {_fmt(fm['value'])}.")
            spreads = q[q["metric"] == "spread"]
            spread = spreads[_same(spreads, best)]
            humans = floor("floor:humans", "spread")
            if metric == "rmse" and len(spread) and humans is not None:
                # a constant near the mean wins RMSE: say how far it tells people apart
                text.append(
                    f"Its point predictions spread {_fmt(spread['value'].iloc[0])} (SD across"
                    f" respondents) against the humans' {_fmt(humans['value'])}."
                )
            sentences.append(" ".join(text))
        out.append(Headline(str(qid), sentences, _headline_table(q)))
    return out


def _headline_table(q: pd.DataFrame) -> str:
    """Per system (best setting of a grid by each metric): KL, RMSE and success, with CIs."""
    wanted = [
        m
        for m in ("kl", "rmse", "pearson", "spread", "wasserstein", "nll", "success_rate")
        if m in set(q["metric"])
    ]
    # (system, setting, readout, t) -> notes
    keep: dict[tuple[str, str, str, float], list[str]] = {}

    def add(system: str, setting: str, readout: str, t: Any, note: str = "") -> None:
        key = (system, setting, readout, -1.0 if pd.isna(t) else float(t))
        notes = keep.setdefault(key, [])
        if note:
            notes.append(note)

    for system, group in q.groupby("system", sort=False):
        settings = group[["setting", "readout", "temperature"]].drop_duplicates()
        if group["setting"].nunique() > 3:  # a grid: its best settings only
            for metric in ("kl", "rmse"):
                best = best_row(group, metric)
                if best is not None:
                    on = chosen_label(group[group["metric"] == metric])
                    add(system, best["setting"], best["readout"], best["temperature"],
                        f"best {metric} {on}")  # fmt: skip
        else:
            for s, r, t in settings.itertuples(index=False):
                add(system, s, r, t)
    rows = []
    multi = multi_setting(q)
    for (system, setting, readout, t_key), notes in keep.items():
        t = np.nan if t_key < 0 else t_key
        same_t = q["temperature"].isna() if pd.isna(t) else q["temperature"] == t
        g = q[
            (q["system"] == system) & (q["setting"] == setting) & (q["readout"] == readout)
            & same_t
        ].set_index("metric")  # fmt: skip
        label = system_label(system, setting, t, multi, readout)
        rec: dict[str, Any] = {
            "system": label + (f" ({', '.join(notes)} of the grid)" if notes else "")
        }
        for m in wanted:
            rec[m] = _with_ci(g.loc[m]) if m in g.index else ""
        rec["n"] = int(g["n"].max()) if len(g) else 0
        rows.append(rec)
    frame = pd.DataFrame(rows)
    return _styled(frame, "value [95% bootstrap CI over test respondents]")


def chosen_systems(metrics: pd.DataFrame, question: str) -> list[pd.Series]:
    """Systems worth a histogram: best by KL, best by RMSE, the marginal baseline, best model."""
    q = _overall(metrics)
    q = q[(q["question"].astype(str) == str(question)) & (q["readout"] != "expected")]
    picks = [best_row(q, "kl"), best_row(q, "rmse"), best_row(q[q["system"] == "marginal"], "kl")]
    models = q[q["temperature"].notna()]
    picks.append(best_row(models, "kl"))
    out, seen = [], set()
    for p in picks:
        if p is None:
            continue
        t = p["temperature"]
        key = (p["system"], p["setting"], -1.0 if pd.isna(t) else float(t))
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def exact_mass(run_dir: Path, row: Any, question: str, answer: Any) -> np.ndarray | None:
    """A language-model system's expected answer counts per support value for one question
    and temperature, from its ``distributions.parquet`` (exact decoders); None without it."""
    path = Path(run_dir) / "systems" / str(row["system"]) / "distributions.parquet"
    if not path.exists() or pd.isna(row["temperature"]):
        return None
    try:
        frame = pd.read_parquet(path, columns=["temperature", "question", "probs"])
    except (ImportError, OSError, ValueError):
        return None
    frame = frame[(frame["temperature"] == row["temperature"]) & (frame["question"] == question)]
    if frame.empty:
        return None
    probs = np.array([np.asarray(p, float) for p in frame["probs"]])
    return probs[:, : len(answer.support)].sum(axis=0)


def histograms(run: Run, preds: pd.DataFrame, plt: Any) -> list[dict[str, str]]:
    """Per question: human answers against the chosen systems' answers, as shares per bin
    (for an exact decoder: its expected shares, from ``distributions.parquet``)."""
    out: list[dict[str, str]] = []
    if preds.empty:
        return out
    for qid, answer in run.plan.answer_types.items():
        sub = preds[preds["question"] == qid]
        if sub.empty:
            continue
        chosen = chosen_systems(run.metrics, qid)
        multi = multi_setting(run.metrics)
        bins = answer.bin_edges()
        nbins = int(bins.max()) + 1
        names = []
        for b in range(nbins):
            codes = answer.support[bins == b]
            lo, hi = codes.min(), codes.max()
            names.append(
                answer.labels[int(np.nonzero(bins == b)[0][0])] if lo == hi else f"{lo:g}-{hi:g}"
            )

        def shares(codes: np.ndarray, answer=answer, bins=bins, nbins=nbins) -> np.ndarray:
            idx = answer.index_of(codes)
            idx = idx[idx >= 0]
            counts = np.bincount(bins[idx], minlength=nbins).astype(float)
            return counts / counts.sum() if counts.sum() else counts

        def mass_shares(mass: np.ndarray, bins=bins, nbins=nbins) -> np.ndarray:
            counts = np.bincount(bins, weights=mass, minlength=nbins)
            return counts / counts.sum() if counts.sum() else counts

        first = _of(sub, chosen[0]) if chosen else sub
        series = [("humans (test)", shares(first["true_answer"].to_numpy(float)))]
        for row in chosen:
            p = _of(sub, row)
            if len(p):
                label = _label(row, multi)
                mass = exact_mass(run.dir, row, str(qid), answer)
                if mass is not None:
                    valid = float(mass.sum()) / len(p)
                    values = mass_shares(mass)
                    label += " (exact)"
                else:
                    valid = p["answer"].notna().mean()
                    values = shares(p["answer"].to_numpy(float))
                if valid < 0.995:
                    label += f" ({valid:.0%} valid)"
                series.append((label, values))
        fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * nbins * len(series) / 2), 3.4))
        width = 0.8 / len(series)
        x = np.arange(nbins)
        for i, (label, values) in enumerate(series):
            ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=label,
                   color="black" if i == 0 else None, alpha=0.85)  # fmt: skip
        ax.set_xticks(
            x, names, rotation=45 if nbins > 8 else 0, ha="right" if nbins > 8 else "center"
        )
        ax.set_ylabel("share of answers")
        ax.set_title(f"{qid}: human and model answers")
        ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.grid(axis="y", alpha=0.3)
        out.append({"question": str(qid), "src": _svg_uri(fig)})
    return out


def segment_tables(metrics: pd.DataFrame) -> list[dict[str, Any]]:
    """Per question: each segment's n, the best overall system's KL and RMSE with CIs, and the
    floors of that segment; segments with fewer than ``SMALL_N`` answers are flagged."""
    out: list[dict[str, Any]] = []
    seg = metrics[metrics["segment"] != "all"].copy()
    if seg.empty:
        return out
    seg["setting"] = seg["setting"].fillna("").astype(str)
    seg["temperature"] = pd.to_numeric(seg["temperature"], errors="coerce")
    seg["readout"] = seg["readout"].fillna("").astype(str) if "readout" in seg else ""
    for col in ("ci_low", "ci_high"):
        if col not in seg:
            seg[col] = np.nan
    overall = _overall(metrics)
    multi = multi_setting(metrics)
    for qid in overall["question"].unique():
        q_all = overall[overall["question"] == qid]
        q_seg = seg[seg["question"] == qid]
        if q_seg.empty:
            continue
        columns: list[tuple[str, pd.DataFrame]] = []
        for metric, floor in (("kl", "floor:sampling"), ("rmse", "floor:marginal")):
            best = best_row(q_all, metric)
            if best is None:
                continue
            mine = q_seg[_same(q_seg, best) & (q_seg["metric"] == metric)]
            label = _label(best, multi)
            columns.append((f"{metric}: {label}", mine))
            fl = q_seg[(q_seg["system"] == floor) & (q_seg["metric"] == metric)]
            floor_name = (
                MARGINAL_FLOOR
                if floor == "floor:marginal"
                else floor.removeprefix("floor:") + " floor"
            )
            columns.append((f"{metric}: {floor_name}", fl))
        if not columns:
            continue
        segments = list(dict.fromkeys(q_seg["segment"]))
        rows = []
        for s in segments:
            ns = q_seg.loc[q_seg["segment"] == s, "n"]
            rec = {"field": s.split("=", 1)[0], "option": s.split("=", 1)[1] if "=" in s else s,
                   "n": int(ns.max()) if len(ns) else 0}  # fmt: skip
            for name, frame in columns:
                r = frame[frame["segment"] == s]
                rec[name] = _with_ci(r.iloc[0]) if len(r) else ""
            rows.append(rec)
        table = pd.DataFrame(rows)
        small = table["n"] < SMALL_N
        table["note"] = np.where(small, f"small n (< {SMALL_N})", "")
        out.append(
            {
                "question": str(qid),
                "table": _styled(table, "value [95% CI]; floors are per segment", small),
                "n_small": int(small.sum()),
            }
        )
    return out


def _mean_shift(
    frame: pd.DataFrame, answer_col: str, reference: pd.Series | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per respondent of ``frame``: their mean answer minus their reference (or nothing)."""
    means = frame.groupby("subject_id")[answer_col].mean()
    if reference is not None:
        means = means - reference.reindex(means.index)
    means = means.dropna()
    return means.index.to_numpy(), means.to_numpy(float)


def _mean_ci(subjects: np.ndarray, values: np.ndarray, draws: int, seed: int, key: str):
    if len(values) == 0:
        return np.nan, np.nan, np.nan
    picks = respondent_resamples(subjects, draws, seed, "intervention", key)
    low, high = percentile_interval(np.array([values[i].mean() for i in picks]))
    return float(values.mean()), low, high


def _plain(value: Any) -> str:
    """A context value as data files write it: 3.0 read back from a CSV is "3"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _natural(value: Any) -> tuple[int, float, str]:
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def intervention_views(run: Run, preds: pd.DataFrame, plt: Any) -> list[dict[str, Any]]:
    """Observed against predicted mean shift per context value (e.g. intervention statement).

    The shift of a respondent is their answer to the question under that value minus their
    answer to the survey's first question without context (their starting point); without such
    a question it is the answer minus the question's overall mean. Intervals resample
    respondents.
    """
    spec = run.survey.spec
    out: list[dict[str, Any]] = []
    if preds.empty:
        return out
    plain = [q.id for q in spec.questions if not q.context and q.id in run.plan.answer_types]
    draws, seed = run.config.evaluation.bootstrap, run.config.evaluation.seed
    multi = multi_setting(run.metrics)
    for q in spec.questions:
        if not q.context or q.id not in run.plan.answer_types:
            continue
        column = q.context[0]
        sub = preds[preds["question"] == q.id]
        if sub.empty or column not in sub:
            continue
        ref_q = plain[0] if plain else None
        chosen = [r for r in chosen_systems(run.metrics, q.id) if r["system"] != "marginal"][:2]
        rows = []
        points = []
        for value in sorted(sub[column].dropna().unique(), key=_natural):
            here = sub[sub[column] == value]
            rec: dict[str, Any] = {column: _plain(value)}
            text = spec.context_values.get(column, {}).get(_plain(value), "")
            if text:
                rec["text"] = text if len(text) <= 90 else text[:87] + "..."
            first = _of(here, chosen[0]) if chosen else here
            ref_h = None
            if ref_q:
                base = _of(preds[preds["question"] == ref_q], chosen[0]) if chosen else None
                if base is not None and len(base):
                    ref_h = base.groupby("subject_id")["true_answer"].mean()
            if ref_h is None:
                ref_h = pd.Series(first["true_answer"].mean(), index=first["subject_id"].unique())
            subj, vals = _mean_shift(first, "true_answer", ref_h)
            obs = _mean_ci(subj, vals, draws, seed, f"{q.id}|{value}|human")
            rec["n"] = len(vals)
            rec["observed shift"] = f"{_fmt(obs[0])} {_ci(obs[1], obs[2])}"
            for row in chosen:
                label = _label(row, multi)
                mine = _of(here, row)
                ref_m = None
                if ref_q:
                    base = _of(preds[preds["question"] == ref_q], row)
                    ref_m = base.groupby("subject_id")["answer"].mean() if len(base) else None
                if ref_m is None:
                    ref_m = pd.Series(mine["answer"].mean(), index=mine["subject_id"].unique())
                subj, vals = _mean_shift(mine, "answer", ref_m)
                pred = _mean_ci(subj, vals, draws, seed, f"{q.id}|{value}|{label}")
                rec[f"predicted: {label}"] = f"{_fmt(pred[0])} {_ci(pred[1], pred[2])}"
                points.append((label, obs, pred))
            rows.append(rec)
        src = ""
        if plt is not None and points:
            fig, ax = plt.subplots(figsize=(5.5, 4.5))
            for label in dict.fromkeys(p[0] for p in points):
                mine = [(o, p) for lab, o, p in points if lab == label]
                ox = np.array([o[0] for o, _ in mine])
                py = np.array([p[0] for _, p in mine])
                xerr = np.abs(np.array([[o[0] - o[1], o[2] - o[0]] for o, _ in mine]).T)
                yerr = np.abs(np.array([[p[0] - p[1], p[2] - p[0]] for _, p in mine]).T)
                ax.errorbar(ox, py, xerr=np.nan_to_num(xerr), yerr=np.nan_to_num(yerr), fmt="o",
                            ms=4, alpha=0.8, elinewidth=0.7, label=label)  # fmt: skip
            lims = [np.nanmin([p[1][1] for p in points] + [p[2][1] for p in points]),
                    np.nanmax([p[1][2] for p in points] + [p[2][2] for p in points])]  # fmt: skip
            if np.all(np.isfinite(lims)):
                ax.plot(lims, lims, color="0.5", lw=1, ls="--", label="predicted = observed")
            ax.set_xlabel("observed mean shift (humans)")
            ax.set_ylabel("predicted mean shift")
            ax.set_title(f"{q.id}: shift per {column}")
            ax.legend(fontsize=8, frameon=False)
            ax.grid(alpha=0.3)
            src = _svg_uri(fig)
        reference_text = (
            f"answer minus the same respondent's {ref_q}" if ref_q else "answer minus the mean"
        )
        out.append(
            {
                "question": q.id,
                "column": column,
                "reference": reference_text,
                "table": _styled(pd.DataFrame(rows), "mean shift [95% CI over respondents]"),
                "src": src,
            }
        )
    return out


def failed_systems(metrics: pd.DataFrame) -> list[str]:
    """Systems (per setting and temperature) with no valid answer to a question, or a low rate."""
    overall = _overall(metrics)
    out = []
    rate = overall[overall["metric"] == "success_rate"]
    others = overall[(overall["metric"] != "success_rate") & overall["value"].notna()]
    multi = multi_setting(metrics)
    for _, r in rate.iterrows():
        missing = not (_same(others, r) & (others["question"] == r["question"])).any()
        if r["value"] < 0.5 or missing:
            label = _label(r, multi)
            note = "no valid answer, so no KL or RMSE" if missing else "low"
            out.append(f"{label} on {r['question']}: {r['value']:.0%} valid answers ({note})")
    return out


# ----------------------------------------------------------------------------------------------
# provenance
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"
    return commit + (" (with uncommitted changes)" if dirty else "")


def _versions(names: Iterable[str]) -> str:
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


def _machine() -> str:
    parts = [platform.platform(), platform.machine(), f"{os.cpu_count()} CPUs",
             f"Python {platform.python_version()}"]  # fmt: skip
    torch = sys.modules.get("torch")  # only if a plugin already imported it: never import here
    if torch is not None:
        try:
            if torch.cuda.is_available():
                parts.append("GPU " + torch.cuda.get_device_name(0))
        except Exception:
            pass
    return ", ".join(parts)


def provenance(run: Run) -> list[tuple[str, str]]:
    """Where the numbers came from, as (label, text) rows."""
    cfg = run.config
    rows: list[tuple[str, str]] = []
    if cfg.data.source == "synthetic":
        data = run.dir / "data" / "responses.csv"
        text = (
            f"synthetic {run.survey.name} population (generator seed {cfg.data.seed}, "
            f"{cfg.data.subjects or run.survey.spec.synthetic_subjects} subjects): "
            "simulated people, not a real survey"
        )
        if data.exists():
            text += f"; {data.name} sha256 {_sha256(data)}"
    else:
        path = Path(cfg.data.path or "")
        text = f"file {path}"
        if path.exists():
            text += f", sha256 {_sha256(path)}"
    rows.append(("data", text))
    if cfg.backend is not None:
        opts = cfg.backend.options
        model = opts.get("model", "?")
        revision = opts.get("revision")
        rows.append(
            (
                "model",
                f"{cfg.backend.name}: {model}" + (f" (revision {revision})" if revision else ""),
            )
        )
        # no list: every system kind the backend declares
        kinds = ", ".join(cfg.backend.systems) if cfg.backend.systems else "all the backend's"
        rows.append(("language-model systems", kinds))
    else:
        rows.append(("model", "none (baselines only)"))
    rows.append(("baselines", ", ".join(b.name for b in cfg.baselines) or "none"))
    rows.append(
        ("seeds", f"data {cfg.data.seed}, split {cfg.split.seed}, decoding {cfg.decoding.seed}, "
                  f"evaluation {cfg.evaluation.seed} ({cfg.evaluation.bootstrap} bootstrap draws)")
    )  # fmt: skip
    rows.append(("packages", _versions(_packages())))
    rows.append(("git commit", _git_commit()))
    rows.append(("machine", _machine()))
    # when the run (last) started, not when this page was rendered: a re-render is the same page
    started = run.dir / "config.yaml"
    if started.exists():
        when = time.localtime(started.stat().st_mtime)
        rows.append(("run started", time.strftime("%Y-%m-%d %H:%M:%S %Z", when)))
    for key, value in training_throughput(run.dir).items():
        name, _, what = key.partition(": ")
        rows.append(
            (f"{what.removesuffix(' tokens/s')} throughput ({name})", f"{value:,.0f} tokens/s")
        )
    return rows


# ----------------------------------------------------------------------------------------------
def write_report(run: Run) -> Path:
    """``summary.txt`` and ``report.html`` (rendered from the core's report template)."""
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    text = summary_table(run.metrics, catalogue=run.plan.metrics)
    atomic_write_text(run.dir / "summary.txt", text + "\n")
    diffs_path = run.dir / "differences.csv"
    diffs = (
        pd.read_csv(diffs_path)
        if diffs_path.exists() and diffs_path.stat().st_size
        else pd.DataFrame()
    )
    preds = read_predictions(run.dir)
    plt = _pyplot()
    notes = []
    if plt is None:
        notes.append("matplotlib is not installed: histograms and shift plots are left out.")
    env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=True)
    template = env.from_string(default_templates()["report.html"])
    overall = run.metrics[run.metrics["segment"] == "all"]
    figures = [p.name for p in sorted(run.dir.glob("*.png")) + sorted(run.dir.glob("*.svg"))]
    from markupsafe import Markup

    html = template.render(
        survey=run.survey.name,
        run_dir=str(run.dir),
        headlines=[
            {
                "question": h.question,
                "sentences": [Markup(s) for s in h.sentences],
                "table": h.table,
            }
            for h in headlines(run.metrics, diffs)
        ],
        floors=[
            (k, FLOOR_TITLE[k], v) for k, v in FLOOR_TEXT.items() if k in set(run.metrics["system"])
        ],
        failed=failed_systems(run.metrics),
        histograms=histograms(run, preds, plt) if plt is not None else [],
        segments=segment_tables(run.metrics),
        interventions=intervention_views(run, preds, plt),
        figures=figures,
        provenance=provenance(run),
        notes=notes,
        n_rows=len(run.metrics),
        n_overall=len(overall),
        small_n=SMALL_N,
        timings=run.timings,
        summary=text,
        config=yaml.safe_dump(run.config.model_dump(mode="json"), sort_keys=False),
    )
    path = run.dir / "report.html"
    atomic_write_text(path, html)
    return path
