"""The items-and-prompts stage: the survey's answers, the items of each split and their
rendered prompts, answer parsers, and training examples."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from surveysim_core.data import SurveyData, read_table, validate_long
from surveysim_core.errors import ConfigError
from surveysim_core.launch import data_dir
from surveysim_core.option_order import displayed_options
from surveysim_core.plan import Plan
from surveysim_core.plugins import Plugins
from surveysim_core.prompts import render_demographics, render_demographics_compact
from surveysim_core.protocols import Example, ItemSet, Progress, Prompt
from surveysim_core.rundir import check_data_file, synthetic_data


def load_data(plan: Plan, run_dir: Path, plugins: Plugins, progress: Progress) -> SurveyData:
    """The survey's answers: its synthetic population (generated into the run directory) or
    the data file, validated against the survey."""
    cfg, survey = plan.config.data, plan.survey
    if cfg.source == "synthetic":
        if survey.synthesize is None:
            raise ConfigError(
                f"{plan.source}: data.source: survey {survey.name} has no synthetic population; give data.path"
            )
        n = cfg.subjects or survey.spec.synthetic_subjects
        # generated whole (staged, then renamed) and checked by its SHA-256 when reused; the
        # main process writes into the run directory, the others into a private folder
        path = synthetic_data(data_dir(run_dir), survey.synthesize, n, cfg.seed, progress)
    else:
        assert cfg.path is not None  # DataSection requires a path for source 'file'
        path = Path(cfg.path)
        if not path.is_file():
            raise ConfigError(f"{plan.source}: data.path: {path} is not a file")
        check_data_file(run_dir, path)  # results already in the run were computed from it
    progress(f"reading {path}")
    table = survey.load(path) if survey.load else read_table(path, plugins.data_formats)
    # not filtered here: validate_long skips the questions this run leaves out, reports
    # questions the survey does not have, and keeps row numbers those of the file
    return validate_long(table, survey.spec, plan.answer_types, str(path), cfg.weight)


def build_items(
    plan: Plan, data: SurveyData, subject_ids: list[str], render: bool = True
) -> ItemSet:
    """The items of ``subject_ids`` in a stable order, with their prompts when ``render``."""
    sub = data.subset(subject_ids)
    items = sub.responses.sort_values(["subject_id", "seq", "question"], kind="stable").reset_index(
        drop=True
    )
    items["answer_text"] = [
        plan.answer_types[q].labels[int(i)]
        for q, i in zip(items["question"], _indices(plan, items), strict=True)
    ]
    prompts = render_prompts(plan, items, sub.respondents) if render else []
    return ItemSet(items, sub.respondents, prompts, plan.answer_types)


def _indices(plan: Plan, items: pd.DataFrame) -> np.ndarray:
    out = np.empty(len(items), dtype=int)
    for qid, answer in plan.answer_types.items():
        mask = (items["question"] == qid).to_numpy()
        out[mask] = answer.index_of(items.loc[mask, "answer"].to_numpy(float))
    return out


def render_prompts(
    plan: Plan, items: pd.DataFrame, respondents: pd.DataFrame, history: bool = True
) -> list[Prompt]:
    """One chat prompt per item: the respondent's persona and the question in context; with
    respondent memory (``prompts.memory``) and ``history``, the respondent's earlier turns from
    ``items["answer_text"]``. ``history=False``: every item as the first turn (a caller that
    supplies its own earlier turns, such as ``surveysim pilot``)."""
    spec = plan.survey.spec
    labels = {name: f.label or name for name, f in spec.demographics.items()}
    compact = plan.config.prompts.persona == "compact"
    render_persona = render_demographics_compact if compact else render_demographics
    beside_question = plan.config.prompts.persona_position == "question"
    systems: dict[str, str] = {}
    personas: dict[str, str] = {}
    for sid, row in respondents.iterrows():
        demo = render_persona(row.to_dict(), labels)
        # next to the question: the persona template without the demographics, which open
        # each question's turn instead
        system = plan.renderer.render(
            "system_compact" if compact else "system",
            demographics="" if beside_question else demo,
            respondent=row.to_dict(),
        )
        systems[str(sid)] = system.strip() if beside_question else system
        personas[str(sid)] = f"{demo}\n" if beside_question else ""
    questions = {q.id: q for q in spec.questions}
    prompts = []
    cache: dict[tuple, str] = {}
    order, seed = plan.config.decoding.option_order, plan.config.decoding.seed
    for rec in items.to_dict("records"):
        q = questions[rec["question"]]
        answer = plan.answer_types[q.id]
        options = displayed_options(answer, q.option_order or order, rec["subject_id"], q.id, seed)
        key = (q.id, *(rec[c] for c in q.context), *options)
        if key not in cache:
            context = {c: spec.context_values.get(c, {}).get(rec[c], rec[c]) for c in q.context}
            context_text = " ".join(v for v in context.values() if v)
            cache[key] = plan.renderer.render(
                q.template, question=q, answer=answer, options=options,
                context_text=context_text, **context,
            )  # fmt: skip
        subject = rec["subject_id"]
        prompts.append(Prompt(systems[subject], personas[subject] + cache[key]))
    if plan.config.prompts.memory and history:
        prompts = with_history(prompts, items, items["answer_text"].tolist())
    return prompts


def with_history(prompts: list[Prompt], items: pd.DataFrame, answers: list[str]) -> list[Prompt]:
    """Each respondent's prompts as one conversation in the order answered: every prompt gets
    the respondent's earlier (question, answer) turns. ``items`` must be sorted by subject and
    ``seq`` (as :func:`build_items` sorts them); ``answers[i]`` is the text of item i's answer."""
    out: list[Prompt] = []
    history: tuple[tuple[str, str], ...] = ()
    previous = None
    for prompt, subject, answer in zip(prompts, items["subject_id"], answers, strict=True):
        if subject != previous:
            history, previous = (), subject
        out.append(Prompt(prompt.system, prompt.user, history))
        history = (*history, (prompt.user, answer))
    return out


def parse_with(plan: Plan, qid: str) -> Callable[[str], float | None]:
    """The answer parser of question ``qid``: its parser chain, first answer wins."""
    chain = plan.parsers[qid]
    answer = plan.answer_types[qid]

    def parse(text: str) -> float | None:
        for parser in chain:
            value = parser(text, answer)
            if value is not None:
                return value
        return None

    return parse


def examples(items: ItemSet) -> list[Example]:
    """Training examples (prompt and answer text) of an item set with rendered prompts."""
    return [
        Example(prompt, rec["answer_text"], rec["question"], rec["answer"],
                items.answer_types[rec["question"]], rec["subject_id"])
        for prompt, rec in zip(items.prompts, items.items.to_dict("records"), strict=True)
    ]  # fmt: skip
