"""Which setting of a baseline grid stands for it: the one best on the validation split.

A baseline with many settings (an SVR or CatBoost grid) is scored on the test split in every
setting, but picking its best setting by a test metric would tune on the test split. So each
setting is also scored on the validation split (overall segment, no bootstrap), and per question
and metric the setting best there is marked in ``metrics.csv``:

- ``validation_value``: the setting's overall value on the validation split (segment "all" rows);
- ``chosen_on``: ``"validation"`` on every row (all segments) of the chosen setting for that
  question and metric; ``"test"`` when the run has no validation respondents and the choice fell
  back to the test value (logged as a warning); empty elsewhere (and for language models, whose
  epoch and temperature are chosen on validation by the backend and the calibration).

The summary, the report's headline and the "best baseline" of ``differences.csv`` pick among the
rows :func:`eligible` keeps.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

#: columns this module adds to a system's metric rows
CHOICE_COLUMNS = ["validation_value", "chosen_on"]


def mark_choice(
    metrics: pd.DataFrame,
    validation: pd.DataFrame | None,
    higher: Iterable[str],
    system: str = "",
) -> pd.DataFrame:
    """``metrics`` (one system's rows) with :data:`CHOICE_COLUMNS`.

    ``validation`` holds the system's overall metric rows on the validation split (None: the
    run has no validation respondents, and the choice falls back to the test value). Only
    rows of the ``answer`` readout (a baseline's own answers) take part in the choice; the
    chosen setting's rows of every readout are marked.
    """
    out = metrics.assign(validation_value=np.nan, chosen_on="")
    readout = out["readout"].fillna("").astype(str)
    answer = readout == "answer"
    overall = answer & (out["segment"] == "all")
    if not overall.any():
        return out
    if validation is not None and len(validation):
        val = validation[validation["segment"] == "all"]
        val_readout = val["readout"].fillna("").astype(str)
        lookup = {
            (str(r.setting), str(r.question), str(r.metric), ro): float(r.value)
            for r, ro in zip(val.itertuples(index=False), val_readout, strict=True)
        }
        keys = zip(
            out["setting"].astype(str), out["question"].astype(str), out["metric"].astype(str),
            readout, strict=True,
        )  # fmt: skip
        values = np.array([lookup.get(k, np.nan) for k in keys], float)
        # every overall row of a readout the validation split scored (its answers, and a
        # sampling baseline's mean): the best baseline of differences.csv is picked by them
        scored = (out["segment"] == "all") & readout.isin(set(val_readout))
        out.loc[scored, "validation_value"] = values[scored.to_numpy()]
        basis, label = "validation_value", "validation"
    else:
        if out.loc[answer, "setting"].nunique() > 1:
            log.warning(
                "%s: the run has no validation respondents; its best setting per question and"
                " metric is chosen on the test split (an oracle choice, labelled 'test')",
                system or "a baseline",
            )
        basis, label = "value", "test"
    up = set(higher)
    for (qid, name), group in out[overall].groupby(["question", "metric"], sort=False):
        scores = group[basis].dropna()
        if scores.empty:
            continue
        best = scores.idxmax() if name in up else scores.idxmin()
        setting = out.at[best, "setting"]
        # the chosen setting's other readouts (a sampling baseline's mean, ``expected``) go
        # with it: one choice per setting, made on its answers as given
        rows = (out["question"] == qid) & (out["metric"] == name)
        out.loc[rows & (out["setting"] == setting), "chosen_on"] = label
    return out


def eligible(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows that may stand for their system when a best is picked: where a system has a
    recorded choice for a question and metric, only the chosen setting's rows of it."""
    if "chosen_on" not in rows or rows.empty:
        return rows
    chosen = rows["chosen_on"].astype(object).fillna("").astype(str) != ""
    keys = [rows["system"], rows["question"].astype(str), rows["metric"]]
    has_choice = chosen.groupby(keys).transform("any")
    return rows[~has_choice | chosen]


def chosen_label(rows: pd.DataFrame) -> str:
    """How the rows' setting was chosen, for a label: "on validation", "on test" (the oracle
    fallback of a run without validation respondents) or "on test" for a run from before the
    choice was recorded."""
    if "chosen_on" in rows:
        values = set(rows["chosen_on"].astype(object).fillna("").astype(str)) - {""}
        if values == {"validation"}:
            return "on validation"
    return "on test"


def choice_summary(metrics: pd.DataFrame) -> dict[str, Any]:
    """Per setting: its overall validation values ``{question: {metric: value}}`` and the
    question/metric pairs it was chosen for, for ``settings.csv``."""
    out: dict[str, Any] = {}
    if "chosen_on" not in metrics:
        return out
    overall = metrics[metrics["segment"] == "all"]
    for setting, group in overall.groupby(overall["setting"].astype(str), sort=False):
        scores: dict[str, dict[str, float]] = {}
        for r in group.dropna(subset=["validation_value"]).itertuples(index=False):
            scores.setdefault(str(r.question), {})[str(r.metric)] = float(r.validation_value)
        chosen = group[group["chosen_on"].astype(object).fillna("").astype(str) != ""]
        out[setting] = {
            "validation": scores,
            "chosen_for": [
                [str(r.question), str(r.metric), str(r.chosen_on)]
                for r in chosen.itertuples(index=False)
            ],
        }
    return out
