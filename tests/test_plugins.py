"""The plugin manager: registration by name, duplicates, selection by environment, misspelt and
broken plugins, lazy "module:attr" objects, and ``surveysim plugins``."""

from __future__ import annotations

import json
import sys
import textwrap
from importlib import metadata
from types import SimpleNamespace

import click
import pytest

from surveysim_core import hookimpl
from surveysim_core import plugins as plugins_module
from surveysim_core.errors import PluginError
from surveysim_core.plugins import Plugins


class FakeMetric:
    level = "population"
    needs_order = needs_exact = False

    def __call__(self, human, model, answer):
        return 0.0


class MetricPlugin:
    """Registers one metric under a name given at construction."""

    def __init__(self, name: str):
        self.name = name

    @hookimpl
    def register_metrics(self, register):
        register(self.name, FakeMetric)


@pytest.fixture
def bare() -> Plugins:
    """A plugin set with no entry points loaded: only what a test registers."""
    return Plugins(load_entry_points=False)


@pytest.fixture
def fake_metric_plugin(bare):
    bare.register(MetricPlugin("agreement"), "fake-metrics", version="9.9")
    yield bare
    bare.unregister("fake-metrics")


def test_fake_plugin_registers_and_unregisters_by_name(fake_metric_plugin):
    plugins = fake_metric_plugin
    assert list(plugins.metrics) == ["agreement"]
    assert plugins.metrics.get("agreement") is FakeMetric
    assert plugins.metrics.entry("agreement").plugin == "fake-metrics"
    info = {p.name: p for p in plugins.info()}
    assert info["fake-metrics"].version == "9.9"
    assert info["fake-metrics"].hooks == ["register_metrics"]
    plugins.unregister("fake-metrics")
    assert "agreement" not in plugins.metrics
    plugins.register(MetricPlugin("agreement"), "fake-metrics")  # for the fixture's teardown


def test_duplicate_name_names_both_plugins(bare):
    bare.register(MetricPlugin("agreement"), "first-plugin")
    bare.register(MetricPlugin("agreement"), "second-plugin")
    with pytest.raises(PluginError) as err:
        bare.registry("metrics")
    message = str(err.value)
    assert "metrics 'agreement' is registered by two plugins" in message
    assert "'first-plugin'" in message and "'second-plugin'" in message


def test_duplicate_of_a_builtin_name_names_std_and_the_newcomer(plugins):
    plugins.register(MetricPlugin("kl"), "my-kl")
    with pytest.raises(PluginError) as err:
        plugins.registry("metrics")
    assert "'std'" in str(err.value) and "'my-kl'" in str(err.value)


def test_two_plugins_with_one_name_are_refused(bare):
    bare.register(MetricPlugin("a"), "same")
    with pytest.raises(PluginError, match="two plugins are named 'same'"):
        bare.register(MetricPlugin("b"), "same")


def test_entry_points_load_builtin_plugins(plugins):
    names = {p.name for p in plugins.info()}
    assert {"std", "evshift"} <= names
    assert "evshift" in plugins.surveys
    assert {"kl", "rmse", "success_rate"} <= set(plugins.metrics)


def test_load_plugins_env_limits_what_loads(monkeypatch):
    monkeypatch.setenv("SURVEYSIM_LOAD_PLUGINS", "std")
    plugins = Plugins()
    assert [p.name for p in plugins.info()] == ["std"]
    assert len(plugins.surveys) == 0
    assert "kl" in plugins.metrics


def test_block_plugins_env_blocks(monkeypatch):
    monkeypatch.setenv("SURVEYSIM_BLOCK_PLUGINS", "evshift, hf")
    plugins = Plugins()
    names = {p.name for p in plugins.info()}
    assert "std" in names
    assert "evshift" not in names and "hf" not in names
    with pytest.raises(PluginError, match="unknown survey 'evshift'"):
        plugins.surveys.get("evshift")


class Misspelt:
    @hookimpl
    def register_survey(self, register):  # the hook is register_surveys
        register("x", object())


def test_misspelt_hook_is_caught_by_check_with_the_plugins_name(bare):
    bare.register(Misspelt(), "typo-plugin")
    with pytest.raises(PluginError) as err:
        bare.check()
    assert "typo-plugin" in str(err.value)
    assert "register_survey" in str(err.value)


def with_entry_points(monkeypatch, *extra: metadata.EntryPoint) -> None:
    """Make the plugin manager see the installed entry points plus ``extra``."""
    real = list(metadata.entry_points(group="surveysim"))

    def entry_points(group):
        assert group == "surveysim"
        return [*real, *extra]

    monkeypatch.setattr(plugins_module, "metadata", SimpleNamespace(entry_points=entry_points))


def test_misspelt_hook_in_an_installed_plugin_fails_loading(tmp_path, monkeypatch):
    (tmp_path / "ss_typo_plugin.py").write_text(
        textwrap.dedent(
            """
            from surveysim_core import hookimpl

            @hookimpl
            def register_metric(register):
                pass
            """
        ),
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "ss_typo_plugin", raising=False)
    with_entry_points(monkeypatch, metadata.EntryPoint("typo", "ss_typo_plugin", "surveysim"))
    with pytest.raises(PluginError) as err:
        Plugins()
    assert "plugin 'typo'" in str(err.value)
    assert "register_metric" in str(err.value)
    sys.modules.pop("ss_typo_plugin", None)


