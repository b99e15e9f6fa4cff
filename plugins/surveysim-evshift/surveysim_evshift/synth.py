"""Seeded synthetic population for the EV-shift survey, with a known ground truth.

The respondent-level data of the EV-shift study (Arechiga et al. 2022) is not public.
This module generates a stand-in population of the same shape (4,045 subjects by
default, one initial answer each and about five sequential post-intervention answers)
from the structural model documented below. Every parameter of that model, and a few
quantities derived from it, is returned as the *truth* dictionary (and written to
``truth.json`` by :func:`write_population`), so experiments can compare what a model
learned with what generated the data.

Public API
----------
``synthesize_population(n_subjects=4045, seed=0) -> (responses, truth)``
    ``responses`` is a long-format :class:`pandas.DataFrame`, one row per answer;
    ``truth`` is a JSON-serialisable ``dict``.
``write_population(out_dir, n_subjects=4045, seed=0, overwrite=False) -> Path``
    writes ``out_dir/responses.csv`` and ``out_dir/truth.json`` and returns the CSV path;
    raises :class:`FileExistsError` if ``responses.csv`` exists and ``overwrite`` is false.

All randomness comes from one ``numpy.random.default_rng(seed)``, consumed in a fixed
order, so the same ``(n_subjects, seed)`` always gives byte-identical files.

Long format
-----------
Columns, in order: ``subject_id`` ("s0001", ...), the 14 demographic fields in
questionnaire order (verbatim option labels; the multi-select ``household`` holds the
selected labels joined with ``"|"`` in questionnaire option order), ``question``
(``initial_preference`` or ``post_intervention_preference``), ``intervention``
(statement id 1..35, pandas ``Int64``, missing for the initial answer), ``seq`` (0 for
the initial answer, 1..k for the post-intervention answers in the order they were
given) and ``answer`` (integer 0..100).

Structural model
----------------
Notation: subject i, post-intervention step t = 1..k_i, statement j = j(i, t).
Every parameter lives in ``synth_params.yaml`` next to this module (:func:`load_params`).
Tables named below are stored there and in ``truth`` under the same names, keyed by the
verbatim option labels (the file's ``education_by_age_band`` and
``state_population_millions`` appear in ``truth`` as the normalised ``education_by_age``
and ``state_weights``).

1. Demographics (drawn in this order; "~ table[x]" means a categorical draw from the
   row of the conditional table selected by x):

   * ``living_state`` ~ ``state_weights``: 2020 census resident population (millions),
     renormalised, with a share ``non_us_share`` of "I do not reside within the United
     States".
   * ``living_area``: "Prefer not to answer" with probability ``area_pna``; otherwise
     Urban with probability ``urban_share_by_state[state]`` (approximate census urban
     share; more rural states give more "Rural"), else Rural.
   * ``age`` ~ ``age_marginal``; ``gender`` ~ ``gender_marginal``;
     ``race`` ~ ``race_marginal``.
   * ``highest_education`` ~ ``education_by_age[age band]`` (18-25 have fewer graduate
     degrees yet; 66+ fewer degrees overall).
   * ``marital_status`` ~ ``marital_by_age[age]`` (young mostly never married, old more
     widowed).
   * ``number_of_children`` ~ ``children_by_age_marital[age][marital group]`` where the
     marital group is ever_married (Married/Widowed/Divorced/Separated), never_married
     (Never married/Other) or prefer_not (Prefer not to answer).
   * ``employment_status`` ~ renormalise(``employment_by_age[age]`` with the Homemaker
     weight multiplied by ``homemaker_gender_factor[gender]``): students are young,
     retirees old.
   * ``income``: "Prefer not to answer" with probability ``income_pna``; otherwise an
     ordered probit: z = ``income_coef.education[edu]`` + ``income_coef.employment[emp]``
     + ``income_coef.age[age]`` + N(0, 1), and the income bracket is the interval of
     ``income_cutpoints`` that holds z (education and employment drive income).
   * ``household`` (multi-select): "Prefer not to answer" alone with probability
     ``household.pna``; otherwise each of My spouse, My children, My parents, My
     siblings, My grandparents, Other relatives, Friends / Housemates is selected by an
     independent Bernoulli draw with the probabilities in ``household`` (spouse given
     marital status; children given age when the person has children, a small value for
     "0" children; parents given age, multiplied by ``parents_if_married_factor`` for the
     married; siblings given whether parents were selected; friends given age and
     marriage). If nothing was selected the answer is "I live alone" (so "I live alone"
     and "Prefer not to answer" never occur together with another option).
   * ``political``: "Prefer not to answer" with probability ``political_pna``, "Other"
     with probability ``political_other``; otherwise an ordered probit
     z = sum of ``political_coef`` terms for age, living area, education, race, gender
     + N(0, 1), cut by ``political_cutpoints`` into Strongly liberal < Somewhat liberal
     < Somewhat conservative < Strongly conservative (young, urban, educated, non-White
     lean liberal).
   * ``religion`` ~ ``religion_by_political_group[group]`` with group liberal,
     conservative or other (Other/Prefer not to answer).
   * ``religious_participation`` ~ ``participation_by_religion_group[group]`` with
     group none (None/Don't know), prefer_not, or religious (all other religions).

2. Initial preference (latent, on the 0-100 answer scale)::

       L0_i = intercept + b_pol[political_i] + b_age[age_i] + b_area[living_area_i]
              + b_inc[income_i] + b_edu[highest_education_i] + a_i + e_i
       a_i ~ N(0, attitude_sd)        (per-person latent attitude, kept for later steps)
       e_i ~ N(0, initial_noise_sd)
       P0_i = clip(L0_i, 0, 100)

   Coefficients are in ``initial_coef``; political leaning has the largest range
   (Strongly liberal +22 ... Strongly conservative -22), then age (18-25 +8 ... 66+
   -8), living area (Urban +5, Rural -5), income, education. No other field has a
   direct effect (their marginal associations with the answer come only through the
   correlated demographics above).

3. Post-intervention answers are sequential. For t = 1..k_i::

       delta_it = s_i * (base[j] + g_cost[income_i]      * [j in cost]
                                 + g_env[political_i]    * [j in environmental]
                                 + g_charge[living_area_i] * [j in charging])
                  + u_it
       P_it = clip(P_i,t-1 + delta_it, 0, 100)

   ``P_i,t-1`` is the previous answer's continuous value before heaping (clipped to
   0..100), so each step starts from the person's previous answer. ``s_i`` is the
   per-person susceptibility, s_i = exp(N(-susceptibility_log_sd**2 / 2,
   susceptibility_log_sd)) (mean 1); ``u_it ~ N(0, shift_noise_sd)``. ``base`` holds
   the 35 statement effects (``intervention_base_effect``; mostly small positive, a few
   about 0 or slightly negative). The segment interactions (``segment_effects``) are:
   cost statements (``intervention_groups.cost``) larger for lower incomes;
   environmental statements (21, 22) larger for liberals and negative in total
   (backfire) for strong conservatives; charging statements (1-6, 9) larger for rural
   people. Statements are drawn per subject uniformly at random without replacement.
   The number of post answers k_i is 5 for most subjects and 1..4 for a few
   (``n_post_distribution``; its expectation matches 20,217 answers for 4,045 subjects).

4. Answer style (``answer_style``), applied to each continuous value P (initial and
   post) to give the integer answer A:

   a. post answers only (anchoring): if |P_it - A_i,t-1| <= ``anchor_window``, then with
      probability ``anchor_prob`` the person repeats the previous answer A_i,t-1;
   b. otherwise, if |P - 50| <= ``fifty_window``, with probability ``fifty_prob`` A = 50;
   c. otherwise, if P >= 100 - ``endpoint_window`` (P <= ``endpoint_window``), with
      probability ``endpoint_prob`` A = 100 (A = 0);
   d. otherwise, with probability ``round10_prob`` A = P rounded to the nearest 10,
      with probability ``round5_prob`` to the nearest 5, else to the nearest integer
      (rounding half to even, numpy.rint).

   Each stage uses its own uniform draw. This yields mass exactly at 0 and 100, heaping
   on multiples of 10 and extra mass at 50.

Derived quantities in ``truth``
-------------------------------
* ``expected_mean_shift_by_intervention``: for each statement id, the mean of the
  structural shift s_i * (base[j] + segment terms) over the subjects of the generated
  population who received that statement -- the latent model BEFORE noise u, clipping,
  anchoring and heaping.
* ``expected_mean_shift_by_intervention_population``: the same structural shift
  averaged over ALL generated subjects (as if everyone had seen the statement).
* ``realised_mean_shift_by_intervention``: mean of A_it - A_i,t-1 in the realised data.
* ``initial_mean_by_political``: realised mean initial answer per political option
  (``None`` for an option nobody chose).
* ``realised_mean_shift_by_group_segment``: realised mean answer shift for the cost
  statements by income, the environmental statements by political leaning and the
  charging statements by living area.
* ``n_post_answers`` and ``initial_mean``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from surveysim_core.errors import ConfigError

__all__ = ["load_params", "load_questionnaire", "synthesize_population", "write_population"]

QUESTIONNAIRE_PATH = Path(__file__).resolve().parent / "questionnaire.yaml"
PARAMS_PATH = Path(__file__).resolve().parent / "synth_params.yaml"

DEMOGRAPHIC_FIELDS = (
    "living_state",
    "living_area",
    "age",
    "gender",
    "race",
    "highest_education",
    "marital_status",
    "number_of_children",
    "household",
    "employment_status",
    "income",
    "political",
    "religion",
    "religious_participation",
)

N_INTERVENTIONS = 35
MAX_POST = 5
NON_US = "I do not reside within the United States"

# The groups that index the conditional tables; their order is the row order of each table.
MARITAL_GROUPS = ("ever_married", "never_married", "prefer_not")
POLITICAL_GROUPS = ("liberal", "conservative", "other")
RELIGION_GROUPS = ("none", "religious", "prefer_not")
LEANINGS = (
    "Strongly liberal",
    "Somewhat liberal",
    "Somewhat conservative",
    "Strongly conservative",
)

PARAM_KEYS = (
    "state_population_millions",
    "non_us_share",
    "urban_share_by_state",
    "area_pna",
    "age_marginal",
    "gender_marginal",
    "race_marginal",
    "education_by_age_band",
    "age_band",
    "marital_by_age",
    "marital_group",
    "children_by_age_marital",
    "employment_by_age",
    "homemaker_gender_factor",
    "income_pna",
    "income_coef",
    "income_cutpoints",
    "household",
    "political_pna",
    "political_other",
    "political_coef",
    "political_cutpoints",
    "religion_by_political_group",
    "participation_by_religion_group",
    "initial_coef",
    "attitude_sd",
    "initial_noise_sd",
    "intervention_base_effect",
    "intervention_groups",
    "segment_effects",
    "susceptibility_log_sd",
    "shift_noise_sd",
    "n_post_distribution",
    "answer_style",
)

# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------


def load_questionnaire() -> dict:
    """Load the packaged ``questionnaire.yaml``."""
    with open(QUESTIONNAIRE_PATH, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def load_params(path: str | Path = PARAMS_PATH) -> dict[str, Any]:
    """Load the structural model's parameters (the packaged ``synth_params.yaml``)."""
    with open(path, encoding="utf-8") as fh:
        params = yaml.safe_load(fh)
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping of parameters")
    missing = [k for k in PARAM_KEYS if k not in params]
    unknown = sorted(set(params) - set(PARAM_KEYS))
    if missing or unknown:
        raise ConfigError(f"{path}: missing parameters {missing}, unknown parameters {unknown}")
    return params


