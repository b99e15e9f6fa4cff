"""Per-question training data for the baselines: feature columns, encodings and answer scales.

A question's features are the respondents' demographic fields plus the item's context columns
(e.g. ``intervention``) that are set on at least one of that question's training rows, so the
initial question uses demographics only and the post-intervention question also sees which
statement was shown (method.md, Baselines). ``seq`` (answer order) is not a feature: the method
names demographics and intervention only.

With ``history`` (the baselines' ``history`` option) each item also gets the respondent's previous
answer, ``previous_answer``: the answer of the item before it in ``seq`` order, on that item's
question's [0, 1] scale (missing for a respondent's first item, and after an unordered question or
an invalid answer). That is what a known-respondent language model has in its context
(``prompts.memory`` with ``memory_at_evaluation: known``), so it is the fair reference for one. It
is a number, not a category: in the one-hot matrix it is the value (0 when missing) plus a 0/1
"missing" column; CatBoost gets the value itself, missing as NaN.

Single-select fields are categories (missing values are the category ``"<missing>"``); a
multi-select field (tuples of labels) becomes one 0/1 indicator column per label seen in
training. Categories seen only at test time encode as all zeros (like scikit-learn's
``handle_unknown="ignore"``).

Answers of ordered answer types are regression targets on [0, 1]: ``(code - lowest) / span``;
predictions are clipped to [0, 1], mapped back to the answer scale and rounded to the nearest
valid code in ``support`` (ties go to the lower code). Unordered answer types are classification
targets: the code itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from surveysim_core.answers import AnswerType
from surveysim_core.protocols import ItemSet

log = logging.getLogger(__name__)

#: items columns that are never features ("weight": survey weights, surveysim_core.weights)
ITEM_COLUMNS = ("subject_id", "question", "seq", "answer", "answer_text", "weight")
MISSING = "<missing>"
#: the feature column ``history`` adds
PREVIOUS = "previous_answer"


def _is_multi(value: Any) -> bool:
    return isinstance(value, (tuple, list, np.ndarray, set, frozenset))


def _as_category(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return MISSING
    text = str(value)
    return text if text.strip() else MISSING


def _labels(value: Any) -> tuple[str, ...]:
    if _is_multi(value):
        return tuple(str(v) for v in value)
    if _as_category(value) == MISSING:
        return ()
    return (str(value),)


@dataclass
class FeatureLayout:
    """Which columns feed a question's model, and the categories seen in training."""

    single: list[str]
    multi: dict[str, list[str]]  # multi-select field -> labels seen in training
    categories: dict[str, list[str]]  # single-select column -> categories seen in training
    numeric: list[str] = field(default_factory=list)  # number columns (NaN = missing)

    @classmethod
    def fit(
        cls, frame: pd.DataFrame, columns: list[str], numeric: tuple[str, ...] = ()
    ) -> FeatureLayout:
        single: list[str] = []
        multi: dict[str, list[str]] = {}
        categories: dict[str, list[str]] = {}
        for col in columns:
            values = frame[col]
            if any(_is_multi(v) for v in values):
                seen = sorted({label for v in values for label in _labels(v)})
                multi[col] = seen
            else:
                single.append(col)
                categories[col] = sorted({_as_category(v) for v in values})
        return cls(single, multi, categories, list(numeric))

    def one_hot(self, frame: pd.DataFrame) -> np.ndarray:
        """0/1 design matrix: one column per training category of each field (for SVR)."""
        blocks = []
        for col in self.single:
            values = frame[col].map(_as_category).to_numpy()
            cats = np.array(self.categories[col], dtype=object)
            blocks.append((values[:, None] == cats[None, :]).astype(np.float64))
        for col, labels in self.multi.items():
            blocks.append(_indicators(frame[col], labels))
        for col in self.numeric:
            values = frame[col].to_numpy(dtype=float)
            missing = np.isnan(values)
            blocks.append(np.column_stack([np.where(missing, 0.0, values), missing.astype(float)]))
        if not blocks:
            return np.zeros((len(frame), 0))
        return np.hstack(blocks)

    def categorical(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, list[int]]:
        """Single-select fields as string categories, multi-select as 0/1 columns (CatBoost).

        Returns the frame and the positions of its categorical columns.
        """
        out = {col: frame[col].map(_as_category).astype(str).to_numpy() for col in self.single}
        for col, labels in self.multi.items():
            indicators = _indicators(frame[col], labels)
            for j, label in enumerate(labels):
                out[f"{col}={label}"] = indicators[:, j]
        for col in self.numeric:
            out[col] = frame[col].to_numpy(dtype=float)
        table = pd.DataFrame(out, index=range(len(frame)))
        return table, list(range(len(self.single)))

    @property
    def n_columns(self) -> int:
        return (
            sum(len(c) for c in self.categories.values())
            + sum(len(v) for v in self.multi.values())
            + 2 * len(self.numeric)
        )


def _indicators(values: pd.Series, labels: list[str]) -> np.ndarray:
    position = {label: j for j, label in enumerate(labels)}
    out = np.zeros((len(values), len(labels)))
    for i, v in enumerate(values):
        for label in _labels(v):
            j = position.get(label)
            if j is not None:
                out[i, j] = 1.0
    return out