def test_plugin_that_fails_to_import_is_named_and_can_be_blocked(monkeypatch):
    broken = metadata.EntryPoint("broken", "ss_module_that_does_not_exist", "surveysim")
    with_entry_points(monkeypatch, broken)
    with pytest.raises(PluginError) as err:
        Plugins()
    message = str(err.value)
    assert "plugin 'broken'" in message
    assert "ss_module_that_does_not_exist" in message
    assert "SURVEYSIM_BLOCK_PLUGINS=broken" in message
    monkeypatch.setenv("SURVEYSIM_BLOCK_PLUGINS", "broken")
    assert "broken" not in {p.name for p in Plugins().info()}


class Exploding:
    @hookimpl
    def register_metrics(self, register):
        raise RuntimeError("config file missing")


def test_hook_that_raises_names_the_plugin_and_hook(plugins):
    plugins.register(Exploding(), "exploding")
    with pytest.raises(PluginError) as err:
        plugins.registry("metrics")
    assert str(err.value) == (
        "plugin 'exploding' failed in register_metrics: RuntimeError: config file missing"
    )
    assert "evshift" in plugins.surveys


def test_lazy_registration_imports_on_get_only(tmp_path, monkeypatch, bare):
    (tmp_path / "ss_lazy_target.py").write_text(
        "class HeavyMetric:\n    loaded = True\n", encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "ss_lazy_target", raising=False)

    class LazyPlugin:
        @hookimpl
        def register_metrics(self, register):
            register("heavy", "ss_lazy_target:HeavyMetric")

    bare.register(LazyPlugin(), "lazy")
    assert "heavy" in bare.metrics
    assert list(bare.metrics) == ["heavy"]
    assert "ss_lazy_target" not in sys.modules
    cls = bare.metrics.get("heavy")
    assert "ss_lazy_target" in sys.modules
    assert cls.__name__ == "HeavyMetric" and cls.loaded
    assert bare.metrics.get("heavy") is cls  # resolved once
    sys.modules.pop("ss_lazy_target", None)


def test_lazy_target_that_is_not_installed_or_missing(bare):
    class Plugin:
        @hookimpl
        def register_backends(self, register):
            register("gone", "ss_not_installed_backend.models:Backend")
            register("typo", "surveysim_core.protocols:Bakend")

    bare.register(Plugin(), "lazy-broken")
    with pytest.raises(PluginError) as err:
        bare.backends.get("gone")
    assert "plugin 'lazy-broken'" in str(err.value)
    assert "needs 'ss_not_installed_backend'" in str(err.value)
    with pytest.raises(PluginError, match=r"'typo' points at 'surveysim_core\.protocols:Bakend'"):
        bare.backends.get("typo")


def test_unknown_name_lists_the_known_ones(plugins):
    with pytest.raises(PluginError) as err:
        plugins.metrics.get("klx", where="run.yaml: evaluation.metrics")
    message = str(err.value)
    assert message.startswith("run.yaml: evaluation.metrics: unknown metric 'klx'; known: ")
    known = message.split("known: ")[1].split(".")[0].split(", ")
    assert {"accuracy", "kl", "nll", "rmse", "success_rate", "wasserstein"} <= set(known)


def test_surveysim_plugins_lists_name_version_and_hooks(runner, cli):
    result = runner.invoke(cli, ["plugins"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    std = lines.index("std 0.1.0")
    assert lines[std + 1] == (
        "  hooks: register_answer_types, register_baselines, register_data_formats,"
        " register_decoders, register_metrics, register_parsers, register_samplers"
    )
    assert "evshift 0.1.0" in lines
    result = runner.invoke(cli, ["plugins", "--json"])
    listed = {p["name"]: p for p in json.loads(result.output)}
    assert listed["evshift"]["hooks"] == ["register_surveys"]
    assert listed["std"]["version"] == "0.1.0"


def test_surveysim_plugins_shows_an_out_of_tree_plugin(runner, satisfaction_cli_plugins):
    from surveysim_core.cli import build_cli

    result = runner.invoke(build_cli(), ["plugins"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    at = lines.index("satisfaction-plugin")  # no version: registered in the test
    assert lines[at + 1] == "  hooks: register_surveys"


class CommandPlugin:
    @hookimpl
    def register_commands(self, cli):
        @cli.command(name="hello-test")
        @click.argument("who")
        def hello(who):
            """Say hello."""
            click.echo(f"hello {who}")


def test_plugin_adds_a_command(runner, global_plugins):
    from surveysim_core.cli import build_cli

    global_plugins.register(CommandPlugin(), "command-plugin")
    group = build_cli()
    try:
        result = runner.invoke(group, ["hello-test", "Ada"])
        assert result.exit_code == 0, result.output
        assert result.output == "hello Ada\n"
    finally:
        group.commands.pop("hello-test", None)
        global_plugins.unregister("command-plugin")
