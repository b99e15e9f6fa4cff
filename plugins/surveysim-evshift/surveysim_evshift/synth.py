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
Tables named below are stored in ``truth`` under the same names, keyed by the verbatim
option labels.

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
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

__all__ = ["load_questionnaire", "synthesize_population", "write_population"]

QUESTIONNAIRE_PATH = Path(__file__).resolve().parent / "questionnaire.yaml"

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

# ---------------------------------------------------------------------------
# Parameters (all exported into the truth dict)
# ---------------------------------------------------------------------------

NON_US = "I do not reside within the United States"

# 2020 census resident population, millions.
STATE_POPULATION = {
    "alabama": 5.02,
    "alaska": 0.73,
    "arizona": 7.15,
    "arkansas": 3.01,
    "california": 39.54,
    "colorado": 5.77,
    "connecticut": 3.61,
    "delaware": 0.99,
    "district of columbia": 0.69,
    "florida": 21.54,
    "georgia": 10.71,
    "hawaii": 1.46,
    "idaho": 1.84,
    "illinois": 12.81,
    "indiana": 6.79,
    "iowa": 3.19,
    "kansas": 2.94,
    "kentucky": 4.51,
    "louisiana": 4.66,
    "maine": 1.36,
    "maryland": 6.18,
    "massachusetts": 7.03,
    "michigan": 10.08,
    "minnesota": 5.71,
    "mississippi": 2.96,
    "missouri": 6.15,
    "montana": 1.08,
    "nebraska": 1.96,
    "nevada": 3.10,
    "new hampshire": 1.38,
    "new jersey": 9.29,
    "new mexico": 2.12,
    "new york": 20.20,
    "north carolina": 10.44,
    "north dakota": 0.78,
    "ohio": 11.80,
    "oklahoma": 3.96,
    "oregon": 4.24,
    "pennsylvania": 13.00,
    "rhode island": 1.10,
    "south carolina": 5.12,
    "south dakota": 0.89,
    "tennessee": 6.91,
    "texas": 29.15,
    "utah": 3.27,
    "vermont": 0.64,
    "virginia": 8.63,
    "washington": 7.71,
    "west virginia": 1.79,
    "wisconsin": 5.89,
    "wyoming": 0.58,
}
NON_US_SHARE = 0.005

# Approximate census urban share by state; used as P(Urban | state, answered).
URBAN_SHARE_BY_STATE = {
    "alabama": 0.58,
    "alaska": 0.64,
    "arizona": 0.89,
    "arkansas": 0.55,
    "california": 0.94,
    "colorado": 0.86,
    "connecticut": 0.86,
    "delaware": 0.83,
    "district of columbia": 1.00,
    "florida": 0.91,
    "georgia": 0.74,
    "hawaii": 0.86,
    "idaho": 0.69,
    "illinois": 0.87,
    "indiana": 0.71,
    "iowa": 0.63,
    "kansas": 0.71,
    "kentucky": 0.58,
    "louisiana": 0.71,
    "maine": 0.39,
    "maryland": 0.86,
    "massachusetts": 0.91,
    "michigan": 0.73,
    "minnesota": 0.71,
    "mississippi": 0.46,
    "missouri": 0.69,
    "montana": 0.53,
    "nebraska": 0.73,
    "nevada": 0.94,
    "new hampshire": 0.58,
    "new jersey": 0.94,
    "new mexico": 0.74,
    "new york": 0.87,
    "north carolina": 0.66,
    "north dakota": 0.61,
    "ohio": 0.77,
    "oklahoma": 0.64,
    "oregon": 0.80,
    "pennsylvania": 0.77,
    "rhode island": 0.91,
    "south carolina": 0.67,
    "south dakota": 0.57,
    "tennessee": 0.66,
    "texas": 0.83,
    "utah": 0.90,
    "vermont": 0.35,
    "virginia": 0.75,
    "washington": 0.83,
    "west virginia": 0.45,
    "wisconsin": 0.69,
    "wyoming": 0.64,
    NON_US: 0.80,
}
AREA_PNA = 0.015

AGE_MARGINAL = {
    "18-25": 0.14,
    "26-35": 0.19,
    "36-45": 0.18,
    "46-55": 0.16,
    "56-65": 0.17,
    "66 or older": 0.15,
    "Prefer not to answer": 0.01,
}

GENDER_MARGINAL = {
    "Woman": 0.51,
    "Man": 0.47,
    "Transgender": 0.005,
    "Non-conforming": 0.007,
    "A gender not listed here": 0.003,
    "Prefer not to answer": 0.005,
}

RACE_MARGINAL = {
    "Asian / Pacific Islander": 0.06,
    "Biracial": 0.02,
    "Black or African American": 0.12,
    "Hispanic or Latino": 0.14,
    "Middle Eastern or North African": 0.01,
    "Multiracial": 0.015,
    "Native American or American Indian": 0.01,
    "White": 0.60,
    "Other": 0.01,
    "Prefer not to answer": 0.015,
}

