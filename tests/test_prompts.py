"""Prompt rendering: the paper's prompts, StrictUndefined, the sandbox, template overrides."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pandas as pd
import pytest
import yaml

from surveysim_core import hookimpl
from surveysim_core.config import load_config
from surveysim_core.errors import ConfigError
from surveysim_core.prompts import PromptRenderer, default_templates, render_demographics
from surveysim_core.run import plan_run, render_prompts
from surveysim_core.survey import Survey, SurveySpec

REPO = Path(__file__).resolve().parents[1]
# the published instrument; /work/shared/evshift/questionnaire.yaml is the same file
QUESTIONNAIRE = REPO / "plugins" / "surveysim-evshift" / "surveysim_evshift" / "questionnaire.yaml"


def one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def instrument() -> dict:
    return yaml.safe_load(QUESTIONNAIRE.read_text(encoding="utf-8"))


@pytest.fixture
def evshift_plan(plugins):
    path = REPO / "surveys" / "evshift.yaml"
    return plan_run(load_config(path), str(path), plugins)


def test_demographics_as_the_papers_brace_list():
    text = render_demographics(
        {"age": "18-25", "gender": "Man", "household": ("My spouse", "My children")}
    )
    assert text == "{age: 18-25, gender: Man, household: [My spouse, My children]}"
    labelled = render_demographics({"living_area": "Urban"}, {"living_area": "living area"})
    assert labelled == "{living area: Urban}"


def test_paper_system_prompt(instrument):
    demographics = "{age: 18-25, gender: Man}"
    renderer = PromptRenderer(default_templates())
    rendered = renderer.render("system", demographics=demographics)
    paper = one_line(instrument["prompts"]["system"].replace("{demographics}", demographics))
    assert rendered == paper
    assert rendered.startswith("I want you to act as the following character.")
    assert rendered.endswith("do not break character. {age: 18-25, gender: Man}")


def evshift_respondent(spec: SurveySpec) -> dict:
    """The first option of every field; a multi-select field with two options."""
    out = {}
    for name, field in spec.demographics.items():
        out[name] = (field.options[1], field.options[2]) if field.multi else field.options[0]
    return out


def test_evshift_prompts_equal_the_papers_text(evshift_plan, instrument):
    spec = evshift_plan.survey.spec
    respondents = pd.DataFrame(
        [evshift_respondent(spec)], index=pd.Index(["s1"], name="subject_id")
    )
    items = pd.DataFrame(
        {
            "subject_id": ["s1", "s1", "s1"],
            "question": [
                "initial_preference",
                "post_intervention_preference",
                "post_intervention_preference",
            ],
            "intervention": ["", "3", "35"],
            "seq": [0, 1, 2],
            "answer": [50.0, 60.0, 70.0],
        }
    )
    prompts = render_prompts(evshift_plan, items, respondents)
    question = instrument["prompts"]["question"]
    statements = instrument["interventions"]
    assert prompts[0].user == one_line(question.replace("{intervention}", ""))
    assert prompts[1].user == one_line(question.replace("{intervention}", statements[3]))
    assert prompts[2].user == one_line(question.replace("{intervention}", statements[35]))
    assert prompts[1].user.startswith("The number of public charging stations is rapidly")
    assert prompts[0].user.endswith("no additional words or explanations. Score:")
    # the persona: every field with its label, the multi-select field as a bracketed list
    system = prompts[0].system
    assert all(p.system == system for p in prompts)
    assert "{living state: alabama, living area: Urban, age: 18-25, gender: Woman," in system
    assert "household: [My spouse, My children]," in system
    assert system.startswith(one_line(instrument["prompts"]["system"].split("{")[0]))


def test_the_persona_next_to_the_question(plugins, instrument):
    """``prompts.persona_position: question``: the same demographics open each question's turn,
    and the system prompt keeps the paper's instruction without them."""
    path = REPO / "surveys" / "evshift.yaml"
    plans = {
        pos: plan_run(load_config(path, [f"prompts.persona_position={pos}"]), str(path), plugins)
        for pos in ("system", "question")
    }
    spec = plans["system"].survey.spec
    respondents = pd.DataFrame(
        [evshift_respondent(spec)], index=pd.Index(["s1"], name="subject_id")
    )
    items = pd.DataFrame(
        {"subject_id": ["s1", "s1"], "question": ["initial_preference",
         "post_intervention_preference"], "intervention": ["", "3"], "seq": [0, 1],
         "answer": [50.0, 60.0]}
    )  # fmt: skip
    beside = render_prompts(plans["question"], items, respondents)
    default = render_prompts(plans["system"], items, respondents)
    instruction = one_line(instrument["prompts"]["system"].split("{")[0]).strip()
    persona = default[0].system[len(instruction) :].strip()
    assert persona.startswith("{living state: alabama,") and persona.endswith("}")
    for b, d in zip(beside, default, strict=True):
        assert b.system == instruction  # no demographics left in it
        assert b.user == f"{persona}\n{d.user}"


