"""Option order: fixed, reversed, seeded per-respondent orders, the prompts that show them,
answers mapped back to the option, and position_share / position_bias (checked by hand)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from surveysim_std.answer_types import CategoricalAnswer, CategoricalOptions

from surveysim_core.config import RunConfig
from surveysim_core.option_order import display_order, position_rows
from surveysim_core.protocols import Progress
from surveysim_core.run import execute, parse_with, plan_run, render_prompts

AB = CategoricalAnswer(CategoricalOptions(options=["a", "b"]))
ABC = CategoricalAnswer(CategoricalOptions(options=["a", "b", "c"]))


def test_orders():
    assert display_order("fixed", 3, "s1", "q", 0) == (0, 1, 2)
    assert display_order("reversed", 3, "s1", "q", 0) == (2, 1, 0)
    shuffled = [display_order("shuffled", 4, f"s{i}", "q", 0) for i in range(30)]
    assert all(sorted(o) == [0, 1, 2, 3] for o in shuffled)
    assert len(set(shuffled)) > 5  # per respondent, not one order for all
    assert shuffled == [display_order("shuffled", 4, f"s{i}", "q", 0) for i in range(30)]  # seeded
    assert shuffled != [display_order("shuffled", 4, f"s{i}", "q", 1) for i in range(30)]
    both = {display_order("forward_reversed", 3, f"s{i}", "q", 0) for i in range(30)}
    assert both == {(0, 1, 2), (2, 1, 0)}


def rows_of(mode, subjects, probs, answer):
    items = pd.DataFrame({"subject_id": subjects, "question": "q"})
    rows = position_rows("sys", "", None, items, np.asarray(probs, float), {"q": answer}, mode, 0)
    return {r["metric"]: r["value"] for r in rows}


def test_position_shares_by_hand():
    # reversed: shown c, b, a. Item 1 puts .2 on c (position 1), .3 on b, .5 on a; item 2 all on a
    values = rows_of("reversed", ["s1", "s2"], [[0.5, 0.3, 0.2], [1, 0, 0]], ABC)
    assert values == pytest.approx(
        {"position_share_1": 0.1, "position_share_2": 0.15, "position_share_3": 0.75}
    )
    assert "position_bias" not in values  # one order: no comparison


def test_position_bias_shuffled_by_hand():
    # all mass on one option, wherever it is shown: shares (1, 0, 0) in some order;
    # half the L1 distance to (1/3, 1/3, 1/3) is (2/3 + 1/3 + 1/3) / 2 = 2/3
    values = rows_of("shuffled", ["s1"], [[1, 0, 0]], ABC)
    assert values["position_bias"] == pytest.approx(2 / 3)


def test_position_bias_forward_reversed_by_hand():
    forward = next(
        f"s{i}"
        for i in range(100)
        if display_order("forward_reversed", 2, f"s{i}", "q", 0) == (0, 1)
    )
    reverse = next(
        f"s{i}"
        for i in range(100)
        if display_order("forward_reversed", 2, f"s{i}", "q", 0) == (1, 0)
    )
    # forward item (a, b) = (.6, .4); reversed item (a, b) = (.2, .8), shown b first
    values = rows_of("forward_reversed", [forward, reverse], [[0.6, 0.4], [0.2, 0.8]], AB)
    assert values["position_bias"] == pytest.approx(0.5 * (0.4 + 0.4))
    # position 1 holds a (.6) for the first item and b (.8) for the second
    assert values["position_share_1"] == pytest.approx((0.6 + 0.8) / 2)
    assert values["position_share_2"] == pytest.approx((0.4 + 0.2) / 2)


SURVEY = """\
name: commute
demographics:
  region: {options: [North, South]}
questions:
  - id: mode
    answer: {type: categorical, options: [car, bus, bike]}
    template: listed
  - id: minutes
    answer: {type: integer, min: 0, max: 9}
    template: listed
templates:
  listed: "{{ options | join(', ') }}"