def _options(questionnaire: dict) -> dict[str, list[str]]:
    demo = questionnaire["demographics"]
    missing = [f for f in DEMOGRAPHIC_FIELDS if f not in demo]
    if missing:
        raise ValueError(f"questionnaire.yaml lacks demographic fields {missing}")
    return {f: [str(o) for o in demo[f]["options"]] for f in DEMOGRAPHIC_FIELDS}


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _table(values: dict[str, Any], options: list[str], what: str) -> np.ndarray:
    """Values of a label-keyed dict in option order; fails on a label mismatch."""
    if set(values) != set(options):
        raise ValueError(
            f"{what}: labels {sorted(set(values) ^ set(options))} do not match the questionnaire"
        )
    return np.array([values[o] for o in options], dtype=float)


def _weights(row: list[float], options: list[str], what: str) -> np.ndarray:
    if len(row) != len(options):
        raise ValueError(f"{what}: {len(row)} weights for {len(options)} options")
    w = np.asarray(row, dtype=float)
    return w / w.sum()


def _draw_rows(u: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Categorical draw per row: ``probs`` is (n, K) with rows summing to 1."""
    cum = np.cumsum(probs, axis=1)
    cum[:, -1] = 1.0
    idx = (u[:, None] >= cum).sum(axis=1)
    return np.minimum(idx, probs.shape[1] - 1)


def _draw_marginal(u: np.ndarray, probs: np.ndarray) -> np.ndarray:
    cum = np.cumsum(probs / probs.sum())
    cum[-1] = 1.0
    return np.minimum(np.searchsorted(cum, u, side="right"), probs.size - 1)


def _heap(
    p: np.ndarray,
    u_fifty: np.ndarray,
    u_end: np.ndarray,
    u_round: np.ndarray,
    style: dict[str, float],
) -> np.ndarray:
    """Answer-style mapping of continuous values in [0, 100] to integer answers."""
    out = np.rint(p)
    r10 = u_round < style["round10_prob"]
    r5 = (~r10) & (u_round < style["round10_prob"] + style["round5_prob"])
    out = np.where(r10, np.rint(p / 10.0) * 10.0, out)
    out = np.where(r5, np.rint(p / 5.0) * 5.0, out)
    w = style["endpoint_window"]
    end = u_end < style["endpoint_prob"]
    out = np.where(end & (p >= 100.0 - w), 100.0, out)
    out = np.where(end & (p <= w), 0.0, out)
    fifty = (np.abs(p - 50.0) <= style["fifty_window"]) & (u_fifty < style["fifty_prob"])
    out = np.where(fifty, 50.0, out)
    return np.clip(out, 0, 100).astype(np.int64)


def _r(x: float) -> float:
    return round(float(x), 6)


def _labelled(labels: list[str], values: np.ndarray) -> dict[str, float]:
    return {lbl: _r(v) for lbl, v in zip(labels, values, strict=True)}


def _mean_or_none(x: np.ndarray) -> float | None:
    return _r(x.mean()) if x.size else None


# ---------------------------------------------------------------------------
# Generator stages
# ---------------------------------------------------------------------------
# Each stage draws from the one generator in a fixed order (the order of the calls in
# synthesize_population), so the same (n_subjects, seed) always gives the same files.


@dataclass
class _Draw:
    """The state shared by the stages: inputs, the generator, and what was drawn so far."""

    n: int
    rng: np.random.Generator
    opts: dict[str, list[str]]
    params: dict[str, Any]
    idx: dict[str, np.ndarray] = field(default_factory=dict)  # option index per subject
    tables: dict[str, np.ndarray] = field(default_factory=dict)  # normalised tables for truth

    def pos(self, field_name: str, label: str) -> int:
        return self.opts[field_name].index(label)

    def uniform(self) -> np.ndarray:
        return self.rng.random(self.n)


def _draw_state_and_area(d: _Draw) -> None:
    p = d.params
    states = d.opts["living_state"]
    pop = p["state_population_millions"]
    state_w = np.array([pop[s] if s != NON_US else 0.0 for s in states], dtype=float)
    state_w = state_w / state_w.sum() * (1.0 - p["non_us_share"])
    state_w[states.index(NON_US)] = p["non_us_share"]
    d.tables["state_weights"] = state_w
    d.idx["living_state"] = _draw_marginal(d.uniform(), state_w)

    urban = _table(p["urban_share_by_state"], states, "urban_share_by_state")
    urban_p = urban[d.idx["living_state"]]
    u1, u2 = d.uniform(), d.uniform()
    area = np.where(u2 < urban_p, d.pos("living_area", "Urban"), d.pos("living_area", "Rural"))
    pna = d.pos("living_area", "Prefer not to answer")
    d.idx["living_area"] = np.where(u1 < p["area_pna"], pna, area)


def _draw_age_gender_race(d: _Draw) -> None:
    for name in ("age", "gender", "race"):
        marginal = _table(d.params[f"{name}_marginal"], d.opts[name], name)
        d.idx[name] = _draw_marginal(d.uniform(), marginal)


def _draw_education_marital_children(d: _Draw) -> None:
    p, opts, ages = d.params, d.opts, d.opts["age"]
    edu_by_band = p["education_by_age_band"]
    edu_tab = np.stack(
        [
            _weights(edu_by_band[p["age_band"][a]], opts["highest_education"], "education")
            for a in ages
        ]
    )
    d.idx["highest_education"] = _draw_rows(d.uniform(), edu_tab[d.idx["age"]])

    mar_tab = np.stack(
        [_weights(p["marital_by_age"][a], opts["marital_status"], "marital") for a in ages]
    )
    d.tables["marital_by_age"] = mar_tab
    d.idx["marital_status"] = _draw_rows(d.uniform(), mar_tab[d.idx["age"]])
    group_of = np.array(
        [MARITAL_GROUPS.index(p["marital_group"][m]) for m in opts["marital_status"]]
    )
    mg = group_of[d.idx["marital_status"]]

    children = p["children_by_age_marital"]
    ch_tab = np.stack(
        [
            np.stack(
                [
                    _weights(children[a][g], opts["number_of_children"], "children")
                    for g in MARITAL_GROUPS
                ]
            )
            for a in ages
        ]
    )
    d.tables["children_by_age_marital"] = ch_tab
    d.idx["number_of_children"] = _draw_rows(d.uniform(), ch_tab[d.idx["age"], mg])


def _draw_employment_income(d: _Draw) -> None:
    p, opts, ages = d.params, d.opts, d.opts["age"]
    emp_opts = opts["employment_status"]
    emp_tab = np.stack([_weights(p["employment_by_age"][a], emp_opts, "employment") for a in ages])
    d.tables["employment_by_age"] = emp_tab
    hm_factor = _table(p["homemaker_gender_factor"], opts["gender"], "homemaker_gender_factor")
    emp_p = emp_tab[d.idx["age"]].copy()
    emp_p[:, emp_opts.index("Homemaker")] *= hm_factor[d.idx["gender"]]
    emp_p /= emp_p.sum(axis=1, keepdims=True)
    d.idx["employment_status"] = _draw_rows(d.uniform(), emp_p)

    # Ordered probit on education, employment and age.
    coef = p["income_coef"]
    z_inc = (
        _table(coef["education"], opts["highest_education"], "income education")[
            d.idx["highest_education"]
        ]
        + _table(coef["employment"], emp_opts, "income employment")[d.idx["employment_status"]]
        + _table(coef["age"], ages, "income age")[d.idx["age"]]
        + d.rng.standard_normal(d.n)
    )
    bracket = np.searchsorted(np.asarray(p["income_cutpoints"]), z_inc, side="right")
    pna = opts["income"].index("Prefer not to answer")
    d.idx["income"] = np.where(d.uniform() < p["income_pna"], pna, bracket)


def _draw_household(d: _Draw) -> np.ndarray:
    """The multi-select household answer per subject, labels joined with ``|``."""
    opts, ages, n = d.opts, d.opts["age"], d.n
    hh_opts = opts["household"]
    H = d.params["household"]
    age_i = d.idx["age"]
    ch_lbl = np.array(opts["number_of_children"])[d.idx["number_of_children"]]
    married = d.idx["marital_status"] == d.pos("marital_status", "Married")
    p_sp = _table(H["spouse_by_marital"], opts["marital_status"], "spouse")[d.idx["marital_status"]]
    p_ch = np.where(
        ch_lbl == "0",
        H["children_if_no_children"],
        np.where(
            ch_lbl == "prefer not to answer",
            H["children_if_children_pna"],
            _table(H["children_if_has_children_by_age"], ages, "children hh")[age_i],
        ),
    )
    p_par = _table(H["parents_by_age"], ages, "parents")[age_i] * np.where(
        married, H["parents_if_married_factor"], 1.0
    )
    u_hh = d.rng.random((n, 8))
    sel = np.zeros((n, len(hh_opts)), dtype=bool)
    sel[:, hh_opts.index("My spouse")] = u_hh[:, 0] < p_sp
    sel[:, hh_opts.index("My children")] = u_hh[:, 1] < p_ch
    with_par = u_hh[:, 2] < p_par
    sel[:, hh_opts.index("My parents")] = with_par
    sel[:, hh_opts.index("My siblings")] = u_hh[:, 3] < np.where(
        with_par, H["siblings_if_with_parents"], H["siblings_otherwise"]
    )
    sel[:, hh_opts.index("My grandparents")] = (
        u_hh[:, 4] < _table(H["grandparents_by_age"], ages, "grandparents")[age_i]
    )
    sel[:, hh_opts.index("Other relatives")] = u_hh[:, 5] < H["other_relatives"]
    sel[:, hh_opts.index("Friends / Housemates")] = u_hh[:, 6] < np.where(
        married,
        H["friends_if_married"],
        _table(H["friends_if_not_married_by_age"], ages, "friends")[age_i],
    )
    sel[:, hh_opts.index("I live alone")] = ~sel.any(axis=1)
    pna = u_hh[:, 7] < H["pna"]
    sel[pna] = False
    sel[pna, hh_opts.index("Prefer not to answer")] = True
    return _join_selections(sel, hh_opts)


def _join_selections(sel: np.ndarray, options: list[str]) -> np.ndarray:
    """Rows of a boolean selection matrix as ``|``-joined labels in option order."""
    labels = np.array(options, dtype=object)
    # Distinct selection patterns are few; join once per pattern.
    codes = sel.astype(np.int64) @ (1 << np.arange(len(options), dtype=np.int64))
    uniq, inv = np.unique(codes, return_inverse=True)
    joined = np.array(
        ["|".join(labels[[(c >> b) & 1 == 1 for b in range(len(options))]]) for c in uniq],
        dtype=object,
    )
    return joined[inv.reshape(-1)]


def _draw_political(d: _Draw) -> None:
    """Ordered probit on age, living area, education, race and gender."""
    p = d.params
    z_pol = d.rng.standard_normal(d.n)
    for name, coef in p["political_coef"].items():
        z_pol = z_pol + _table(coef, d.opts[name], f"political {name}")[d.idx[name]]
    lean = np.searchsorted(np.asarray(p["political_cutpoints"]), z_pol, side="right")
    lean_pos = np.array([d.pos("political", lbl) for lbl in LEANINGS])
    u_pol = d.uniform()
    d.idx["political"] = np.where(
        u_pol < p["political_pna"],
        d.pos("political", "Prefer not to answer"),
        np.where(
            u_pol < p["political_pna"] + p["political_other"],
            d.pos("political", "Other"),
            lean_pos[lean],
        ),
    )


def _draw_religion(d: _Draw) -> None:
    p, opts = d.params, d.opts
    rel_opts = opts["religion"]
    pol_group_of = np.array(
        [0 if "liberal" in x else 1 if "conservative" in x else 2 for x in opts["political"]]
    )
    rel_tab = np.stack(
        [
            _weights(p["religion_by_political_group"][g], rel_opts, "religion")
            for g in POLITICAL_GROUPS
        ]
    )
    d.tables["religion_by_political_group"] = rel_tab
    d.idx["religion"] = _draw_rows(d.uniform(), rel_tab[pol_group_of[d.idx["political"]]])

    rel_group_of = np.array(
        [
            0 if r in ("None", "Don't know") else 2 if r == "Prefer not to answer" else 1
            for r in rel_opts
        ]
    )
    part_opts = opts["religious_participation"]
    part_tab = np.stack(
        [
            _weights(p["participation_by_religion_group"][g], part_opts, "participation")
            for g in RELIGION_GROUPS
        ]
    )
    d.tables["participation_by_religion_group"] = part_tab
    d.idx["religious_participation"] = _draw_rows(
        d.uniform(), part_tab[rel_group_of[d.idx["religion"]]]
    )


def _draw_initial(d: _Draw) -> tuple[np.ndarray, np.ndarray]:
    """The initial preference: continuous value ``p0`` and heaped answer ``a0``."""
    p = d.params
    coef = p["initial_coef"]
    structural0 = np.full(d.n, coef["intercept"])
    for name in ("political", "age", "living_area", "income", "highest_education"):
        structural0 = structural0 + _table(coef[name], d.opts[name], f"initial {name}")[d.idx[name]]
    attitude = d.rng.normal(0.0, p["attitude_sd"], d.n)
    noise0 = d.rng.normal(0.0, p["initial_noise_sd"], d.n)
    p0 = np.clip(structural0 + attitude + noise0, 0.0, 100.0)
    a0 = _heap(p0, d.uniform(), d.uniform(), d.uniform(), p["answer_style"])
    return p0, a0


@dataclass
class _Shifts:
    """The structural shift model: ``s_i * (base[j] + segment terms)``."""

    base: np.ndarray  # (N_INTERVENTIONS,) statement effects
    is_cost: np.ndarray  # (N_INTERVENTIONS + 1,) membership by statement id
    is_env: np.ndarray
    is_charge: np.ndarray
    g_cost: np.ndarray  # (n,) segment effect per subject
    g_env: np.ndarray
    g_charge: np.ndarray
    suscept: np.ndarray  # (n,) per-subject susceptibility

    def __call__(self, j: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The structural shift for statement ids ``j`` and subject ``rows``."""
        eff = (
            self.base[j - 1]
            + self.is_cost[j] * self.g_cost[rows]
            + self.is_env[j] * self.g_env[rows]
            + self.is_charge[j] * self.g_charge[rows]
        )
        return self.suscept[rows] * eff


def _shift_model(d: _Draw, suscept: np.ndarray) -> _Shifts:
    p, opts = d.params, d.opts
    groups = p["intervention_groups"]
    member = {}
    for name in ("cost", "environmental", "charging"):
        m = np.zeros(N_INTERVENTIONS + 1, dtype=bool)
        m[groups[name]] = True
        member[name] = m
    seg = p["segment_effects"]
    return _Shifts(
        base=np.array([p["intervention_base_effect"][j] for j in range(1, N_INTERVENTIONS + 1)]),
        is_cost=member["cost"],
        is_env=member["environmental"],
        is_charge=member["charging"],
        g_cost=_table(seg["cost_by_income"], opts["income"], "cost_by_income")[d.idx["income"]],
        g_env=_table(seg["environmental_by_political"], opts["political"], "env_by_political")[
            d.idx["political"]
        ],
        g_charge=_table(seg["charging_by_living_area"], opts["living_area"], "charging_by_area")[
            d.idx["living_area"]
        ],
        suscept=suscept,
    )


@dataclass
class _Post:
    """The post-intervention answers of every subject (MAX_POST steps; ``n_post`` used)."""

    n_post: np.ndarray  # (n,) number of post answers
    stmt: np.ndarray  # (n, MAX_POST) statement ids
    struct: np.ndarray  # (n, MAX_POST) structural shifts
    answers: np.ndarray  # (n, MAX_POST) heaped integer answers
    shifts: _Shifts


def _draw_post(d: _Draw, p0: np.ndarray, a0: np.ndarray) -> _Post:
    """Sequential post-intervention answers, each starting from the previous one."""
    p, n = d.params, d.n
    dist = p["n_post_distribution"]
    k_vals = np.array(sorted(dist), dtype=np.int64)
    k_probs = np.array([dist[k] for k in sorted(dist)])
    n_post = k_vals[_draw_marginal(d.uniform(), k_probs)]
    order = np.argsort(d.rng.random((n, N_INTERVENTIONS)), axis=1, kind="stable")[:, :MAX_POST]
    stmt = order + 1  # statement ids, (n, MAX_POST)
    log_sd = p["susceptibility_log_sd"]
    suscept = np.exp(d.rng.normal(-0.5 * log_sd**2, log_sd, n))
    shift_noise = d.rng.normal(0.0, p["shift_noise_sd"], (n, MAX_POST))
    u_anchor, u_fifty, u_end, u_round = (d.rng.random((n, MAX_POST)) for _ in range(4))

    shifts = _shift_model(d, suscept)
    rows_all = np.arange(n)
    struct = np.stack([shifts(stmt[:, t], rows_all) for t in range(MAX_POST)], axis=1)
    style = p["answer_style"]
    a_post = np.empty((n, MAX_POST), dtype=np.int64)
    p_prev, a_prev = p0, a0
    for t in range(MAX_POST):
        p_t = np.clip(p_prev + struct[:, t] + shift_noise[:, t], 0.0, 100.0)
        a_t = _heap(p_t, u_fifty[:, t], u_end[:, t], u_round[:, t], style)
        anchored = (np.abs(p_t - a_prev) <= style["anchor_window"]) & (
            u_anchor[:, t] < style["anchor_prob"]
        )
        a_t = np.where(anchored, a_prev, a_t)
        a_post[:, t] = a_t
        p_prev, a_prev = p_t, a_t
    return _Post(n_post=n_post, stmt=stmt, struct=struct, answers=a_post, shifts=shifts)


# ---------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------


def _long_format(d: _Draw, household: np.ndarray, a0: np.ndarray, post: _Post) -> pd.DataFrame:
    """One row per answer: the initial answer (seq 0), then the post answers (seq 1..k)."""
    n = d.n
    width = max(4, len(str(n)))
    subject_ids = np.array([f"s{i:0{width}d}" for i in range(1, n + 1)], dtype=object)
    rows_per = 1 + post.n_post
    subj_row = np.repeat(np.arange(n), rows_per)
    starts = np.concatenate([[0], np.cumsum(rows_per)[:-1]])
    seq = np.arange(subj_row.size) - np.repeat(starts, rows_per)
    is_post = seq > 0
    t_idx = np.maximum(seq - 1, 0)
    answer = np.where(is_post, post.answers[subj_row, t_idx], a0[subj_row])
    interv = np.where(is_post, post.stmt[subj_row, t_idx], 0)

    data: dict[str, Any] = {"subject_id": subject_ids[subj_row]}
    for name in DEMOGRAPHIC_FIELDS:
        if name == "household":
            data[name] = household[subj_row]
        else:
            data[name] = np.array(d.opts[name], dtype=object)[d.idx[name]][subj_row]
    data["question"] = np.where(is_post, "post_intervention_preference", "initial_preference")
    data["intervention"] = pd.arrays.IntegerArray(interv.astype(np.int64), ~is_post)
    df = pd.DataFrame(data)
    df["seq"] = seq.astype(np.int64)
    df["answer"] = answer.astype(np.int64)
    return df


def _parameter_truth(d: _Draw) -> dict[str, Any]:
    """The model's parameters as stored in ``truth`` (conditional tables normalised)."""
    p, opts, ages, t = d.params, d.opts, d.opts["age"], d.tables
    return {
        "demographic_fields": list(DEMOGRAPHIC_FIELDS),
        "state_weights": _labelled(opts["living_state"], t["state_weights"]),
        "state_population_millions": dict(p["state_population_millions"]),
        "non_us_share": p["non_us_share"],
        "urban_share_by_state": dict(p["urban_share_by_state"]),
        "area_pna": p["area_pna"],
        "age_marginal": dict(p["age_marginal"]),
        "gender_marginal": dict(p["gender_marginal"]),
        "race_marginal": dict(p["race_marginal"]),
        "age_band": dict(p["age_band"]),
        "education_by_age": {
            band: _labelled(
                opts["highest_education"], _weights(w, opts["highest_education"], "education")
            )
            for band, w in p["education_by_age_band"].items()
        },
        "marital_by_age": {
            a: _labelled(opts["marital_status"], t["marital_by_age"][i]) for i, a in enumerate(ages)
        },
        "marital_group": dict(p["marital_group"]),
        "children_by_age_marital": {
            a: {
                g: _labelled(opts["number_of_children"], t["children_by_age_marital"][i, gi])
                for gi, g in enumerate(MARITAL_GROUPS)
            }
            for i, a in enumerate(ages)
        },
        "employment_by_age": {
            a: _labelled(opts["employment_status"], t["employment_by_age"][i])
            for i, a in enumerate(ages)
        },
        "homemaker_gender_factor": dict(p["homemaker_gender_factor"]),
        "income_pna": p["income_pna"],
        "income_coef": {k: dict(v) for k, v in p["income_coef"].items()},
        "income_cutpoints": list(p["income_cutpoints"]),
        "household": dict(p["household"]),
        "political_pna": p["political_pna"],
        "political_other": p["political_other"],
        "political_coef": {k: dict(v) for k, v in p["political_coef"].items()},
        "political_cutpoints": list(p["political_cutpoints"]),
        "religion_by_political_group": {
            g: _labelled(opts["religion"], t["religion_by_political_group"][i])
            for i, g in enumerate(POLITICAL_GROUPS)
        },
        "participation_by_religion_group": {
            g: _labelled(opts["religious_participation"], t["participation_by_religion_group"][i])
            for i, g in enumerate(RELIGION_GROUPS)
        },
        "initial_coef": dict(p["initial_coef"]),
        "attitude_sd": p["attitude_sd"],
        "initial_noise_sd": p["initial_noise_sd"],
        "intervention_base_effect": {str(j): v for j, v in p["intervention_base_effect"].items()},
        "intervention_groups": {k: list(v) for k, v in p["intervention_groups"].items()},
        "segment_effects": {k: dict(v) for k, v in p["segment_effects"].items()},
        "susceptibility_log_sd": p["susceptibility_log_sd"],
        "shift_noise_sd": p["shift_noise_sd"],
        "n_post_distribution": {str(k): v for k, v in p["n_post_distribution"].items()},
        "answer_style": dict(p["answer_style"]),
    }


def _derived_truth(d: _Draw, a0: np.ndarray, post: _Post) -> dict[str, Any]:
    """Quantities derived from the generated population (expected and realised shifts)."""
    n, opts, stmt = d.n, d.opts, post.stmt
    valid = np.arange(MAX_POST)[None, :] < post.n_post[:, None]
    prev_a = np.concatenate([a0[:, None], post.answers[:, :-1]], axis=1)
    d_answer = (post.answers - prev_a).astype(float)
    rows_all = np.arange(n)
    expected_shift: dict[str, float | None] = {}
    realised_shift: dict[str, float | None] = {}
    population_shift: dict[str, float] = {}
    n_by_stmt: dict[str, int] = {}
    for j in range(1, N_INTERVENTIONS + 1):
        m = valid & (stmt == j)
        cnt = int(m.sum())
        n_by_stmt[str(j)] = cnt
        expected_shift[str(j)] = _r(post.struct[m].mean()) if cnt else None
        realised_shift[str(j)] = _r(d_answer[m].mean()) if cnt else None
        population_shift[str(j)] = _r(post.shifts(np.full(n, j), rows_all).mean())

    def group_shift(stmts: list[int], name: str) -> dict[str, float | None]:
        in_group = valid & np.isin(stmt, stmts)
        seg = np.broadcast_to(d.idx[name][:, None], stmt.shape)
        return {
            lbl: _mean_or_none(d_answer[in_group & (seg == i)]) for i, lbl in enumerate(opts[name])
        }

    groups = d.params["intervention_groups"]
    return {
        "n_post_answers": int(valid.sum()),
        "expected_mean_shift_by_intervention": expected_shift,
        "expected_mean_shift_basis": (
            "mean over the generated subjects who received the statement of the structural "
            "shift s_i * (base + segment effects), before noise, clipping, anchoring and heaping"
        ),
        "expected_mean_shift_by_intervention_population": population_shift,
        "realised_mean_shift_by_intervention": realised_shift,
        "realised_mean_shift_basis": "mean of answer_t - answer_(t-1) in the generated data",
        "n_answers_by_intervention": n_by_stmt,
        "initial_mean": _r(a0.mean()),
        "initial_mean_by_political": {
            lbl: _mean_or_none(a0[d.idx["political"] == i])
            for i, lbl in enumerate(opts["political"])
        },
        "realised_mean_shift_by_group_segment": {
            "cost_by_income": group_shift(groups["cost"], "income"),
            "environmental_by_political": group_shift(groups["environmental"], "political"),
            "charging_by_living_area": group_shift(groups["charging"], "living_area"),
        },
    }


def _truth(d: _Draw, seed: int, a0: np.ndarray, post: _Post) -> dict[str, Any]:
    derived = _derived_truth(d, a0, post)
    truth: dict[str, Any] = {
        "description": (
            "Ground truth of the seeded synthetic EV-shift population; see the docstring "
            "of surveysim_evshift.synth for the equations."
        ),
        "generator": "surveysim_evshift.synth.synthesize_population",
        "seed": seed,
        "n_subjects": d.n,
        "n_post_answers": derived.pop("n_post_answers"),
        **_parameter_truth(d),
        **derived,
    }
    # Normalise to plain JSON types (str keys, lists, Python floats) so that the dict
    # equals what json.load gives back from truth.json.
    return json.loads(json.dumps(truth))


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


def synthesize_population(n_subjects: int = 4045, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Generate the synthetic EV-shift population.

    Returns ``(responses, truth)``: the long-format answers (see the module docstring
    for the columns and the structural model) and a JSON-serialisable dict with every
    parameter of the model plus derived quantities.
    """
    n = int(n_subjects)
    if n < 1:
        raise ValueError("n_subjects must be at least 1")
    seed = int(seed)
    q = load_questionnaire()
    statements = {int(k) for k in q["interventions"]}
    if statements != set(range(1, N_INTERVENTIONS + 1)):
        raise ValueError("questionnaire.yaml must list interventions 1..35")
    d = _Draw(n=n, rng=np.random.default_rng(seed), opts=_options(q), params=load_params())
    _draw_state_and_area(d)
    _draw_age_gender_race(d)
    _draw_education_marital_children(d)
    _draw_employment_income(d)
    household = _draw_household(d)
    _draw_political(d)
    _draw_religion(d)
    p0, a0 = _draw_initial(d)
    post = _draw_post(d, p0, a0)
    return _long_format(d, household, a0, post), _truth(d, seed, a0, post)


def write_population(
    out_dir: str | Path,
    n_subjects: int = 4045,
    seed: int = 0,
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``responses.csv`` and ``truth.json`` into ``out_dir``; return the CSV path.

    Raises :class:`FileExistsError` if ``out_dir/responses.csv`` already exists and
    ``overwrite`` is false (nothing is written then).
    """
    out = Path(out_dir)
    csv_path = out / "responses.csv"
    truth_path = out / "truth.json"
    if csv_path.exists() and not overwrite:
        raise FileExistsError(f"{csv_path} already exists; pass overwrite=True to replace it")
    df, truth = synthesize_population(n_subjects=n_subjects, seed=seed)
    from surveysim_core.files import atomic_write, atomic_write_text

    # each file whole or not at all; the data file last, so that its presence means both are
    atomic_write_text(truth_path, json.dumps(truth, indent=2, sort_keys=False) + "\n")
    atomic_write(csv_path, lambda tmp: df.to_csv(tmp, index=False, lineterminator="\n"))
    return csv_path