# -- answer scales ----------------------------------------------------------------------------
def to_unit(codes: np.ndarray, answer: AnswerType) -> np.ndarray:
    """Answer codes rescaled to [0, 1] by the answer type's lowest code and span."""
    low = float(answer.support[0])
    return (np.asarray(codes, dtype=float) - low) / answer.span


def to_codes(unit: np.ndarray, answer: AnswerType) -> np.ndarray:
    """Predictions on [0, 1] clipped, mapped back to the scale and rounded to the nearest code."""
    support = np.asarray(answer.support, dtype=float)
    values = support[0] + np.clip(np.asarray(unit, dtype=float), 0.0, 1.0) * answer.span
    right = np.clip(np.searchsorted(support, values), 1, max(len(support) - 1, 1))
    left = right - 1
    if len(support) == 1:
        return np.full(len(values), support[0])
    pick_right = (support[right] - values) < (values - support[left])
    return np.where(pick_right, support[right], support[left])


# -- per-question data ------------------------------------------------------------------------
@dataclass
class QuestionData:
    """One question's training rows and test rows, encoded with a :class:`FeatureLayout`."""

    question: str
    answer: AnswerType
    layout: FeatureLayout
    train: pd.DataFrame  # feature rows (demographics joined with items)
    target: np.ndarray  # unit-scale targets (ordered) or codes (unordered)
    test: pd.DataFrame
    test_rows: np.ndarray  # positions of the test rows in ``test.items``

    @property
    def ordered(self) -> bool:
        return bool(getattr(self.answer, "ordered", True))


def previous_answers(items: ItemSet) -> np.ndarray:
    """Per item, the same respondent's answer to the item before it in ``seq`` order, on that
    question's [0, 1] scale; NaN for a first item, after an unordered question or an invalid
    answer. Row order follows ``items.items``."""
    frame = items.items
    questions = frame["question"].to_numpy()
    answers = frame["answer"].to_numpy(dtype=float)
    unit = np.full(len(frame), np.nan)
    for qid in pd.unique(questions):
        answer = items.answer_types.get(qid)
        if answer is None or not getattr(answer, "ordered", True):
            continue
        position = np.flatnonzero(questions == qid)
        valid = answer.index_of(answers[position]) >= 0
        unit[position[valid]] = to_unit(answers[position[valid]], answer)
    order = np.lexsort((frame["seq"].to_numpy(), frame["subject_id"].astype(str).to_numpy()))
    subjects = frame["subject_id"].to_numpy()[order]
    previous = np.full(len(frame), np.nan)
    same = subjects[1:] == subjects[:-1]
    previous[order[1:][same]] = unit[order[:-1][same]]
    return previous


def question_data(train: ItemSet, test: ItemSet, history: bool = False) -> list[QuestionData]:
    """Every test question that has valid training answers, with its features and targets;
    with ``history``, the respondent's previous answer is a feature too (:data:`PREVIOUS`).

    A test question with no valid training answer is skipped with a log line (its predictions
    stay NaN, i.e. no answer).
    """
    train_frame = train.features().reset_index(drop=True)
    test_frame = test.features().reset_index(drop=True)
    if history:
        train_frame[PREVIOUS] = previous_answers(train)
        test_frame[PREVIOUS] = previous_answers(test)
    demographics = [c for c in train.respondents.columns if c not in ITEM_COLUMNS]
    context = [
        c
        for c in train.items.columns
        if c not in ITEM_COLUMNS and c not in demographics and not (history and c == PREVIOUS)
    ]
    out = []
    for qid in pd.unique(test.items["question"]):
        answer = test.answer_types.get(qid) or train.answer_types.get(qid)
        if answer is None:
            log.warning("baseline: question %r has no answer type; no predictions for it", qid)
            continue
        rows = train_frame[train_frame["question"] == qid]
        valid = answer.index_of(rows["answer"].to_numpy(dtype=float)) >= 0
        rows = rows[valid]
        if rows.empty:
            log.warning("baseline: question %r has no valid training answers; skipped", qid)
            continue
        used_context = [c for c in context if (rows[c].map(_as_category) != MISSING).any()]
        numeric = (PREVIOUS,) if history and rows[PREVIOUS].notna().any() else ()
        layout = FeatureLayout.fit(rows, demographics + used_context, numeric)
        codes = rows["answer"].to_numpy(dtype=float)
        ordered = bool(getattr(answer, "ordered", True))
        test_rows = np.flatnonzero((test_frame["question"] == qid).to_numpy())
        out.append(
            QuestionData(
                question=str(qid),
                answer=answer,
                layout=layout,
                train=rows.reset_index(drop=True),
                target=to_unit(codes, answer) if ordered else codes,
                test=test_frame.iloc[test_rows].reset_index(drop=True),
                test_rows=test_rows,
            )
        )
    return out


def sample_weights(qd: QuestionData) -> np.ndarray | None:
    """The survey weights of a question's training rows, for ``fit(sample_weight=...)``; None
    when the data have no weights."""
    if "weight" not in qd.train.columns:
        return None
    return qd.train["weight"].to_numpy(dtype=float)
