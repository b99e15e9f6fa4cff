"""Populations, ``surveysim simulate`` and ``surveysim pilot``, checked against hand-worked values.

A fake backend answers from known distributions chosen by the persona's region and age and the
statement shown, so every shift, share and rank below is worked out by hand in the comments.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import BaseModel, ConfigDict

from surveysim_core import hookimpl
from surveysim_core.errors import ConfigError, DataError
from surveysim_core.protocols import Backend, Progress
from surveysim_core.survey import Survey, SurveySpec

pytest.importorskip("pyarrow")

from surveysim_pilot import population as pop
from surveysim_pilot.config import PilotConfig, SimulateConfig
from surveysim_pilot.pilot import pilot, rise_probability
from surveysim_pilot.simulate import simulate

TOWN_SPEC = {
    "name": "town",
    "demographics": {
        "region": {"options": ["North", "South"]},
        "age": {"options": ["young", "old"]},
        "pets": {"options": ["cat", "dog", "none"], "multi": True},
    },
    "questions": [
        {"id": "pre", "text": "How much do you like the town, 1 to 5?",
         "answer": {"type": "integer", "min": 1, "max": 5}},
        {"id": "post", "text": "How much do you like the town, 1 to 5?",
         "answer": {"type": "integer", "min": 1, "max": 5}, "context": ["statement"]},
    ],
    "context_values": {"statement": {"1": "The town has a new park."}},
}  # fmt: skip


def synthesize_town(out_dir: Path, subjects: int | None, seed: int) -> Path:
    """Four respondents, one of each region x age, answering ``pre`` only."""
    rows = [
        ("r1", "North", "young", "cat"), ("r2", "North", "old", "dog"),
        ("r3", "South", "young", "none"), ("r4", "South", "old", "cat|dog"),
    ]  # fmt: skip
    table = pd.DataFrame(rows, columns=["subject_id", "region", "age", "pets"])
    table["question"], table["answer"] = "pre", 3
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    path = Path(out_dir) / "responses.csv"
    table.to_csv(path, index=False)
    return path


def dist(**probs: float) -> np.ndarray:
    row = np.zeros(5)
    for answer, p in probs.items():
        row[int(answer[1:]) - 1] = p
    return row


class FakeModel:
    """Known answer distributions over 1..5.

    pre: North -> 3 for sure; South -> 2 or 4 (0.5 each).
    statement A ("Free buses."): North -> 4; South young -> 2; South old -> as pre.
    statement B ("Lower taxes."): everyone -> 5.
    survey statement 1 (the park): everyone as pre.
    """

    def __init__(self):
        self.calls = 0

    def answer_distribution(self, prompts, answers, temperatures):
        assert list(answers) == ["1", "2", "3", "4", "5"]
        self.calls += 1
        rows = []
        for p in prompts:
            north, young = "region: North" in p.system, "age: young" in p.system
            pre = dist(a3=1.0) if north else dist(a2=0.5, a4=0.5)
            if "Free buses." in p.user:
                rows.append(dist(a4=1.0) if north else (dist(a2=1.0) if young else pre))
            elif "Lower taxes." in p.user:
                rows.append(dist(a5=1.0))
            else:
                rows.append(pre)
        return {t: np.array(rows) for t in temperatures}


class FakeBackend(Backend):
    loaded: ClassVar[list] = []

    def load(self, adapter):
        FakeBackend.loaded.append(adapter)
        return FakeModel()


class TownPlugin:
    @hookimpl
    def register_surveys(self, register):
        register(
            "town",
            Survey(SurveySpec.model_validate(TOWN_SPEC), "<town>", synthesize=synthesize_town),
        )

    @hookimpl
    def register_backends(self, register):
        register("fake", FakeBackend)


@pytest.fixture
def town(plugins):
    plugins.register(TownPlugin(), "town-plugin")
    yield plugins
    plugins.unregister("town-plugin")


@pytest.fixture
def personas_csv(tmp_path) -> Path:
    path = tmp_path / "personas.csv"
    pd.DataFrame(
        {
            "region": ["North", "North", "South", "South"],
            "age": ["young", "old", "young", "old"],
            "pets": ["cat", "dog", "none", "cat|dog"],
            "weight": [0.4, 0.1, 0.2, 0.3],
        }
    ).to_csv(path, index=False)
    return path


def pilot_config(tmp_path, personas_csv, **changes) -> dict:
    config = {
        "survey": "town",
        "system": {"backend": {"name": "fake"}, "kind": "zero_shot"},
        "population": {"source": "table", "path": str(personas_csv)},
        "pre_question": "pre",
        "statements": {
            "question": "post",
            "new": [
                {"id": "A", "text": "Free buses.", "group": "transport"},
                {"id": "B", "text": "Lower taxes.", "group": "cost"},
            ],
        },
        "segments": ["region"],
        "bootstrap": 50,
        "output": str(tmp_path / "out"),
    }
    config.update(changes)
    return config


# -- raking ----------------------------------------------------------------------------------
def test_rake_2x2_matches_the_hand_solution():
    # reference counts: (A,a)=40 (A,b)=10 (B,a)=20 (B,b)=30; targets A=B=0.5, a=0.4, b=0.6.
    # Raking keeps the odds ratio 40*30/(10*20) = 6. With x = share of (A,a) the cells are
    # x, 0.5-x, 0.4-x, 0.1+x and x(0.1+x) = 6(0.5-x)(0.4-x) gives 5x^2 - 5.5x + 1.2 = 0, so
    # x = 0.3: cells 0.3, 0.2, 0.1, 0.4.
    cells = [("A", "a", 40), ("A", "b", 10), ("B", "a", 20), ("B", "b", 30)]
    reference = pd.DataFrame(
        [(f, g) for f, g, count in cells for _ in range(count)], columns=["f", "g"]
    )
    weights = pop.rake(reference, {"f": {"A": 0.5, "B": 0.5}, "g": {"a": 0.4, "b": 0.6}})
    shares = pd.Series(weights).groupby([reference["f"], reference["g"]]).sum()
    assert shares[("A", "a")] == pytest.approx(0.3, abs=1e-8)
    assert shares[("A", "b")] == pytest.approx(0.2, abs=1e-8)
    assert shares[("B", "a")] == pytest.approx(0.1, abs=1e-8)
    assert shares[("B", "b")] == pytest.approx(0.4, abs=1e-8)
    # within a cell every respondent keeps the same weight: 0.3 / 40
    assert weights[0] == pytest.approx(0.3 / 40)


def test_rake_unreachable_option_is_named():
    reference = pd.DataFrame({"f": ["A", "A"], "g": ["a", "b"]})
    with pytest.raises(DataError, match=r"margins\.f: option 'B'"):
        pop.rake(reference, {"f": {"A": 0.5, "B": 0.5}})


def test_margins_population_from_survey_respondents(town, tmp_path):
    from surveysim_pilot.simulate import prepare

    # the 4 respondents are one per region x age; raking region to 0.8/0.2 with age at 0.5/0.5
    # scales North rows to 0.4 each and South rows to 0.1 each (the table is independent)
    config = SimulateConfig.model_validate(
        {
            "survey": "town",
            "system": {"backend": {"name": "fake"}, "kind": "zero_shot"},
            "population": {
                "source": "margins",
                "margins": {
                    "region": {"North": 0.8, "South": 0.2},
                    "age": {"young": 0.5, "old": 0.5},
                },
            },
            "questions": ["pre"],
            "output": str(tmp_path / "out"),
        }
    )
    prepared = prepare(config, "cfg.yaml", town)
    table = prepared.population.table()
    north = table[table["region"] == "North"]["weight"]
    assert list(north) == pytest.approx([0.4, 0.4])
    assert table[table["region"] == "South"]["weight"].sum() == pytest.approx(0.2)
    assert not (tmp_path / "out").exists()


def test_cross_table_post_stratifies_the_reference(town, tmp_path):
    cells = pd.DataFrame({"region": ["North", "South"], "share": [0.25, 0.75]})
    reference = pop.check_demographics(
        pd.DataFrame({"region": ["North", "North", "South"], "age": ["young", "old", "old"],
                      "pets": ["cat", "dog", "none"]}),
        TownSpec(), "ref",
    )  # fmt: skip
    population = pop.from_cross_table(cells, TownSpec(), "cells.csv", reference)
    # North's 0.25 split evenly between its two reference rows; South's one row gets 0.75
    assert list(population.weights) == pytest.approx([0.125, 0.125, 0.75])
    assert population.personas["pets"].iloc[2] == ("none",)


def test_cross_table_naming_every_field_gives_one_persona_per_cell():
    cells = pd.DataFrame(
        {"region": ["North", "South", "South"], "age": ["old", "young", "old"],
         "pets": ["cat", "none", "cat|dog"], "share": [0.5, 0.5, 0.0]}
    )  # fmt: skip
    population = pop.from_cross_table(cells, TownSpec(), "cells.csv")
    # the zero-share cell is dropped; the other two are personas with their shares
    assert list(population.personas["age"]) == ["old", "young"]
    assert list(population.weights) == pytest.approx([0.5, 0.5])
    bad = cells.assign(share=[0.5, 0.4, 0.0])
    with pytest.raises(DataError, match=r"cells\.csv: column share: shares sum to 0\.9"):
        pop.from_cross_table(bad, TownSpec(), "cells.csv")


def TownSpec() -> SurveySpec:
    return SurveySpec.model_validate(TOWN_SPEC)


def test_registered_samplers_are_reachable(town, tmp_path):
    from surveysim_pilot.simulate import prepare

    run = _run_dir(tmp_path)
    pd.DataFrame(
        {"subject_id": ["r1", "r2", "r3", "r4"], "split": ["train", "train", "test", "test"]}
    ).to_csv(run / "splits.csv", index=False)
    base = {
        "survey": "town",
        "system": {"run": str(run), "kind": "zero_shot"},
        "questions": ["pre"],
        "output": str(tmp_path / "out"),
    }
    # test_split: the run's test respondents r3 and r4 (both South)
    cfg = {**base, "population": {"source": "sampler", "sampler": {"name": "test_split"}}}
    prepared = prepare(SimulateConfig.model_validate(cfg), "cfg.yaml", town)
    assert list(prepared.population.personas["region"]) == ["South", "South"]
    assert list(prepared.population.personas["age"]) == ["young", "old"]
    # marginals: region fixed to North; age from the training split (r1 young, r2 old)
    cfg["population"] = {
        "source": "sampler",
        "sampler": {
            "name": "marginals",
            "options": {"n": 40, "marginals": {"region": {"North": 1.0}}},
        },
    }
    prepared = prepare(SimulateConfig.model_validate(cfg), "cfg.yaml", town)
    assert len(prepared.population) == 40
    assert set(prepared.population.personas["region"]) == {"North"}
    assert set(prepared.population.personas["age"]) == {"young", "old"}
    cfg["population"]["sampler"]["options"]["nn"] = 3
    with pytest.raises(
        ConfigError, match=r"cfg\.yaml: population\.sampler\.options\.nn: unknown key"
    ):
        prepare(SimulateConfig.model_validate(cfg), "cfg.yaml", town)


def test_population_draw_is_seeded():
    table = pd.DataFrame({"region": ["North", "South"] * 50})
    a = pop.from_table(table, "t", n=30, seed=1)
    b = pop.from_table(table, "t", n=30, seed=1)
    c = pop.from_table(table, "t", n=30, seed=2)
    assert list(a.personas["region"]) == list(b.personas["region"])
    assert list(a.personas["region"]) != list(c.personas["region"])
    assert a.weights == pytest.approx(np.full(30, 1 / 30))


# -- statistics ----------------------------------------------------------------------------------
def test_rise_probability_hand_example():
    # pre 1 or 2 (0.5 each), post 2 or 3 (0.5 each) over answers 1,2,3:
    # pre 1 -> post > 1 surely (0.5); pre 2 -> post 3 with 0.5 (0.25); total 0.75
    pre = np.array([[0.5, 0.5, 0.0]])
    post = np.array([[0.0, 0.5, 0.5]])
    assert rise_probability(pre, post)[0] == pytest.approx(0.75)


def test_bootstrap_interval_matches_the_normal_approximation():
    # 400 equally weighted personas, half 1 and half 0: the mean's standard error is
    # sqrt(0.25 / 400) = 0.025, so the 95% interval is about 0.5 +- 0.049
    from surveysim_core.scoring import bootstrap_intervals, resample_counts, weighted_mean_draws

    values = np.repeat([1.0, 0.0], 200)
    ids = np.array([f"p{i:05d}" for i in range(400)])
    est, boot = weighted_mean_draws(values, np.full(400, 1 / 400), resample_counts(ids, 2000, 0))
    lo, hi = bootstrap_intervals(est, boot)
    assert est == pytest.approx(0.5)
    assert lo == pytest.approx(0.451, abs=0.01)
    assert hi == pytest.approx(0.549, abs=0.01)


def test_pilot_intervals_are_the_cores_recentred_bootstrap(town, tmp_path, personas_csv):
    """The pilot's CI of a shift is the core's: the same resamples of personas as every run
    (``respondent_resamples``), and the percentile interval re-centred on the estimate,
    recomputed here with an explicit loop."""
    from surveysim_core.scoring import respondent_resamples

    config = PilotConfig.model_validate(pilot_config(tmp_path, personas_csv, bootstrap=40))
    out = pilot(config, "cfg.yaml", town)
    row = pd.read_csv(out / "shifts.csv", keep_default_na=False).set_index(
        ["statement", "segment", "value"]
    )
    # statement A per persona (p00000..p00003: North young, North old, South young, South
    # old): shifts +1, +1, -1, 0 with weights 0.4, 0.1, 0.2, 0.3; the estimate is 0.3
    shift = np.array([1.0, 1.0, -1.0, 0.0])
    weight = np.array([0.4, 0.1, 0.2, 0.3])
    ids = np.array(["p00000", "p00001", "p00002", "p00003"])
    draws = []
    for picks in respondent_resamples(ids, 40, 0, "personas"):
        draws.append(sum(weight[i] * shift[i] for i in picks) / sum(weight[i] for i in picks))
    low, high = np.percentile(draws, [2.5, 97.5])
    bias = float(np.median(draws)) - 0.3
    got = row.loc[("A", "all", "all"), ["mean_shift_low", "mean_shift_high"]].to_numpy(float)
    assert got == pytest.approx([low - bias, high - bias])
    assert abs(bias) > 1e-6  # so a plain percentile interval would not pass


# -- pilot end to end (fake model) ------------------------------------------------------------------
def test_pilot_shifts_shares_and_ranks_by_hand(town, tmp_path, personas_csv):
    config = PilotConfig.model_validate(pilot_config(tmp_path, personas_csv))
    out = pilot(config, "cfg.yaml", town)
    shifts = pd.read_csv(out / "shifts.csv", keep_default_na=False)
    row = shifts.set_index(["statement", "segment", "value"])
    # weights: North young 0.4, North old 0.1, South young 0.2, South old 0.3.
    # A: North 3 -> 4 (+1); South young mean 3 -> 2 (-1); South old unchanged (0).
    #    overall 0.4 + 0.1 - 0.2 + 0 = 0.3; North +1; South (0.2*-1)/0.5 = -0.4
    assert row.loc[("A", "all", "all"), "mean_shift"] == pytest.approx(0.3)
    assert row.loc[("A", "region", "North"), "mean_shift"] == pytest.approx(1.0)
    assert row.loc[("A", "region", "South"), "mean_shift"] == pytest.approx(-0.4)
    # B: everyone -> 5: +2 everywhere
    assert row.loc[("B", "all", "all"), "mean_shift"] == pytest.approx(2.0)
    # share rising, A: North 1; South young P(2 > {2,4}) = 0; South old, independent draws
    # from {2,4}: P(pre=2) P(post=4) = 0.25. Overall 0.5*1 + 0.2*0 + 0.3*0.25 = 0.575
    assert row.loc[("A", "all", "all"), "share_rises"] == pytest.approx(0.575)
    assert row.loc[("A", "region", "South"), "share_rises"] == pytest.approx(0.075 / 0.5)
    assert row.loc[("B", "region", "South"), "share_rises"] == pytest.approx(1.0)
    # ranks: B (+2) above A in every segment, and B beats A in every resample
    assert row.loc[("B", "all", "all"), "rank"] == 1
    assert row.loc[("A", "all", "all"), "rank"] == 2
    assert row.loc[("B", "all", "all"), "p_top"] == pytest.approx(1.0)
    assert (row.loc[("A", "all", "all"), ["rank_low", "rank_high"]] == [2, 2]).all()
    lo, hi = row.loc[("A", "all", "all"), ["mean_shift_low", "mean_shift_high"]]
    assert lo < 0.3 < hi
    assert row.loc[("B", "all", "all"), "group"] == "cost"
    # the page says how the shift was computed and shows both figures
    html = (out / "report.html").read_text()
    assert "difference of population means" in html
    # and that its intervals are over personas, not over the system's error
    words = " ".join(html.split())
    assert "not the system's own error" in words and "pilot_validation.py" in words
    assert "heatmap.svg" in html and "ranking.svg" in html
    assert (out / "heatmap.svg").read_text().lstrip().startswith("<?xml")
    assert not (tmp_path / ".out.partial").exists()


def test_simulate_writes_persona_and_segment_distributions(town, tmp_path, personas_csv):
    cfg = pilot_config(tmp_path, personas_csv)
    del cfg["pre_question"]
    cfg["questions"] = ["pre"]
    cfg["statements"] = {"question": "post", "survey": ["1"], "new": cfg["statements"]["new"][:1]}
    out = simulate(SimulateConfig.model_validate(cfg), "cfg.yaml", town)
    per = pd.read_parquet(out / "distributions.parquet")
    assert len(per) == 4 * 3  # 4 personas x (pre, statement 1, statement A)
    south_old = per[(per["item"] == "pre") & (per["persona_id"] == "p00003")].iloc[0]
    assert south_old["p_2"] == pytest.approx(0.5) and south_old["p_4"] == pytest.approx(0.5)
    seg = pd.read_csv(out / "segments.csv", keep_default_na=False)
    pre_all = seg[(seg["item"] == "pre") & (seg["segment"] == "all")].set_index(
        ["measure", "answer"]
    )
    # North (weight 0.5) answers 3; South (0.5) 2 or 4: shares 0.25, 0.5, 0.25; mean 3
    assert pre_all.loc[("share", "2"), "estimate"] == pytest.approx(0.25)
    assert pre_all.loc[("share", "3"), "estimate"] == pytest.approx(0.5)
    assert pre_all.loc[("mean", ""), "estimate"] == pytest.approx(3.0)
    # statement A for the South: young (0.2) -> 2, old (0.3) -> 2 or 4: mean (0.2*2+0.3*3)/0.5
    a_south = seg[(seg["item"] == "statement=A") & (seg["value"] == "South")]
    mean = a_south[a_south["measure"] == "mean"]["estimate"].iloc[0]
    assert mean == pytest.approx((0.2 * 2 + 0.3 * 3) / 0.5)
    items = pd.read_csv(out / "items.csv", keep_default_na=False)
    assert list(items["text"]) == ["", "The town has a new park.", "Free buses."]


def test_new_statement_text_reaches_the_prompt(town, tmp_path, personas_csv):
    from surveysim_pilot.simulate import answer, prepare

    seen = []

    class Recorder(FakeModel):
        def answer_distribution(self, prompts, answers, temperatures):
            seen.extend(prompts)
            return super().answer_distribution(prompts, answers, temperatures)

    prepared = prepare(
        SimulateConfig.model_validate(
            {k: v for k, v in pilot_config(tmp_path, personas_csv).items() if k != "pre_question"}
        ),
        "cfg.yaml",
        town,
    )
    answer(prepared, Recorder())
    assert sum("Free buses." in p.user for p in seen) == 4
    assert all(
        "pets: [cat, dog]" in p.system for p in seen if "region: South, age: old" in p.system
    )


# -- bad input: a named error, nothing written ------------------------------------------------------
def _fails(town, tmp_path, cfg, error, pattern):
    with pytest.raises(error, match=pattern):
        pilot(PilotConfig.model_validate(cfg), "cfg.yaml", town)
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / ".out.partial").exists()


def test_segment_field_the_survey_lacks(town, tmp_path, personas_csv):
    cfg = pilot_config(tmp_path, personas_csv, segments=["planet"])
    _fails(town, tmp_path, cfg, ConfigError, r"cfg\.yaml: segments: 'planet' is not")
    cfg = pilot_config(tmp_path, personas_csv, segments=["pets"])  # multi-select
    _fails(town, tmp_path, cfg, ConfigError, r"segments: 'pets'")


@pytest.mark.parametrize(
    ("margins", "pattern"),
    [
        ({"region": {"North": 0.5, "South": 0.4}}, r"margins\.region: shares sum to 0\.9, not 1"),
        (
            {"region": {"North": 0.5, "West": 0.5}},
            r"margins\.region: unknown option\(s\) \['West'\]",
        ),
        ({"planet": {"Mars": 1.0}}, r"margins\.planet: survey town has no demographic field"),
    ],
)
def test_bad_margins(town, tmp_path, personas_csv, margins, pattern):
    cfg = pilot_config(tmp_path, personas_csv, population={"source": "margins", "margins": margins})
    _fails(town, tmp_path, cfg, DataError, r"cfg\.yaml: population: " + pattern)


def test_empty_population(town, tmp_path, personas_csv):
    empty = tmp_path / "empty.csv"
    empty.write_text("region,age,pets,weight\n")
    cfg = pilot_config(tmp_path, personas_csv, population={"source": "table", "path": str(empty)})
    _fails(town, tmp_path, cfg, DataError, r"empty\.csv: the population is empty")


def test_statement_file_with_duplicate_ids(town, tmp_path, personas_csv):
    path = tmp_path / "statements.csv"
    path.write_text("id,text,group\nX,Free buses.,transport\nY,Lower taxes.,cost\nX,Again.,\n")
    cfg = pilot_config(tmp_path, personas_csv)
    cfg["statements"] = {"question": "post", "file": str(path)}
    _fails(town, tmp_path, cfg, DataError, r"statements\.csv: duplicate statement id\(s\): X")


def test_new_statement_reusing_a_survey_id(town, tmp_path, personas_csv):
    cfg = pilot_config(tmp_path, personas_csv)
    cfg["statements"]["new"][0]["id"] = "1"
    _fails(town, tmp_path, cfg, ConfigError, r"statement id '1' is already the survey's")


def _run_dir(tmp_path, backend=True) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    config = {"survey": "town", "backend": {"name": "fake"} if backend else None}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    return run


def test_run_directory_with_no_trained_system(town, tmp_path, personas_csv):
    run = _run_dir(tmp_path)
    cfg = pilot_config(tmp_path, personas_csv, system={"run": str(run)})
    _fails(town, tmp_path, cfg, ConfigError, r"system\.run: .*run has no trained system")
    (run / "adapter").mkdir()
    (run / "adapter" / "adapter_config.json").write_text("{}")  # config, but no weights
    _fails(town, tmp_path, cfg, ConfigError, r"has no trained system")
    (run / "adapter" / "adapter_model.bin").write_bytes(b"")  # a pickle is not accepted
    _fails(town, tmp_path, cfg, ConfigError, r"has no trained system")


def test_run_directory_without_a_backend(town, tmp_path, personas_csv):
    run = _run_dir(tmp_path, backend=False)
    cfg = pilot_config(tmp_path, personas_csv, system={"run": str(run), "kind": "zero_shot"})
    _fails(town, tmp_path, cfg, ConfigError, r"has no trained system \(its configuration has no")


def test_run_directory_with_adapter_loads_it(town, tmp_path, personas_csv):
    run = _run_dir(tmp_path)
    (run / "adapter").mkdir()
    (run / "adapter" / "adapter_config.json").write_text("{}")
    (run / "adapter" / "adapter_model.safetensors").write_bytes(b"")
    cfg = pilot_config(tmp_path, personas_csv, system={"run": str(run)})
    FakeBackend.loaded.clear()
    out = pilot(PilotConfig.model_validate(cfg), "cfg.yaml", town)
    assert FakeBackend.loaded == [run / "adapter"]
    assert (out / "shifts.csv").exists()


def test_failure_while_answering_leaves_nothing(town, tmp_path, personas_csv, monkeypatch):
    def broken(self, prompts, answers, temperatures):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(FakeModel, "answer_distribution", broken)
    cfg = pilot_config(tmp_path, personas_csv)
    _fails(town, tmp_path, cfg, RuntimeError, "out of memory")


def test_an_interrupted_pilot_resumes_from_its_finished_chunks(
    town, tmp_path, personas_csv, monkeypatch
):
    """One persona per chunk: the first attempt dies on the third chunk; the second answers only
    the two chunks left, and its results equal an uninterrupted pilot's."""
    import surveysim_core.answering as engine

    monkeypatch.setattr(engine, "ANSWER_CHUNK", 1)
    answered: list[int] = []  # prompts per model call
    real = FakeModel.answer_distribution

    def counting(self, prompts, answers, temperatures):
        if fail_at and len(answered) + 1 == fail_at:
            raise KeyboardInterrupt
        answered.append(len(prompts))
        return real(self, prompts, answers, temperatures)

    monkeypatch.setattr(FakeModel, "answer_distribution", counting)
    cfg = pilot_config(tmp_path, personas_csv)
    fail_at = 3
    with pytest.raises(KeyboardInterrupt):
        pilot(PilotConfig.model_validate(cfg), "cfg.yaml", town)
    assert not (tmp_path / "out").exists()
    assert answered == [3, 3]  # two personas x (pre, A, B) were answered and kept

    fail_at, answered[:] = 0, []
    messages: list[str] = []
    out = pilot(PilotConfig.model_validate(cfg), "cfg.yaml", town, Progress(messages.append))
    assert answered == [3, 3]  # only personas 3 and 4
    # and the engine says so, as a run does
    said = " | ".join(messages)
    assert "reused zero_shot (fake): answers at t=[1.0] (2 of 4 chunks)" in said
    assert "computed zero_shot (fake): answers at t=[1.0] (2 of 4 chunks)" in said
    resumed = pd.read_csv(out / "shifts.csv")

    # the same pilot once more answers nothing; a fresh cache answers all four personas
    answered[:] = []
    again = pilot(PilotConfig.model_validate({**cfg, "output": str(tmp_path / "again")}),
                  "cfg.yaml", town)  # fmt: skip
    assert answered == []
    monkeypatch.setenv("SURVEYSIM_CACHE", str(tmp_path / "other-cache"))
    whole = pilot(PilotConfig.model_validate({**cfg, "output": str(tmp_path / "whole")}),
                  "cfg.yaml", town)  # fmt: skip
    assert answered == [3, 3, 3, 3]
    pd.testing.assert_frame_equal(resumed, pd.read_csv(whole / "shifts.csv"))
    pd.testing.assert_frame_equal(resumed, pd.read_csv(again / "shifts.csv"))

    # another temperature is another system's answers: nothing is reused
    answered[:] = []
    cfg["system"] = {**cfg["system"], "temperature": 0.5}
    pilot(PilotConfig.model_validate({**cfg, "output": str(tmp_path / "t05")}), "cfg.yaml", town)
    assert answered == [3, 3, 3, 3]