# Education by age band. Order of weights = questionnaire option order.
_EDU_YOUNG = [0.003, 0.007, 0.30, 0.34, 0.09, 0.20, 0.035, 0.005, 0.002, 0.018]
_EDU_MID = [0.004, 0.008, 0.23, 0.18, 0.10, 0.27, 0.14, 0.03, 0.022, 0.016]
_EDU_OLD = [0.01, 0.02, 0.31, 0.19, 0.09, 0.21, 0.10, 0.025, 0.02, 0.025]
EDUCATION_BY_AGE_BAND = {"18-25": _EDU_YOUNG, "26-65": _EDU_MID, "66 or older": _EDU_OLD}
AGE_BAND = {
    "18-25": "18-25",
    "26-35": "26-65",
    "36-45": "26-65",
    "46-55": "26-65",
    "56-65": "26-65",
    "66 or older": "66 or older",
    "Prefer not to answer": "26-65",
}

# Marital status by age: Married, Widowed, Divorced, Separated, Never married, Other, PNA.
MARITAL_BY_AGE = {
    "18-25": [0.10, 0.002, 0.005, 0.005, 0.83, 0.04, 0.013],
    "26-35": [0.45, 0.005, 0.05, 0.02, 0.43, 0.035, 0.01],
    "36-45": [0.58, 0.01, 0.12, 0.03, 0.23, 0.02, 0.01],
    "46-55": [0.60, 0.025, 0.16, 0.03, 0.16, 0.015, 0.01],
    "56-65": [0.60, 0.06, 0.18, 0.02, 0.12, 0.01, 0.01],
    "66 or older": [0.55, 0.22, 0.15, 0.01, 0.05, 0.01, 0.01],
    "Prefer not to answer": [0.40, 0.05, 0.10, 0.02, 0.25, 0.03, 0.15],
}
MARITAL_GROUP = {
    "Married": "ever_married",
    "Widowed": "ever_married",
    "Divorced": "ever_married",
    "Separated": "ever_married",
    "Never married": "never_married",
    "Other": "never_married",
    "Prefer not to answer": "prefer_not",
}
# Number of children ("0", "1", "2", "3 or more", "prefer not to answer").
CHILDREN_BY_AGE_MARITAL = {
    "18-25": {
        "ever_married": [0.50, 0.30, 0.14, 0.04, 0.02],
        "never_married": [0.88, 0.07, 0.03, 0.01, 0.01],
        "prefer_not": [0.70, 0.10, 0.05, 0.02, 0.13],
    },
    "26-35": {
        "ever_married": [0.25, 0.28, 0.30, 0.15, 0.02],
        "never_married": [0.68, 0.17, 0.09, 0.04, 0.02],
        "prefer_not": [0.45, 0.15, 0.15, 0.08, 0.17],
    },
    "36-45": {
        "ever_married": [0.14, 0.22, 0.37, 0.25, 0.02],
        "never_married": [0.55, 0.20, 0.14, 0.09, 0.02],
        "prefer_not": [0.30, 0.15, 0.20, 0.15, 0.20],
    },
    "46-55": {
        "ever_married": [0.13, 0.20, 0.38, 0.27, 0.02],
        "never_married": [0.58, 0.17, 0.14, 0.09, 0.02],
        "prefer_not": [0.30, 0.15, 0.20, 0.15, 0.20],
    },
    "56-65": {
        "ever_married": [0.12, 0.17, 0.38, 0.31, 0.02],
        "never_married": [0.62, 0.14, 0.13, 0.09, 0.02],
        "prefer_not": [0.30, 0.15, 0.20, 0.15, 0.20],
    },
    "66 or older": {
        "ever_married": [0.10, 0.15, 0.37, 0.36, 0.02],
        "never_married": [0.65, 0.12, 0.12, 0.09, 0.02],
        "prefer_not": [0.30, 0.15, 0.20, 0.15, 0.20],
    },
    "Prefer not to answer": {
        "ever_married": [0.20, 0.20, 0.30, 0.20, 0.10],
        "never_married": [0.60, 0.15, 0.10, 0.05, 0.10],
        "prefer_not": [0.20, 0.10, 0.10, 0.10, 0.50],
    },
}

# Employment by age (questionnaire option order):
# FT, PT, Unemp looking, Unemp not looking, Student, Retired, Homemaker, Self-employed,
# Unable to work, PNA.
EMPLOYMENT_BY_AGE = {
    "18-25": [0.30, 0.20, 0.08, 0.03, 0.28, 0.001, 0.03, 0.04, 0.02, 0.019],
    "26-35": [0.55, 0.12, 0.06, 0.02, 0.05, 0.003, 0.07, 0.08, 0.03, 0.017],
    "36-45": [0.58, 0.10, 0.05, 0.02, 0.02, 0.01, 0.08, 0.09, 0.035, 0.015],
    "46-55": [0.56, 0.09, 0.05, 0.02, 0.01, 0.04, 0.07, 0.10, 0.045, 0.015],
    "56-65": [0.40, 0.09, 0.04, 0.02, 0.005, 0.28, 0.05, 0.08, 0.05, 0.015],
    "66 or older": [0.08, 0.07, 0.01, 0.01, 0.002, 0.75, 0.03, 0.04, 0.02, 0.018],
    "Prefer not to answer": [0.40, 0.10, 0.05, 0.02, 0.05, 0.10, 0.05, 0.07, 0.03, 0.13],
}
HOMEMAKER_GENDER_FACTOR = {
    "Woman": 1.6,
    "Man": 0.35,
    "Transgender": 1.0,
    "Non-conforming": 1.0,
    "A gender not listed here": 1.0,
    "Prefer not to answer": 1.0,
}