parsers: [choice, first_integer]
"""


def commute(tmp_path, order, **changes):
    (tmp_path / "survey.yaml").write_text(SURVEY, encoding="utf-8")
    rows = []
    for i in range(40):
        rows.append({"subject_id": f"s{i}", "region": ["North", "South"][i % 2], "question": "mode",
                     "answer": ["car", "bus", "bike"][i % 3]})  # fmt: skip
        rows.append({"subject_id": f"s{i}", "region": ["North", "South"][i % 2], "question": "minutes",
                     "answer": i % 10})  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "answers.csv", index=False)
    return RunConfig.model_validate(
        {"survey": str(tmp_path / "survey.yaml"), "data": {"source": "file", "path": str(tmp_path / "answers.csv")},
         "decoding": {"option_order": order}, "baselines": [{"name": "marginal"}],
         "evaluation": {"bootstrap": 5}, "output": {"dir": str(tmp_path / "runs")}, **changes}
    )  # fmt: skip


def test_prompts_show_the_order_and_answers_map_back(tmp_path, plugins):
    plan = plan_run(commute(tmp_path, "reversed"), "run.yaml", plugins)
    items = pd.DataFrame({"subject_id": ["s1", "s1"], "question": ["mode", "minutes"], "seq": 0})
    respondents = pd.DataFrame({"region": ["North"]}, index=pd.Index(["s1"], name="subject_id"))
    prompts = render_prompts(plan, items, respondents)
    assert prompts[0].user == "bike, bus, car"
    assert prompts[1].user == "0, 1, 2, 3, 4, 5, 6, 7, 8, 9"  # an integer scale keeps its order
    # the answer is the option's label, whatever position it was shown at: bus is option 1
    assert parse_with(plan, "mode")("bus") == 1.0

    plan = plan_run(commute(tmp_path, "shuffled"), "run.yaml", plugins)
    many = pd.DataFrame({"subject_id": [f"s{i}" for i in range(12)], "question": "mode", "seq": 0})
    people = pd.DataFrame({"region": ["North"] * 12}, index=pd.Index([f"s{i}" for i in range(12)]))
    shown = [p.user for p in render_prompts(plan, many, people)]
    expected = [
        ", ".join(
            ["car", "bus", "bike"][j] for j in display_order("shuffled", 3, f"s{i}", "mode", 0)
        )
        for i in range(12)
    ]
    assert shown == expected and len(set(shown)) > 1


def test_a_run_reports_position_rows_for_categorical_questions(tmp_path, plugins):
    run = execute(
        commute(tmp_path, "forward_reversed"),
        "run.yaml",
        plugins,
        run_dir=str(tmp_path / "r"),
        progress=Progress(lambda m: None),
    )
    metrics = pd.read_csv(run.dir / "metrics.csv")
    mine = metrics[(metrics["system"] == "marginal") & (metrics["question"] == "mode")]
    shares = mine[mine["metric"].str.startswith("position_share_")]["value"]
    assert len(shares) == 3 and shares.sum() == pytest.approx(1.0)
    assert len(mine[mine["metric"] == "position_bias"]) == 1
    assert (
        metrics.loc[metrics["question"] == "minutes", "metric"].str.startswith("position").sum()
        == 0
    )


def test_a_questions_own_order_overrides_the_runs(tmp_path, plugins):
    config = commute(tmp_path, "fixed")
    text = (tmp_path / "survey.yaml").read_text(encoding="utf-8")
    (tmp_path / "survey.yaml").write_text(
        text.replace(
            "    template: listed\n", "    template: listed\n    option_order: reversed\n", 1
        ),
        encoding="utf-8",
    )
    plan = plan_run(config, "run.yaml", plugins)
    items = pd.DataFrame({"subject_id": ["s1"], "question": ["mode"], "seq": 0})
    respondents = pd.DataFrame({"region": ["North"]}, index=pd.Index(["s1"], name="subject_id"))
    assert render_prompts(plan, items, respondents)[0].user == "bike, bus, car"
    run = execute(
        config, "run.yaml", plugins, run_dir=str(tmp_path / "r"), progress=Progress(lambda m: None)
    )
    metrics = pd.read_csv(run.dir / "metrics.csv")
    # reversed: position 1 shows bike, so its share is the marginal baseline's share of bike
    preds = pd.read_csv(run.dir / "systems" / "marginal" / "predictions.csv")
    bike = (preds.loc[preds["question"] == "mode", "answer"] == 2).mean()
    share = metrics[(metrics["system"] == "marginal") & (metrics["metric"] == "position_share_1")]
    assert share["value"].iloc[0] == pytest.approx(bike)
