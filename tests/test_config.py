"""Run configuration: strict keys, YAML errors, --set overrides, plugin names and plugin options."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ConfigDict

from surveysim_core import hookimpl
from surveysim_core.config import apply_override, load_config
from surveysim_core.errors import ConfigError
from surveysim_core.protocols import Backend
from surveysim_core.run import plan_run

REPO = Path(__file__).resolve().parents[1]

BASE = {
    "survey": "evshift",
    "split": {"train": 0.8, "val": 0.1, "test": 0.1, "seed": 0},
    "baselines": [{"name": "random"}, {"name": "marginal"}],
}


def write_config(tmp_path: Path, data: dict | str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def test_defaults_and_values_are_read(tmp_path):
    config = load_config(write_config(tmp_path, BASE))
    assert config.survey == "evshift"
    assert [b.name for b in config.baselines] == ["random", "marginal"]
    assert config.decoding.temperatures == [0.0, 1.0]  # the documented default


def test_unknown_key_names_file_and_dotted_key(tmp_path):
    path = write_config(tmp_path, {**BASE, "split": {"trian": 0.8, "val": 0.1, "test": 0.1}})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message
    assert "split.trian" in message
    assert "unknown key" in message


def test_unknown_top_level_and_nested_list_keys(tmp_path):
    path = write_config(tmp_path, {**BASE, "baselines": [{"name": "random", "option": {}}]})
    with pytest.raises(ConfigError, match=r"baselines\.0\.option: unknown key"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"outptu: unknown key"):
        load_config(write_config(tmp_path, {**BASE, "outptu": {"dir": "x"}}, "b.yaml"))


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = write_config(tmp_path, "survey: evshift\nsplit:\n  train: [0.8\n  val: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert "line 4" in str(err.value)
    assert "not valid YAML" in str(err.value)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")


def test_set_overrides_nested_list_index_and_yaml_types(tmp_path):
    path = write_config(tmp_path, BASE)
    config = load_config(
        path,
        [
            "split.seed=7",
            "decoding.temperatures=[0.5, 2]",
            "baselines.1.name=random",
            "baselines.0.name=marginal",
            "data.subjects=300",
            "evaluation.population.name=marginals",
            "evaluation.population.options.n=25",  # creates the missing mappings
            "questions=[initial_preference]",
        ],
    )
    assert config.split.seed == 7
    assert config.decoding.temperatures == [0.5, 2.0]
    assert [b.name for b in config.baselines] == ["marginal", "random"]
    assert config.data.subjects == 300
    assert config.evaluation.population.name == "marginals"
    assert config.evaluation.population.options == {"n": 25}  # an int, not the string "25"
    assert config.questions == ["initial_preference"]


def test_set_value_types_follow_yaml():
    data: dict = {}
    apply_override(data, "a.b=true")
    apply_override(data, "a.c=1.5")
    apply_override(data, "a.d=hello world")
    apply_override(data, "a.e={x: 1}")
    apply_override(data, "a.f=null")
    assert data == {"a": {"b": True, "c": 1.5, "d": "hello world", "e": {"x": 1}, "f": None}}


def test_set_errors(tmp_path):
    path = write_config(tmp_path, BASE)
    with pytest.raises(ConfigError, match="has no item 5"):
        load_config(path, ["baselines.5.name=random"])
    with pytest.raises(ConfigError, match=r"expected key\.path=value"):
        load_config(path, ["split.seed"])
    with pytest.raises(ConfigError, match=r"split\.trian: unknown key"):
        load_config(path, ["split.trian=0.8"])


def test_split_fractions_must_sum_to_one(tmp_path):
    bad = {**BASE, "split": {"train": 0.8, "val": 0.2, "test": 0.1}}
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, bad))
    assert "split" in str(err.value)
    assert "must be 1" in str(err.value)
    assert "1.1" in str(err.value)


# -- plugin names and plugin options (plan_run resolves and validates them) ----------------------
def plan(tmp_path, plugins, data: dict):
    path = write_config(tmp_path, data)
    return plan_run(load_config(path), str(path), plugins)


def test_valid_plan_resolves_plugins(tmp_path, plugins):
    p = plan(tmp_path, plugins, BASE)
    assert p.survey.name == "evshift"
    assert list(p.answer_types) == ["initial_preference", "post_intervention_preference"]
    assert [name for name, _ in p.baselines] == ["random", "marginal"]
    assert set(p.metrics) == {
        "kl",
        "rmse",
        "pearson",
        "spread",
        "success_rate",
        "wasserstein",
        "representativeness",
        "nll",
    }


def test_unknown_survey_names_key_and_known_surveys(tmp_path, plugins):
    with pytest.raises(ConfigError) as err:
        plan(tmp_path, plugins, {**BASE, "survey": "evshfit"})
    message = str(err.value)
    assert "survey: unknown survey 'evshfit'" in message
    assert "evshift" in message.split("known:")[1]


def test_unknown_baseline_and_metric_are_reported_together(tmp_path, plugins):
    data = {
        **BASE,
        "baselines": [{"name": "random"}, {"name": "margnal"}],
        "evaluation": {"metrics": ["kl", "kll"]},
    }
    with pytest.raises(ConfigError) as err:
        plan(tmp_path, plugins, data)
    message = str(err.value)
    assert "baselines.1.name: unknown baseline 'margnal'" in message
    assert "evaluation.metrics: unknown metric 'kll'" in message
    assert "marginal" in message  # the known baselines are listed


def test_plugin_options_validated_by_the_plugins_own_model(tmp_path, plugins):
    # the random baseline takes no options at all
    data = {**BASE, "baselines": [{"name": "random", "options": {"sede": 1}}]}
    with pytest.raises(ConfigError, match=r"baselines\.0\.options: takes no options \(got sede\)"):
        plan(tmp_path, plugins, data)
    # the marginals sampler has an Options model: a misspelt key is named with its full path
    data = {**BASE, "evaluation": {"population": {"name": "marginals", "options": {"nn": 5}}}}
    with pytest.raises(ConfigError) as err:
        plan(tmp_path, plugins, data)
    assert "evaluation.population.options.nn: unknown key" in str(err.value)
    # and a wrongly typed value
    data = {**BASE, "evaluation": {"population": {"name": "marginals", "options": {"n": "x"}}}}
    with pytest.raises(ConfigError, match=r"evaluation\.population\.options\.n"):
        plan(tmp_path, plugins, data)


def test_segment_must_be_a_single_choice_field(tmp_path, plugins):
    with pytest.raises(ConfigError, match=r"evaluation\.segments: 'household'"):
        plan(tmp_path, plugins, {**BASE, "evaluation": {"segments": ["household"]}})


def test_decoder_is_checked_even_without_a_backend(tmp_path, plugins):
    data = {**BASE, "decoding": {"decoder": "sampel"}}
    with pytest.raises(ConfigError, match=r"decoding\.decoder: unknown decoder 'sampel'"):
        plan(tmp_path, plugins, data)
    data = {**BASE, "decoding": {"decoder": "exact", "options": {"beam": 2}}}
    with pytest.raises(ConfigError, match=r"decoding\.options: takes no options \(got beam\)"):
        plan(tmp_path, plugins, data)


class FakeBackend(Backend):
    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        size: int = 1


class FakeLoss:
    Options = None


class FakeBackendPlugin:
    @hookimpl
    def register_backends(self, register):
        register("fake", FakeBackend)

    @hookimpl
    def register_losses(self, register):
        register("fake_loss", FakeLoss)


@pytest.fixture
def backend_plugins(plugins):
    plugins.register(FakeBackendPlugin(), "fake-backend")
    yield plugins
    plugins.unregister("fake-backend")


def test_unknown_decoder_backend_and_loss_are_named(tmp_path, backend_plugins):
    good = {**BASE, "backend": {"name": "fake", "loss": {"name": "fake_loss"}}}
    assert plan(tmp_path, backend_plugins, good).backend[0] is FakeBackend
    bad = {
        **BASE,
        "backend": {"name": "fake", "options": {"sise": 2}, "loss": {"name": "fake_los"}},
        "decoding": {"decoder": "sampel"},
    }
    with pytest.raises(ConfigError) as err:
        plan(tmp_path, backend_plugins, bad)
    message = str(err.value)
    assert "decoding.decoder: unknown decoder 'sampel'" in message
    assert "backend.options.sise: unknown key" in message
    assert "backend.loss.name: unknown loss 'fake_los'" in message
    bad = {**BASE, "backend": {"name": "fak", "loss": {"name": "fake_loss"}}}
    with pytest.raises(ConfigError, match=r"backend\.name: unknown backend 'fak'"):
        plan(tmp_path, backend_plugins, bad)


# -- surveysim validate ----------------------------------------------------------------------------
def test_cli_validate_good_file(runner, cli):
    result = runner.invoke(cli, ["validate", str(REPO / "surveys" / "evshift.yaml")])
    assert result.exit_code == 0, result.output
    assert "valid (survey evshift: initial_preference, post_intervention_preference)" in (
        result.output
    )


def test_cli_validate_bad_file(tmp_path, runner, cli):
    path = write_config(tmp_path, {**BASE, "baselines": [{"name": "margnal"}]})
    result = runner.invoke(cli, ["validate", str(path)])
    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigError)
    assert "baselines.0.name: unknown baseline 'margnal'" in str(result.exception)
    result = runner.invoke(cli, ["validate", str(path), "--set", "baselines.0.name=marginal"])
    assert result.exit_code == 0, result.output


def test_cli_entry_point_reports_config_errors_with_exit_code_3(tmp_path):
    path = write_config(tmp_path, {**BASE, "split": {"trian": 0.8}})
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from surveysim_core.cli import main; main()",
            "validate",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3  # a configuration error (docs/user-guide.md, "Exit codes")
    assert proc.stderr.startswith("Error: ")
    assert f"{path}: split.trian: unknown key" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- survey options: routed to the survey's own model, never silently ignored -------------------
def test_survey_options_rejected_for_a_survey_that_takes_none(tmp_path, plugins):
    with pytest.raises(ConfigError) as err:
        plan(tmp_path, plugins, {**BASE, "survey_options": {"scale": 9}})
    assert "survey_options" in str(err.value)
    assert "takes no options" in str(err.value)


def test_survey_options_validated_and_applied(tmp_path, plugins):
    from pydantic import BaseModel, ConfigDict

    from tests.conftest import SatisfactionPlugin, make_satisfaction_survey

    class Opts(BaseModel):
        model_config = ConfigDict(extra="forbid")
        wording: str = "How satisfied are you?"

    def configure(options):
        changed = make_satisfaction_survey()
        changed.spec.questions[0].text = options.wording
        return changed

    survey = make_satisfaction_survey()
    survey.Options, survey.configure = Opts, configure
    plugins.register(SatisfactionPlugin(survey), "satisfaction-plugin")
    try:
        data = {"survey": "satisfaction", "survey_options": {"wording": "Happy?"}}
        assert plan(tmp_path, plugins, data).survey.spec.questions[0].text == "Happy?"
        with pytest.raises(ConfigError) as err:
            plan(tmp_path, plugins, {**data, "survey_options": {"wordnig": "x"}})
        assert "survey_options.wordnig" in str(err.value)
    finally:
        plugins.unregister("satisfaction-plugin")


def test_the_fidelity_config_is_the_default_with_a_second_epoch_and_the_random_init():
    """surveys/evshift-fidelity.yaml must not drift from the default run it documents itself as:
    the same 400 respondents and attention adapters, two epochs, peft's default initialisation
    (its validated figures, 0.76 / 0.39 over two seeds) and the zero-shot system."""
    root = Path(__file__).resolve().parents[1] / "surveys"
    default = yaml.safe_load((root / "evshift.yaml").read_text())
    fidelity = yaml.safe_load((root / "evshift-fidelity.yaml").read_text())
    assert fidelity["split"]["max_train_subjects"] == default["split"]["max_train_subjects"] == 400
    assert fidelity["backend"]["options"].pop("epochs") == 2
    assert default["backend"]["options"].pop("epochs") == 1
    assert "init_lora_weights" not in fidelity["backend"]["options"]
    assert default["backend"]["options"].pop("init_lora_weights") == "pissa"
    attention = ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert fidelity["backend"]["options"]["target_modules"] == attention
    assert fidelity["backend"].pop("systems") == ["zero_shot", "fine_tuned"]
    assert default["backend"].pop("systems") == ["fine_tuned"]  # zero-shot is one flag away
    assert fidelity["output"].pop("dir") != default["output"].pop("dir")
    assert fidelity == default
    load_config(root / "evshift-fidelity.yaml")  # and it validates


def test_the_memory_config_is_the_default_with_memory_on():
    """surveys/evshift-memory.yaml: the default run with respondent memory, and baselines that
    see the previous answer as the model does (history); it keeps the 160 respondents and the
    attention and MLP adapters its figures were measured with (docs/fidelity.md)."""
    root = Path(__file__).resolve().parents[1] / "surveys"
    default = yaml.safe_load((root / "evshift.yaml").read_text())
    memory = yaml.safe_load((root / "evshift-memory.yaml").read_text())
    assert memory.pop("prompts") == {"memory": True, "memory_at_evaluation": "known"}
    for baseline in memory["baselines"]:
        if baseline["name"] in ("svr", "catboost"):
            assert baseline.pop("options") == {"history": True}
    assert memory["backend"].pop("systems") == default["backend"].pop("systems") == ["fine_tuned"]
    assert memory["split"].pop("max_train_subjects") == 160
    assert default["split"].pop("max_train_subjects") == 400
    options = memory["backend"]["options"]
    assert options.pop("target_modules")[4:] == ["gate_proj", "up_proj", "down_proj"]
    default["backend"]["options"].pop("target_modules")
    assert default["backend"]["options"].pop("init_lora_weights") == "pissa"
    assert memory["output"].pop("dir") != default["output"].pop("dir")
    assert memory == default
    load_config(root / "evshift-memory.yaml")  # and it validates