INCOME_PNA = 0.03
INCOME_COEF = {
    "education": {
        "Less than 8th grade": -1.0,
        "8th grade": -0.9,
        "High School": -0.5,
        "Some college, no degree": -0.25,
        "Associate degree": -0.1,
        "Bachelor's degree": 0.4,
        "Master's degree": 0.7,
        "Professional degree": 1.0,
        "Doctorate degree": 0.9,
        "Prefer not to answer": 0.0,
    },
    "employment": {
        "Employed full time (40 or more hours per week)": 0.5,
        "Employed part time (up to 39 hours per week)": -0.3,
        "Unemployed and currently looking for work": -0.9,
        "Unemployed not currently looking for work": -0.8,
        "Student": -0.8,
        "Retired": -0.2,
        "Homemaker": 0.0,
        "Self-employed": 0.3,
        "Unable to work": -1.0,
        "Prefer not to answer": 0.0,
    },
    "age": {
        "18-25": -0.4,
        "26-35": 0.0,
        "36-45": 0.2,
        "46-55": 0.25,
        "56-65": 0.15,
        "66 or older": -0.1,
        "Prefer not to answer": 0.0,
    },
}
# Cut points between the five answered income brackets (ascending).
INCOME_CUTPOINTS = [-1.7, -0.5, 0.55, 1.6]

HOUSEHOLD = {
    "pna": 0.015,
    "spouse_by_marital": {
        "Married": 0.93,
        "Widowed": 0.0,
        "Divorced": 0.0,
        "Separated": 0.05,
        "Never married": 0.0,
        "Other": 0.35,
        "Prefer not to answer": 0.3,
    },
    "children_if_has_children_by_age": {
        "18-25": 0.90,
        "26-35": 0.92,
        "36-45": 0.88,
        "46-55": 0.65,
        "56-65": 0.30,
        "66 or older": 0.08,
        "Prefer not to answer": 0.5,
    },
    "children_if_no_children": 0.01,
    "children_if_children_pna": 0.4,
    "parents_by_age": {
        "18-25": 0.55,
        "26-35": 0.18,
        "36-45": 0.08,
        "46-55": 0.06,
        "56-65": 0.04,
        "66 or older": 0.01,
        "Prefer not to answer": 0.1,
    },
    "parents_if_married_factor": 0.3,
    "siblings_if_with_parents": 0.45,
    "siblings_otherwise": 0.03,
    "grandparents_by_age": {
        "18-25": 0.04,
        "26-35": 0.015,
        "36-45": 0.005,
        "46-55": 0.003,
        "56-65": 0.002,
        "66 or older": 0.001,
        "Prefer not to answer": 0.01,
    },
    "other_relatives": 0.05,
    "friends_if_not_married_by_age": {
        "18-25": 0.28,
        "26-35": 0.16,
        "36-45": 0.07,
        "46-55": 0.05,
        "56-65": 0.04,
        "66 or older": 0.03,
        "Prefer not to answer": 0.08,
    },
    "friends_if_married": 0.01,
}

POLITICAL_PNA = 0.04
POLITICAL_OTHER = 0.06
POLITICAL_COEF = {
    "age": {
        "18-25": -0.45,
        "26-35": -0.3,
        "36-45": -0.05,
        "46-55": 0.1,
        "56-65": 0.2,
        "66 or older": 0.3,
        "Prefer not to answer": 0.0,
    },
    "living_area": {"Urban": -0.2, "Rural": 0.45, "Prefer not to answer": 0.0},
    "highest_education": {
        "Less than 8th grade": 0.1,
        "8th grade": 0.1,
        "High School": 0.15,
        "Some college, no degree": 0.05,
        "Associate degree": 0.05,
        "Bachelor's degree": -0.1,
        "Master's degree": -0.3,
        "Professional degree": -0.2,
        "Doctorate degree": -0.4,
        "Prefer not to answer": 0.0,
    },
    "race": {
        "Asian / Pacific Islander": -0.3,
        "Biracial": -0.2,
        "Black or African American": -0.6,
        "Hispanic or Latino": -0.2,
        "Middle Eastern or North African": -0.1,
        "Multiracial": -0.2,
        "Native American or American Indian": 0.0,
        "White": 0.3,
        "Other": -0.1,
        "Prefer not to answer": 0.1,
    },
    "gender": {
        "Woman": -0.1,
        "Man": 0.1,
        "Transgender": -0.7,
        "Non-conforming": -0.7,
        "A gender not listed here": -0.5,
        "Prefer not to answer": 0.0,
    },
}
# Cut points: z below the first -> Strongly liberal, ... above the last -> Strongly
# conservative.
POLITICAL_CUTPOINTS = [-0.85, 0.0, 0.85]