def test_missing_variable_is_a_config_error_naming_the_template():
    renderer = PromptRenderer({"greeting": "Hello {{ nmae }}"}, source="my-survey.yaml")
    with pytest.raises(ConfigError) as err:
        renderer.render("greeting", name="Ada")
    assert "my-survey.yaml" in str(err.value)
    assert "template 'greeting'" in str(err.value)
    assert "nmae" in str(err.value)
    # a present variable renders
    assert PromptRenderer({"greeting": "Hello {{ name }}"}).render("greeting", name="Ada") == (
        "Hello Ada"
    )


def test_unknown_template_and_syntax_error_are_config_errors():
    renderer = PromptRenderer({"a": "{{ x ", "b": "ok"}, source="s.yaml")
    with pytest.raises(ConfigError, match=r"s\.yaml: template 'a' line 1"):
        renderer.template("a")
    with pytest.raises(ConfigError, match=r"no template 'c'; known: a, b"):
        renderer.template("c")


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ question.__init__.__globals__ }}",
    ],
)
def test_sandbox_refuses_to_reach_python_internals(source):
    class Question:
        text = "q"

    renderer = PromptRenderer({"evil": source})
    with pytest.raises(ConfigError, match="is unsafe"):
        renderer.render("evil", question=Question())


def test_sandbox_refuses_to_call_an_unsafe_callable():
    calls = []

    @jinja2.sandbox.unsafe
    def delete_everything():
        calls.append("ran")
        return "gone"

    renderer = PromptRenderer({"evil": "{{ delete_everything() }}"})
    with pytest.raises(ConfigError, match="is unsafe"):
        renderer.render("evil", delete_everything=delete_everything)
    assert calls == []  # refused, not executed


class TemplatePlugin:
    @hookimpl
    def register_templates(self, register):
        register("system", "Plugin persona {{ demographics }}")
        register("likert", "{{ question.text }} Answer 1-5. Answer:")


def test_templates_registered_by_plugins_and_overridden_by_the_survey(tmp_path, plugins):
    spec = SurveySpec.model_validate(
        {
            "name": "likert",
            "demographics": {"region": {"options": ["N", "S"]}},
            "questions": [
                {
                    "id": "q1",
                    "text": "Do you like it?",
                    "answer": {"type": "integer", "min": 1, "max": 5},
                    "template": "likert",
                }
            ],
            "templates": {"system": "Survey persona {{ demographics }}!"},
        }
    )

    class SurveyPlugin:
        @hookimpl
        def register_surveys(self, register):
            register("likert", Survey(spec))

    plugins.register(TemplatePlugin(), "templates-plugin")
    plugins.register(SurveyPlugin(), "likert-survey")
    try:
        path = tmp_path / "run.yaml"
        path.write_text("survey: likert\n", encoding="utf-8")
        plan = plan_run(load_config(path), str(path), plugins)
        # the survey's own template wins over the plugin's, which wins over the core's
        assert plan.renderer.render("system", demographics="{region: N}") == (
            "Survey persona {region: N}!"
        )
        assert plan.renderer.render("likert", question=spec.questions[0]) == (
            "Do you like it? Answer 1-5. Answer:"
        )
    finally:
        plugins.unregister("templates-plugin")
        plugins.unregister("likert-survey")


def test_plan_rejects_a_question_template_that_does_not_exist(tmp_path, plugins):
    spec = SurveySpec.model_validate(
        {
            "name": "broken",
            "demographics": {"region": {"options": ["N", "S"]}},
            "questions": [
                {"id": "q1", "answer": {"type": "integer", "min": 1, "max": 5}, "template": "nope"}
            ],
        }
    )

    class SurveyPlugin:
        @hookimpl
        def register_surveys(self, register):
            register("broken", Survey(spec, source="broken.yaml"))

    plugins.register(SurveyPlugin(), "broken-survey")
    try:
        path = tmp_path / "run.yaml"
        path.write_text("survey: broken\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=r"broken\.yaml: no template 'nope'"):
            plan_run(load_config(path), str(path), plugins)
    finally:
        plugins.unregister("broken-survey")