def test_the_system_fingerprint_follows_the_adapter_files(tmp_path):
    from surveysim_pilot.simulate import SystemChoice

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")

    def choice(model: str, label: str = "fine_tuned") -> SystemChoice:
        settings = {"kind": "fine_tuned", "backend": "fake", "options": {"model": model}}
        return SystemChoice("fine_tuned", FakeBackend, {"model": model}, adapter, label, settings)

    before = choice("m").fingerprint()
    assert before == choice("m", "x").fingerprint()
    (adapter / "adapter_model.safetensors").write_bytes(b"retrained")
    assert choice("m").fingerprint() != before
    assert choice("n").fingerprint() != choice("m").fingerprint()


class SweepBackend(FakeBackend):
    """A backend whose "training" writes an adapter (its rank in adapter_config.json) into the
    folder the run gives it, and remembers which folder each rank went to."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        lora_r: int = 8

    training_options = frozenset({"lora_r"})
    trained: ClassVar[dict[int, Path]] = {}

    def fine_tune(self, train, val, loss, out_dir, resume):
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "adapter_config.json").write_text(json.dumps({"r": self.options.lora_r}))
        (out_dir / "adapter_model.safetensors").write_bytes(b"")
        SweepBackend.trained[self.options.lora_r] = out_dir
        return out_dir


@pytest.fixture
def sweep_run(town, tmp_path) -> Path:
    """A finished run of the town survey over lora_r 4 and 8 (20 respondents from a file)."""
    from surveysim_core.config import RunConfig
    from surveysim_core.run import execute

    town.register(type("P", (), {"register_backends": hookimpl(
        lambda self, register: register("sweepy", SweepBackend))})(), "sweep-plugin")  # fmt: skip
    regions, ages = ["North", "South"], ["young", "old"]
    rows = [(f"s{i:02d}", regions[i % 2], ages[i // 2 % 2], "cat", "pre", 1 + i % 5)
            for i in range(20)]  # fmt: skip
    data = tmp_path / "responses.csv"
    pd.DataFrame(
        rows, columns=["subject_id", "region", "age", "pets", "question", "answer"]
    ).to_csv(data, index=False)
    SweepBackend.trained = {}
    config = RunConfig.model_validate(
        {
            "survey": "town",
            "data": {"source": "file", "path": str(data)},
            "backend": {"name": "sweepy"},
            "sweep": {"backend.options.lora_r": [4, 8]},
            "decoding": {"decoder": "exact", "temperatures": [1.0]},
            "evaluation": {"bootstrap": 2},
            "output": {"dir": str(tmp_path / "runs")},
        }
    )
    run = execute(config, "run.yaml", town, run_dir=str(tmp_path / "sweep"),
                  progress=Progress(lambda m: None))  # fmt: skip
    yield run.dir
    town.unregister("sweep-plugin")


def test_pilot_answers_with_a_sweep_runs_system_by_name(town, tmp_path, personas_csv, sweep_run):
    settings = pd.read_csv(sweep_run / "settings.csv")
    assert {"fine_tuned@lora_r=4", "fine_tuned@lora_r=8"} <= set(settings["system"])
    cfg = pilot_config(tmp_path, personas_csv,
                       system={"run": str(sweep_run), "name": "fine_tuned@lora_r=4"})  # fmt: skip
    FakeBackend.loaded.clear()
    out = pilot(PilotConfig.model_validate(cfg), "cfg.yaml", town)
    # the adapter the run trained with lora_r 4, wherever the run put it, not run/adapter
    assert FakeBackend.loaded == [SweepBackend.trained[4]]
    assert SweepBackend.trained[4] != sweep_run / "adapter"
    assert (out / "shifts.csv").exists()
    # the system's own options reach the backend: rank 4, not the run's default 8
    cfg["output"] = str(tmp_path / "r8")
    cfg["system"]["name"] = "fine_tuned@lora_r=8"
    FakeBackend.loaded.clear()
    pilot(PilotConfig.model_validate(cfg), "cfg.yaml", town)
    assert FakeBackend.loaded == [SweepBackend.trained[8]]
    assert json.loads((SweepBackend.trained[8] / "adapter_config.json").read_text()) == {"r": 8}


def test_a_system_the_run_lacks_is_named_with_those_it_has(town, tmp_path, personas_csv, sweep_run):
    # a sweep has no plain fine_tuned: each of its trained systems carries its settings
    cfg = pilot_config(tmp_path, personas_csv, system={"run": str(sweep_run)})
    _fails(
        town, tmp_path, cfg, ConfigError,
        r"cfg\.yaml: system\.name: run .*sweep has no language-model system 'fine_tuned'; it has"
        r" fine_tuned@lora_r=4, fine_tuned@lora_r=8, zero_shot$",
    )  # fmt: skip
    cfg = pilot_config(tmp_path, personas_csv, system={"run": str(sweep_run), "name": "tuned"})
    _fails(town, tmp_path, cfg, ConfigError, r"system\.name: .*no language-model system 'tuned'")


def test_name_and_its_older_spelling_kind(tmp_path, personas_csv):
    section = PilotConfig.model_validate(
        pilot_config(tmp_path, personas_csv, system={"run": "r", "kind": "zero_shot"})
    ).system
    assert section.name == "zero_shot"
    assert (
        PilotConfig.model_validate(
            pilot_config(tmp_path, personas_csv, system={"run": "r"})
        ).system.name
        == "fine_tuned"
    )
    with pytest.raises(ValueError, match="give name or kind"):
        PilotConfig.model_validate(pilot_config(
            tmp_path, personas_csv, system={"run": "r", "kind": "zero_shot", "name": "x"}
        ))  # fmt: skip
    with pytest.raises(ValueError, match="'fine_tuned@lora_r=4' needs run"):
        PilotConfig.model_validate(pilot_config(
            tmp_path, personas_csv,
            system={"backend": {"name": "fake"}, "name": "fine_tuned@lora_r=4"},
        ))  # fmt: skip


def test_unknown_config_key_is_named(tmp_path):
    from surveysim_pilot.config import load

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"survey": "town", "output": "o", "questions": ["pre"],
                                    "system": {"backend": {"name": "fake"}, "kind": "zero_shot"},
                                    "segmnets": ["region"]}))  # fmt: skip
    with pytest.raises(ConfigError, match=r"cfg\.yaml: segmnets: unknown key"):
        load(path, SimulateConfig)


def test_cli_pilot_and_bad_input_exit_code(global_plugins, runner, tmp_path, personas_csv):
    from surveysim_core.cli import build_cli, main

    global_plugins.register(TownPlugin(), "town-plugin")
    try:
        cfg = tmp_path / "pilot.yaml"
        cfg.write_text(yaml.safe_dump(pilot_config(tmp_path, personas_csv)))
        result = runner.invoke(build_cli(), ["pilot", str(cfg)])
        assert result.exit_code == 0, result.output
        ranked = [line.split()[:2] for line in result.stdout.splitlines()[1:3]]
        assert ranked == [["1", "B"], ["2", "A"]]
        assert (tmp_path / "out" / "report.html").exists()
        sim = pilot_config(tmp_path, personas_csv, output=str(tmp_path / "sim"), questions=["pre"])
        del sim["pre_question"]
        cfg.write_text(yaml.safe_dump(sim))
        result = runner.invoke(build_cli(), ["simulate", str(cfg)])
        assert result.exit_code == 0, result.output
        assert (tmp_path / "sim" / "segments.csv").exists()
        assert not (tmp_path / "sim" / "shifts.csv").exists()
        bad = tmp_path / "bad.yaml"
        bad.write_text(
            yaml.safe_dump(
                pilot_config(
                    tmp_path, personas_csv, segments=["planet"], output=str(tmp_path / "o2")
                )
            )
        )
        with pytest.raises(SystemExit) as exit_info:
            import sys

            sys.argv = ["surveysim", "pilot", str(bad)]
            main()
        # an unknown segment column is a ConfigError: the configuration exit status (3)
        from surveysim_core.errors import EXIT_CONFIG

        assert exit_info.value.code == EXIT_CONFIG == 3
        assert not (tmp_path / "o2").exists()
    finally:
        global_plugins.unregister("town-plugin")


def test_tutorial_example_config_is_valid(plugins):
    """surveys/pilot-example.yaml (docs/tutorial-pilot.md): keys, margins and statements check."""
    from surveysim_pilot.config import load
    from surveysim_pilot.items import build_items

    root = Path(__file__).resolve().parents[2]
    config = load(root / "surveys" / "pilot-example.yaml", PilotConfig)
    spec = plugins.surveys.get("evshift").spec
    pop.check_margins(config.population.margins, spec, "pilot-example")
    statements = config.statements.model_copy(update={"file": str(root / config.statements.file)})
    items = build_items(spec, [config.pre_question], statements, "pilot-example")
    new = [i for i in items if i.new]
    assert [i.statement for i in new] == ["N1", "N2", "N3"]
    assert {i.group for i in new} == {"cost", "charging", "environmental"}


class MemoryModel(FakeModel):
    """A model trained with respondent memory: after a statement it answers relative to the
    persona's own earlier answer in the conversation. A: one point up (capped at 5); B: the
    same answer again. A statement without history is a bug of the caller."""

    histories: ClassVar[list] = []

    def answer_distribution(self, prompts, answers, temperatures):
        rows = []
        for p in prompts:
            if "Free buses." in p.user or "Lower taxes." in p.user:
                assert len(p.history) == 1, p
                ((question, earlier),) = p.history
                MemoryModel.histories.append((p.system, question, earlier))
                up = "Free buses." in p.user
                rows.append(dist(**{f"a{min(int(earlier) + up, 5)}": 1.0}))
            else:
                assert not p.history
                rows.extend(super().answer_distribution([p], answers, [1.0])[1.0])
        return {t: np.array(rows) for t in temperatures}


class MemoryBackend(Backend):
    def load(self, adapter):
        return MemoryModel()


def test_with_respondent_memory_the_shift_is_within_person(town, tmp_path, personas_csv):
    town.register(type("P", (), {"register_backends": hookimpl(
        lambda self, register: register("memory", MemoryBackend))})(), "memory-plugin")  # fmt: skip
    try:
        run = tmp_path / "run"
        (run / "adapter").mkdir(parents=True)
        (run / "adapter" / "adapter_config.json").write_text("{}")
        (run / "adapter" / "adapter_model.safetensors").write_bytes(b"")
        (run / "config.yaml").write_text(yaml.safe_dump(
            {"survey": "town", "backend": {"name": "memory"}, "prompts": {"memory": True}}
        ))  # fmt: skip
        MemoryModel.histories.clear()
        cfg = pilot_config(tmp_path, personas_csv, system={"run": str(run)})
        out = pilot(PilotConfig.model_validate(cfg), "cfg.yaml", town)
    finally:
        town.unregister("memory-plugin")
    row = pd.read_csv(out / "shifts.csv", keep_default_na=False).set_index(
        ["statement", "segment", "value"]
    )
    # A moves every persona one point up from its own answer (none was at 5): +1 and all rise;
    # a difference of population means would give the same mean but a share of rises below 1
    # for the South personas (independent draws from {2, 4} before and {3, 5} after)
    assert row.loc[("A", "all", "all"), "mean_shift"] == pytest.approx(1.0)
    assert row.loc[("A", "all", "all"), "share_rises"] == pytest.approx(1.0)
    assert row.loc[("A", "region", "South"), "share_rises"] == pytest.approx(1.0)
    # B repeats the persona's answer: no shift, nobody rises
    assert row.loc[("B", "all", "all"), "mean_shift"] == pytest.approx(0.0)
    assert row.loc[("B", "all", "all"), "share_rises"] == pytest.approx(0.0)
    assert (row["basis"].str.startswith("within-person")).all()
    assert "within-person (respondent memory)" in (out / "report.html").read_text()
    # the history is the pre question as asked, with the persona's drawn answer: North 3;
    # South 2 or 4; the same draw for both statements
    pre_user = {q for _, q, _ in MemoryModel.histories}
    assert len(pre_user) == 1 and "How much do you like the town" in next(iter(pre_user))
    by_persona: dict[str, set] = {}
    for system, _, earlier in MemoryModel.histories:
        by_persona.setdefault(system, set()).add(earlier)
    assert all(len(v) == 1 for v in by_persona.values())
    for system, (earlier,) in by_persona.items():
        assert earlier == "3" if "region: North" in system else earlier in {"2", "4"}


def test_check_says_what_a_pilot_would_answer_and_loads_nothing(
    global_plugins, runner, tmp_path, personas_csv, monkeypatch
):
    """``pilot --check`` loads no model and writes nothing, and its count of answers already in
    the cache is the one the pilot then reuses: after a pilot interrupted on its third chunk (one
    persona per chunk), two of four chunks (6 of 12 prompts) are cached."""
    import surveysim_core.answering as engine
    from surveysim_core.cli import build_cli

    monkeypatch.setattr(engine, "ANSWER_CHUNK", 1)
    global_plugins.register(TownPlugin(), "town-plugin")
    try:
        cfg = tmp_path / "pilot.yaml"
        cfg.write_text(yaml.safe_dump(pilot_config(tmp_path, personas_csv)))
        FakeBackend.loaded.clear()
        result = runner.invoke(build_cli(), ["pilot", str(cfg), "--check"])
        assert result.exit_code == 0, result.output
        assert FakeBackend.loaded == []
        assert not (tmp_path / "out").exists()
        # weights 0.4, 0.1, 0.2, 0.3: Kish n = 1 / 0.30 = 3.3
        assert "4 personas (table), effective sample size 3" in result.stdout
        assert "1 survey questions, 2 statements (2 new)" in result.stdout
        assert "12 prompts in 4 chunks of 1 personas; 0 already in the result cache" in (
            result.stdout
        )
        assert "difference of population means" in result.stdout

        calls = 0
        real = FakeModel.answer_distribution

        def dies_on_third(self, prompts, answers, temperatures):
            nonlocal calls
            calls += 1
            if calls == 3:
                raise KeyboardInterrupt
            return real(self, prompts, answers, temperatures)

        monkeypatch.setattr(FakeModel, "answer_distribution", dies_on_third)
        with pytest.raises(KeyboardInterrupt):
            pilot(
                PilotConfig.model_validate(pilot_config(tmp_path, personas_csv)),
                "c",
                global_plugins,
            )
        result = runner.invoke(build_cli(), ["pilot", str(cfg), "--check"])
        assert "6 already in the result cache, 6 to answer" in result.stdout, result.output

        # a simulate config is checked by simulate --check; a bad segment is named as in a run
        bad = pilot_config(tmp_path, personas_csv, segments=["planet"])
        cfg.write_text(yaml.safe_dump(bad))
        result = runner.invoke(build_cli(), ["pilot", str(cfg), "--check"])
        assert result.exit_code != 0 and "planet" in str(result.exception or result.output)
        sim_cfg = pilot_config(tmp_path, personas_csv, questions=["pre"])
        del sim_cfg["pre_question"], sim_cfg["statements"]
        cfg.write_text(yaml.safe_dump(sim_cfg))
        result = runner.invoke(build_cli(), ["simulate", str(cfg), "--check"])
        assert result.exit_code == 0, result.output
        # a chunk is keyed by all its prompts: the pre question alone is not the pilot's chunk
        assert "4 prompts in 4 chunks of 1 personas; 0 already in the result cache" in (
            result.stdout
        )
    finally:
        global_plugins.unregister("town-plugin")