# Religion by political group (questionnaire option order):
# Protestant, Catholic, Jewish, Buddhism, Hinduism, Islam, Orthodox-christian, Christian,
# Native American, Inter-nondenominational, Other (free text answer), None, Don't know,
# Prefer not to answer.
RELIGION_BY_POLITICAL_GROUP = {
    "liberal": [
        0.12,
        0.16,
        0.035,
        0.015,
        0.012,
        0.012,
        0.008,
        0.12,
        0.003,
        0.025,
        0.03,
        0.36,
        0.05,
        0.03,
    ],
    "conservative": [
        0.30,
        0.22,
        0.012,
        0.004,
        0.006,
        0.006,
        0.012,
        0.26,
        0.003,
        0.03,
        0.02,
        0.08,
        0.025,
        0.022,
    ],
    "other": [
        0.15,
        0.15,
        0.02,
        0.01,
        0.01,
        0.01,
        0.01,
        0.15,
        0.005,
        0.025,
        0.04,
        0.25,
        0.07,
        0.10,
    ],
}
# Participation (Never, <1/yr, Several/yr, Once/month, 2-3/month, Nearly every week,
# More than once per week, PNA) by religion group.
PARTICIPATION_BY_RELIGION_GROUP = {
    "none": [0.80, 0.10, 0.05, 0.01, 0.005, 0.005, 0.003, 0.027],
    "religious": [0.12, 0.14, 0.18, 0.10, 0.12, 0.20, 0.12, 0.02],
    "prefer_not": [0.20, 0.08, 0.08, 0.04, 0.04, 0.05, 0.03, 0.48],
}

INITIAL_COEF = {
    "intercept": 48.0,
    "political": {
        "Strongly liberal": 22.0,
        "Somewhat liberal": 10.0,
        "Somewhat conservative": -10.0,
        "Strongly conservative": -22.0,
        "Other": -2.0,
        "Prefer not to answer": -3.0,
    },
    "age": {
        "18-25": 8.0,
        "26-35": 6.0,
        "36-45": 2.0,
        "46-55": -2.0,
        "56-65": -5.0,
        "66 or older": -8.0,
        "Prefer not to answer": 0.0,
    },
    "living_area": {"Urban": 5.0, "Rural": -5.0, "Prefer not to answer": 0.0},
    "income": {
        "less than $10,000": -4.0,
        "$10,001 to $40,000": -2.0,
        "$40,001 to $80,000": 0.0,
        "$80,001 to $160,000": 3.0,
        "More than $160,000": 5.0,
        "Prefer not to answer": 0.0,
    },
    "highest_education": {
        "Less than 8th grade": -4.0,
        "8th grade": -4.0,
        "High School": -3.0,
        "Some college, no degree": -1.0,
        "Associate degree": -1.0,
        "Bachelor's degree": 2.0,
        "Master's degree": 3.0,
        "Professional degree": 3.0,
        "Doctorate degree": 4.0,
        "Prefer not to answer": 0.0,
    },
}
ATTITUDE_SD = 14.0
INITIAL_NOISE_SD = 7.0

INTERVENTION_BASE_EFFECT = {
    1: 3.0,
    2: 3.5,
    3: 2.5,
    4: 1.0,
    5: 4.0,
    6: 2.0,
    7: 4.5,
    8: 4.0,
    9: 3.0,
    10: 3.0,
    11: 5.0,
    12: 1.5,
    13: 2.5,
    14: 3.0,
    15: 2.0,
    16: 1.5,
    17: 1.0,
    18: 0.0,
    19: 1.0,
    20: 2.5,
    21: 2.0,
    22: 1.5,
    23: -1.0,
    24: 2.5,
    25: 1.0,
    26: 0.0,
    27: 1.0,
    28: 2.0,
    29: 3.0,
    30: 1.5,
    31: 3.5,
    32: 2.0,
    33: 0.5,
    34: 2.0,
    35: -0.5,
}
INTERVENTION_GROUPS = {
    "cost": [8, 10, 11, 12, 13, 14, 16, 19, 20],
    "environmental": [21, 22],
    "charging": [1, 2, 3, 4, 5, 6, 9],
}
SEGMENT_EFFECTS = {
    "cost_by_income": {
        "less than $10,000": 3.0,
        "$10,001 to $40,000": 2.0,
        "$40,001 to $80,000": 0.5,
        "$80,001 to $160,000": -0.5,
        "More than $160,000": -1.0,
        "Prefer not to answer": 0.0,
    },
    "environmental_by_political": {
        "Strongly liberal": 4.0,
        "Somewhat liberal": 2.0,
        "Somewhat conservative": -2.5,
        "Strongly conservative": -6.0,
        "Other": 0.0,
        "Prefer not to answer": 0.0,
    },
    "charging_by_living_area": {"Urban": -0.5, "Rural": 3.0, "Prefer not to answer": 0.0},
}
SUSCEPTIBILITY_LOG_SD = 0.5
SHIFT_NOISE_SD = 4.0

# P(k post answers); expectation 4.9979 ~ 20217 / 4045.
N_POST_DISTRIBUTION = {1: 0.0001, 2: 0.0001, 3: 0.0002, 4: 0.0010, 5: 0.9986}

ANSWER_STYLE = {
    "anchor_prob": 0.3,
    "anchor_window": 5.0,
    "fifty_prob": 0.35,
    "fifty_window": 8.0,
    "endpoint_prob": 0.5,
    "endpoint_window": 6.0,
    "round10_prob": 0.45,
    "round5_prob": 0.2,
}

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def load_questionnaire() -> dict:
    """Load the packaged ``questionnaire.yaml``."""
    with open(QUESTIONNAIRE_PATH, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _options(questionnaire: dict) -> dict[str, list[str]]:
    demo = questionnaire["demographics"]
    missing = [f for f in DEMOGRAPHIC_FIELDS if f not in demo]
    if missing:
        raise ValueError(f"questionnaire.yaml lacks demographic fields {missing}")
    return {f: [str(o) for o in demo[f]["options"]] for f in DEMOGRAPHIC_FIELDS}


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


# ---------------------------------------------------------------------------
# Generator
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
    opts = _options(q)
    statements = {int(k) for k in q["interventions"]}
    if statements != set(range(1, N_INTERVENTIONS + 1)):
        raise ValueError("questionnaire.yaml must list interventions 1..35")
    rng = np.random.default_rng(seed)
    idx: dict[str, np.ndarray] = {}

    def pos(field: str, label: str) -> int:
        return opts[field].index(label)

    # --- living_state ------------------------------------------------------
    states = opts["living_state"]
    state_w = np.array([STATE_POPULATION[s] if s != NON_US else 0.0 for s in states], dtype=float)
    state_w = state_w / state_w.sum() * (1.0 - NON_US_SHARE)
    state_w[states.index(NON_US)] = NON_US_SHARE
    idx["living_state"] = _draw_marginal(rng.random(n), state_w)

    # --- living_area -------------------------------------------------------
    urban_p = _table(URBAN_SHARE_BY_STATE, states, "urban_share_by_state")[idx["living_state"]]
    u1, u2 = rng.random(n), rng.random(n)
    area = np.where(u2 < urban_p, pos("living_area", "Urban"), pos("living_area", "Rural"))
    idx["living_area"] = np.where(u1 < AREA_PNA, pos("living_area", "Prefer not to answer"), area)

    # --- age, gender, race -------------------------------------------------
    for field, marg in (
        ("age", AGE_MARGINAL),
        ("gender", GENDER_MARGINAL),
        ("race", RACE_MARGINAL),
    ):
        idx[field] = _draw_marginal(rng.random(n), _table(marg, opts[field], field))
    ages = opts["age"]

    # --- education | age band ---------------------------------------------
    edu_tab = np.stack(
        [
            _weights(EDUCATION_BY_AGE_BAND[AGE_BAND[a]], opts["highest_education"], "education")
            for a in ages
        ]
    )
    idx["highest_education"] = _draw_rows(rng.random(n), edu_tab[idx["age"]])

    # --- marital | age -----------------------------------------------------
    mar_tab = np.stack(
        [_weights(MARITAL_BY_AGE[a], opts["marital_status"], "marital") for a in ages]
    )
    idx["marital_status"] = _draw_rows(rng.random(n), mar_tab[idx["age"]])
    mar_groups = ["ever_married", "never_married", "prefer_not"]
    mar_group_of = np.array([mar_groups.index(MARITAL_GROUP[m]) for m in opts["marital_status"]])
    mg = mar_group_of[idx["marital_status"]]

    # --- children | age, marital group --------------------------------------
    ch_tab = np.stack(
        [
            np.stack(
                [
                    _weights(CHILDREN_BY_AGE_MARITAL[a][g], opts["number_of_children"], "children")
                    for g in mar_groups
                ]
            )
            for a in ages
        ]
    )
    idx["number_of_children"] = _draw_rows(rng.random(n), ch_tab[idx["age"], mg])

    # --- employment | age, gender -----------------------------------------
    emp_opts = opts["employment_status"]
    emp_tab = np.stack([_weights(EMPLOYMENT_BY_AGE[a], emp_opts, "employment") for a in ages])
    hm_factor = _table(HOMEMAKER_GENDER_FACTOR, opts["gender"], "homemaker_gender_factor")
    emp_p = emp_tab[idx["age"]].copy()
    emp_p[:, emp_opts.index("Homemaker")] *= hm_factor[idx["gender"]]
    emp_p /= emp_p.sum(axis=1, keepdims=True)
    idx["employment_status"] = _draw_rows(rng.random(n), emp_p)

    # --- income: ordered probit on education, employment, age ----------------
    inc_opts = opts["income"]
    z_inc = (
        _table(INCOME_COEF["education"], opts["highest_education"], "income education")[
            idx["highest_education"]
        ]
        + _table(INCOME_COEF["employment"], emp_opts, "income employment")[idx["employment_status"]]
        + _table(INCOME_COEF["age"], ages, "income age")[idx["age"]]
        + rng.standard_normal(n)
    )
    bracket = np.searchsorted(np.asarray(INCOME_CUTPOINTS), z_inc, side="right")
    idx["income"] = np.where(
        rng.random(n) < INCOME_PNA, inc_opts.index("Prefer not to answer"), bracket
    )

    # --- household (multi-select) -------------------------------------------
    hh_opts = opts["household"]
    H = HOUSEHOLD
    age_i = idx["age"]
    ch_lbl = np.array(opts["number_of_children"])[idx["number_of_children"]]
    married = idx["marital_status"] == pos("marital_status", "Married")
    p_sp = _table(H["spouse_by_marital"], opts["marital_status"], "spouse")[idx["marital_status"]]
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
    u_hh = rng.random((n, 8))
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
    alone = ~sel.any(axis=1)
    sel[:, hh_opts.index("I live alone")] = alone
    pna = u_hh[:, 7] < H["pna"]
    sel[pna] = False
    sel[pna, hh_opts.index("Prefer not to answer")] = True
    hh_arr = np.array(hh_opts, dtype=object)
    # Distinct selection patterns are few; join once per pattern.
    codes = sel.astype(np.int64) @ (1 << np.arange(len(hh_opts), dtype=np.int64))
    uniq, inv = np.unique(codes, return_inverse=True)
    joined = np.array(
        ["|".join(hh_arr[[(c >> b) & 1 == 1 for b in range(len(hh_opts))]]) for c in uniq],
        dtype=object,
    )
    household = joined[inv.reshape(-1)]

    # --- political: ordered probit ------------------------------------------
    pol_opts = opts["political"]
    z_pol = rng.standard_normal(n)
    for field, coef in POLITICAL_COEF.items():
        z_pol = z_pol + _table(coef, opts[field], f"political {field}")[idx[field]]
    lean = np.searchsorted(np.asarray(POLITICAL_CUTPOINTS), z_pol, side="right")
    lean_pos = np.array(
        [
            pos("political", lbl)
            for lbl in (
                "Strongly liberal",
                "Somewhat liberal",
                "Somewhat conservative",
                "Strongly conservative",
            )
        ]
    )
    u_pol = rng.random(n)
    idx["political"] = np.where(
        u_pol < POLITICAL_PNA,
        pos("political", "Prefer not to answer"),
        np.where(
            u_pol < POLITICAL_PNA + POLITICAL_OTHER, pos("political", "Other"), lean_pos[lean]
        ),
    )

    # --- religion | political group; participation | religion group ---------
    rel_opts = opts["religion"]
    pol_groups = ["liberal", "conservative", "other"]
    pol_group_of = np.array(
        [0 if "liberal" in p else 1 if "conservative" in p else 2 for p in pol_opts]
    )
    rel_tab = np.stack(
        [_weights(RELIGION_BY_POLITICAL_GROUP[g], rel_opts, "religion") for g in pol_groups]
    )
    idx["religion"] = _draw_rows(rng.random(n), rel_tab[pol_group_of[idx["political"]]])
    rel_groups = ["none", "religious", "prefer_not"]
    rel_group_of = np.array(
        [
            0 if r in ("None", "Don't know") else 2 if r == "Prefer not to answer" else 1
            for r in rel_opts
        ]
    )
    part_tab = np.stack(
        [
            _weights(
                PARTICIPATION_BY_RELIGION_GROUP[g], opts["religious_participation"], "participation"
            )
            for g in rel_groups
        ]
    )
    idx["religious_participation"] = _draw_rows(
        rng.random(n), part_tab[rel_group_of[idx["religion"]]]
    )

    # --- initial preference -------------------------------------------------
    coef_fields = ("political", "age", "living_area", "income", "highest_education")
    structural0 = np.full(n, INITIAL_COEF["intercept"])
    for field in coef_fields:
        structural0 = (
            structural0 + _table(INITIAL_COEF[field], opts[field], f"initial {field}")[idx[field]]
        )
    attitude = rng.normal(0.0, ATTITUDE_SD, n)
    noise0 = rng.normal(0.0, INITIAL_NOISE_SD, n)
    p0 = np.clip(structural0 + attitude + noise0, 0.0, 100.0)
    style = ANSWER_STYLE
    a0 = _heap(p0, rng.random(n), rng.random(n), rng.random(n), style)

    # --- post-intervention answers -----------------------------------------
    k_vals = np.array(sorted(N_POST_DISTRIBUTION), dtype=np.int64)
    k_probs = np.array([N_POST_DISTRIBUTION[k] for k in sorted(N_POST_DISTRIBUTION)])
    n_post = k_vals[_draw_marginal(rng.random(n), k_probs)]
    order = np.argsort(rng.random((n, N_INTERVENTIONS)), axis=1, kind="stable")[:, :MAX_POST]
    stmt = order + 1  # statement ids, (n, MAX_POST)
    log_sd = SUSCEPTIBILITY_LOG_SD
    suscept = np.exp(rng.normal(-0.5 * log_sd**2, log_sd, n))
    shift_noise = rng.normal(0.0, SHIFT_NOISE_SD, (n, MAX_POST))
    u_anchor = rng.random((n, MAX_POST))
    u_fifty = rng.random((n, MAX_POST))
    u_end = rng.random((n, MAX_POST))
    u_round = rng.random((n, MAX_POST))

    base = np.array([INTERVENTION_BASE_EFFECT[j] for j in range(1, N_INTERVENTIONS + 1)])
    is_cost = np.zeros(N_INTERVENTIONS + 1, dtype=bool)
    is_env = np.zeros(N_INTERVENTIONS + 1, dtype=bool)
    is_charge = np.zeros(N_INTERVENTIONS + 1, dtype=bool)
    is_cost[INTERVENTION_GROUPS["cost"]] = True
    is_env[INTERVENTION_GROUPS["environmental"]] = True
    is_charge[INTERVENTION_GROUPS["charging"]] = True
    g_cost = _table(SEGMENT_EFFECTS["cost_by_income"], inc_opts, "cost_by_income")[idx["income"]]
    g_env = _table(SEGMENT_EFFECTS["environmental_by_political"], pol_opts, "env_by_political")[
        idx["political"]
    ]
    g_charge = _table(
        SEGMENT_EFFECTS["charging_by_living_area"], opts["living_area"], "charging_by_area"
    )[idx["living_area"]]

    def structural_shift(j: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """s_i * (base[j] + segment terms) for statement ids j and subject rows."""
        eff = (
            base[j - 1]
            + is_cost[j] * g_cost[rows]
            + is_env[j] * g_env[rows]
            + is_charge[j] * g_charge[rows]
        )
        return suscept[rows] * eff

    rows_all = np.arange(n)
    struct = np.stack([structural_shift(stmt[:, t], rows_all) for t in range(MAX_POST)], axis=1)
    p_post = np.empty((n, MAX_POST))
    a_post = np.empty((n, MAX_POST), dtype=np.int64)
    p_prev, a_prev = p0, a0
    w_anchor = style["anchor_window"]
    for t in range(MAX_POST):
        p_t = np.clip(p_prev + struct[:, t] + shift_noise[:, t], 0.0, 100.0)
        a_t = _heap(p_t, u_fifty[:, t], u_end[:, t], u_round[:, t], style)
        anchored = (np.abs(p_t - a_prev) <= w_anchor) & (u_anchor[:, t] < style["anchor_prob"])
        a_t = np.where(anchored, a_prev, a_t)
        p_post[:, t], a_post[:, t] = p_t, a_t
        p_prev, a_prev = p_t, a_t

    # --- long format ----------------------------------------------------------
    width = max(4, len(str(n)))
    subject_ids = np.array([f"s{i:0{width}d}" for i in range(1, n + 1)], dtype=object)
    rows_per = 1 + n_post
    subj_row = np.repeat(rows_all, rows_per)
    starts = np.concatenate([[0], np.cumsum(rows_per)[:-1]])
    seq = np.arange(subj_row.size) - np.repeat(starts, rows_per)
    is_post = seq > 0
    t_idx = np.maximum(seq - 1, 0)
    answer = np.where(is_post, a_post[subj_row, t_idx], a0[subj_row])
    interv = np.where(is_post, stmt[subj_row, t_idx], 0)

    data: dict[str, Any] = {"subject_id": subject_ids[subj_row]}
    for field in DEMOGRAPHIC_FIELDS:
        if field == "household":
            data[field] = household[subj_row]
        else:
            data[field] = np.array(opts[field], dtype=object)[idx[field]][subj_row]
    data["question"] = np.where(is_post, "post_intervention_preference", "initial_preference")
    data["intervention"] = pd.arrays.IntegerArray(interv.astype(np.int64), ~is_post)
    df = pd.DataFrame(data)
    df["seq"] = seq.astype(np.int64)
    df["answer"] = answer.astype(np.int64)

    # --- derived truth quantities ---------------------------------------------
    valid = np.arange(MAX_POST)[None, :] < n_post[:, None]
    prev_a = np.concatenate([a0[:, None], a_post[:, :-1]], axis=1)
    d_answer = (a_post - prev_a).astype(float)
    expected_shift: dict[str, float | None] = {}
    realised_shift: dict[str, float | None] = {}
    population_shift: dict[str, float] = {}
    n_by_stmt: dict[str, int] = {}
    for j in range(1, N_INTERVENTIONS + 1):
        m = valid & (stmt == j)
        cnt = int(m.sum())
        n_by_stmt[str(j)] = cnt
        expected_shift[str(j)] = _r(struct[m].mean()) if cnt else None
        realised_shift[str(j)] = _r(d_answer[m].mean()) if cnt else None
        population_shift[str(j)] = _r(structural_shift(np.full(n, j), rows_all).mean())

    def mean_or_none(x: np.ndarray) -> float | None:
        return _r(x.mean()) if x.size else None

    initial_by_pol = {p: mean_or_none(a0[idx["political"] == i]) for i, p in enumerate(pol_opts)}

    def group_shift(stmts: list[int], field: str) -> dict[str, float | None]:
        in_group = valid & np.isin(stmt, stmts)
        seg = np.broadcast_to(idx[field][:, None], stmt.shape)
        return {
            lbl: mean_or_none(d_answer[in_group & (seg == i)]) for i, lbl in enumerate(opts[field])
        }

    truth: dict[str, Any] = {
        "description": (
            "Ground truth of the seeded synthetic EV-shift population; see the docstring "
            "of surveysim_evshift.synth for the equations."
        ),
        "generator": "surveysim_evshift.synth.synthesize_population",
        "seed": seed,
        "n_subjects": n,
        "n_post_answers": int(valid.sum()),
        "demographic_fields": list(DEMOGRAPHIC_FIELDS),
        "state_weights": _labelled(states, state_w),
        "state_population_millions": dict(STATE_POPULATION),
        "non_us_share": NON_US_SHARE,
        "urban_share_by_state": dict(URBAN_SHARE_BY_STATE),
        "area_pna": AREA_PNA,
        "age_marginal": dict(AGE_MARGINAL),
        "gender_marginal": dict(GENDER_MARGINAL),
        "race_marginal": dict(RACE_MARGINAL),
        "age_band": dict(AGE_BAND),
        "education_by_age": {
            band: _labelled(
                opts["highest_education"], _weights(w, opts["highest_education"], "education")
            )
            for band, w in EDUCATION_BY_AGE_BAND.items()
        },
        "marital_by_age": {
            a: _labelled(opts["marital_status"], mar_tab[i]) for i, a in enumerate(ages)
        },
        "marital_group": dict(MARITAL_GROUP),
        "children_by_age_marital": {
            a: {
                g: _labelled(opts["number_of_children"], ch_tab[i, gi])
                for gi, g in enumerate(mar_groups)
            }
            for i, a in enumerate(ages)
        },
        "employment_by_age": {a: _labelled(emp_opts, emp_tab[i]) for i, a in enumerate(ages)},
        "homemaker_gender_factor": dict(HOMEMAKER_GENDER_FACTOR),
        "income_pna": INCOME_PNA,
        "income_coef": {k: dict(v) for k, v in INCOME_COEF.items()},
        "income_cutpoints": list(INCOME_CUTPOINTS),
        "household": {k: (dict(v) if isinstance(v, dict) else v) for k, v in HOUSEHOLD.items()},
        "political_pna": POLITICAL_PNA,
        "political_other": POLITICAL_OTHER,
        "political_coef": {k: dict(v) for k, v in POLITICAL_COEF.items()},
        "political_cutpoints": list(POLITICAL_CUTPOINTS),
        "religion_by_political_group": {
            g: _labelled(rel_opts, rel_tab[i]) for i, g in enumerate(pol_groups)
        },
        "participation_by_religion_group": {
            g: _labelled(opts["religious_participation"], part_tab[i])
            for i, g in enumerate(rel_groups)
        },
        "initial_coef": {
            k: (dict(v) if isinstance(v, dict) else v) for k, v in INITIAL_COEF.items()
        },
        "attitude_sd": ATTITUDE_SD,
        "initial_noise_sd": INITIAL_NOISE_SD,
        "intervention_base_effect": {str(j): v for j, v in INTERVENTION_BASE_EFFECT.items()},
        "intervention_groups": {k: list(v) for k, v in INTERVENTION_GROUPS.items()},
        "segment_effects": {k: dict(v) for k, v in SEGMENT_EFFECTS.items()},
        "susceptibility_log_sd": SUSCEPTIBILITY_LOG_SD,
        "shift_noise_sd": SHIFT_NOISE_SD,
        "n_post_distribution": {str(k): v for k, v in N_POST_DISTRIBUTION.items()},
        "answer_style": dict(ANSWER_STYLE),
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
        "initial_mean_by_political": initial_by_pol,
        "realised_mean_shift_by_group_segment": {
            "cost_by_income": group_shift(INTERVENTION_GROUPS["cost"], "income"),
            "environmental_by_political": group_shift(
                INTERVENTION_GROUPS["environmental"], "political"
            ),
            "charging_by_living_area": group_shift(INTERVENTION_GROUPS["charging"], "living_area"),
        },
    }
    # Normalise to plain JSON types (str keys, lists, Python floats) so that the dict
    # equals what json.load gives back from truth.json.
    truth = json.loads(json.dumps(truth))
    return df, truth


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
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(csv_path, index=False, lineterminator="\n")
    truth_path.write_text(json.dumps(truth, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return csv_path
