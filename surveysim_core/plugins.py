"""Plugin manager: loads plugins from the ``surveysim`` entry-point group and collects registries.

Built-in plugins are ordinary plugins found through the same entry points as third-party ones.
A plugin registers an object by name, usually as a lazy ``"module:attr"`` path, and may declare
its options model beside it (``register(name, "pkg.heavy:Thing", options="pkg.options:Model")``)
so that validating a configuration and listing options never import the heavy module.
``SURVEYSIM_LOAD_PLUGINS=a,b`` loads only the named plugins; ``SURVEYSIM_BLOCK_PLUGINS=a,b``
blocks the named ones.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from surveysim_core import hookspecs
from surveysim_core.errors import PluginError

ENTRY_POINT_GROUP = "surveysim"

#: registry kind -> name of the hook that fills it
REGISTRY_HOOKS = {
    "surveys": "register_surveys",
    "templates": "register_templates",
    "answer_types": "register_answer_types",
    "parsers": "register_parsers",
    "decoders": "register_decoders",
    "samplers": "register_samplers",
    "losses": "register_losses",
    "metrics": "register_metrics",
    "backends": "register_backends",
    "baselines": "register_baselines",
    "data_formats": "register_data_formats",
}

#: registries whose string values are data (Jinja source text), never "module:attr" paths
TEXT_REGISTRIES = {"templates"}


class _Undeclared:
    """The ``options`` of a registration that did not declare them (read from the object)."""

    def __repr__(self) -> str:
        return "UNDECLARED"


UNDECLARED: Any = _Undeclared()


def _import_path(path: str, plugin: str, name: str) -> Any:
    """The object at ``"module:attr.attr"``; a missing module or attribute names the plugin."""
    module_name, _, attribute = path.partition(":")
    try:
        obj = importlib.import_module(module_name)
        for part in attribute.split(".") if attribute else []:
            obj = getattr(obj, part)
    except ImportError as exc:
        raise PluginError(
            f"plugin {plugin!r}: {name!r} needs {exc.name or module_name!r},"
            f" which is not installed ({exc}). Install the plugin's dependencies,"
            f" e.g. pip install -e plugins/<the plugin folder>"
        ) from exc
    except AttributeError as exc:
        raise PluginError(f"plugin {plugin!r}: {name!r} points at {path!r}: {exc}") from exc
    return obj


#: registries whose objects are classes (instantiated by the core); the others hold functions
CLASS_REGISTRIES = {"answer_types", "decoders", "samplers", "losses", "metrics", "backends",
                    "baselines"}  # fmt: skip


def check_registered(kind: str, name: str, obj: Any, plugin: str) -> None:
    """Reject an object that cannot be what ``kind`` holds, naming the plugin.

    A ``"module:attr"`` string is checked when it is imported (``Entry.load``).
    """
    from surveysim_core.survey import Survey

    def fail(expected: str) -> None:
        shown = f"{obj!r}"[:80]
        raise PluginError(
            f"plugin {plugin!r} registered {kind} {name!r} as {shown}"
            f" ({type(obj).__name__}); expected {expected}"
        )

    if kind in TEXT_REGISTRIES:
        if not isinstance(obj, str):
            fail("the template's Jinja source text")
    elif kind == "surveys":
        if not isinstance(obj, Survey):
            fail("a surveysim_core.survey.Survey")
    elif kind in CLASS_REGISTRIES:
        # a builtin such as print is callable but no class: rejected as well
        if not isinstance(obj, type):
            fail("a class")
    elif not callable(obj) or type(obj).__name__ == "builtin_function_or_method":
        fail("a function")


def _lazy_path(target: Any) -> bool:
    if not isinstance(target, str):
        return False
    module, sep, attribute = target.partition(":")
    parts = [*module.split("."), *(attribute.split(".") if attribute else [])]
    return bool(sep) and all(part.isidentifier() for part in parts)


@dataclass
class Entry:
    """One registered object, with the plugin that registered it."""

    name: str
    target: Any
    plugin: str
    lazy: bool = True  # whether a string target is a "module:attr" path to import
    #: the options model: a "module:attr" path or a class, None for "takes no options", or
    #: UNDECLARED (read ``Options`` from the object itself)
    options: Any = UNDECLARED
    kind: str = ""
    _resolved: Any = field(default=None, repr=False)

    @property
    def loaded(self) -> bool:
        return self._resolved is not None or not (isinstance(self.target, str) and self.lazy)

    def load(self) -> Any:
        """Return the object, importing it first if it was registered as ``"module:attr"``."""
        if self._resolved is None:
            target = self.target
            if isinstance(target, str) and self.lazy:
                target = _import_path(target, self.plugin, self.name)
            check_registered(self.kind, self.name, target, self.plugin)
            self._resolved = target
        return self._resolved

    def options_model(self) -> Any:
        """The object's pydantic options model (or None), importing as little as it can."""
        if self.options is UNDECLARED:
            return getattr(self.load(), "Options", None)
        if isinstance(self.options, str):
            return _import_path(self.options, self.plugin, self.name)
        return self.options

    def stand_in(self) -> Any:
        """A class that carries only ``Options``: what validating a configuration needs.

        Built from the declared options model, so that the object's own module (and torch or
        scikit-learn behind it) is not imported. Its instances do nothing.
        """
        doc = f"Options-only stand-in for {self.target} (plugin {self.plugin})."
        return type(
            self.name,
            (),
            {"Options": self.options_model(), "__doc__": doc, "__init__": _ignore_arguments},
        )


def _ignore_arguments(self: Any, *args: Any, **kwargs: Any) -> None:
    """The constructor of a stand-in: validation builds plugin objects and never uses them."""


class Registry:
    """Named objects of one kind (surveys, metrics, ...), filled by one registration hook."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        #: when set, ``get`` returns a stand-in for an object whose options are declared
        self.options_only = False

    def add(self, name: str, target: Any, plugin: str, options: Any = UNDECLARED) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin!r} registered a {self.kind} entry with no name")
        if name in self._entries:
            other = self._entries[name].plugin
            raise PluginError(
                f"{self.kind} {name!r} is registered by two plugins: {other!r} and {plugin!r};"
                f" block one with SURVEYSIM_BLOCK_PLUGINS={plugin}"
            )
        lazy = self.kind not in TEXT_REGISTRIES
        if lazy and isinstance(target, str):
            if not _lazy_path(target):
                raise PluginError(
                    f"plugin {plugin!r} registered {self.kind} {name!r} as {target!r};"
                    f" a string must be a 'module:attribute' path"
                )
        else:
            check_registered(self.kind, name, target, plugin)
        self._entries[name] = Entry(
            name, target, plugin, lazy=lazy, options=options, kind=self.kind
        )

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, name: str, where: str = "") -> Entry:
        if name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "none"
            at = f"{where}: " if where else ""
            # the singular: "losses" -> "loss", "surveys" -> "survey"
            one = self.kind[:-2] if self.kind.endswith("sses") else self.kind.removesuffix("s")
            raise PluginError(
                f"{at}unknown {one}"
                f" {name!r}; known: {known}. Is the plugin that provides it installed?"
            )
        return self._entries[name]

    def get(self, name: str, where: str = "") -> Any:
        """The object registered as ``name``; ``where`` names the config field for errors."""
        entry = self.entry(name, where)
        if self.options_only and entry.options is not UNDECLARED and not entry.loaded:
            return entry.stand_in()
        return entry.load()

    def entries(self) -> list[Entry]:
        """Every entry, by name; nothing is imported."""
        return [self._entries[name] for name in self]


@dataclass
class PluginInfo:
    name: str
    version: str
    hooks: list[str]
    overrides: list[str] = field(default_factory=list)  # core templates this plugin replaces


def _selected(env_value: str | None) -> set[str] | None:
    if env_value is None or not env_value.strip():
        return None
    return {part.strip() for part in env_value.split(",") if part.strip()}


class Plugins:
    """The loaded plugins and the registries they fill."""

    def __init__(self, load_entry_points: bool = True):
        self.pm = pluggy.PluginManager("surveysim")
        self.pm.add_hookspecs(hookspecs)
        self.versions: dict[str, str] = {}
        self._registries: dict[str, Registry] = {}
        self._options_only = False
        if load_entry_points:
            self.load_entry_points()

    # -- loading ---------------------------------------------------------------------------
    def load_entry_points(self) -> None:
        only = _selected(os.environ.get("SURVEYSIM_LOAD_PLUGINS"))
        blocked = _selected(os.environ.get("SURVEYSIM_BLOCK_PLUGINS")) or set()
        for name in blocked:
            self.pm.set_blocked(name)
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if only is not None and ep.name not in only:
                continue
            if self.pm.is_blocked(ep.name) or self.pm.has_plugin(ep.name):
                continue
            dist = getattr(ep, "dist", None)
            try:
                module = ep.load()
            except Exception as exc:  # a broken third-party plugin must say which one
                where = f" (package {dist.name} {dist.version})" if dist else ""
                raise PluginError(
                    f"plugin {ep.name!r}{where} failed to load from {ep.value!r}:"
                    f" {type(exc).__name__}: {exc}. Uninstall it or block it with"
                    f" SURVEYSIM_BLOCK_PLUGINS={ep.name}"
                ) from exc
            self.register(module, ep.name, version=dist.version if dist else "")
        self.check()

    def register(self, plugin: object, name: str, version: str = "") -> None:
        """Register a plugin object (module or instance) under ``name``."""
        if self.pm.has_plugin(name):
            raise PluginError(f"two plugins are named {name!r}")
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {name!r} is invalid: {exc}") from exc
        self.versions[name] = version
        self._registries.clear()

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self.versions.pop(name, None)
        self._registries.clear()

    def check(self) -> None:
        """Catch hook implementations whose names match no hook (a misspelt hook name)."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            plugin = getattr(exc, "plugin", None)
            name = self.pm.get_name(plugin) if plugin is not None else "?"
            raise PluginError(f"plugin {name!r}: {exc}") from exc

    # -- registries ------------------------------------------------------------------------
    def _call_each(self, hook_name: str, make_args: Callable[[str], dict[str, Any]]) -> None:
        caller = getattr(self.pm.hook, hook_name)
        # one implementation at a time, so that each registration is attributed to its plugin
        for impl in reversed(caller.get_hookimpls()):
            args = make_args(impl.plugin_name)
            kwargs = {key: args[key] for key in impl.argnames}
            try:
                impl.function(**kwargs)
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(
                    f"plugin {impl.plugin_name!r} failed in {hook_name}: {type(exc).__name__}: {exc}"
                ) from exc

    def registry(self, kind: str) -> Registry:
        if kind not in self._registries:
            registry = Registry(kind)

            def make_args(plugin_name: str) -> dict[str, Any]:
                def register(name: str, obj: Any, options: Any = UNDECLARED) -> None:
                    registry.add(name, obj, plugin_name, options)

                return {"register": register}

            self._call_each(REGISTRY_HOOKS[kind], make_args)
            registry.options_only = self._options_only
            self._registries[kind] = registry
        return self._registries[kind]

    @contextmanager
    def options_only(self) -> Iterator[Plugins]:
        """Within this block, registries hand out options-only stand-ins (see ``Entry.stand_in``)
        for objects whose plugin declared their options: validation without heavy imports."""
        self._options_only = True
        for registry in self._registries.values():
            registry.options_only = True
        try:
            yield self
        finally:
            self._options_only = False
            for registry in self._registries.values():
                registry.options_only = False

    def registrations(self) -> dict[str, dict[str, list[str]]]:
        """Plugin name -> registry kind -> the names it registered; imports no registered object."""
        out: dict[str, dict[str, list[str]]] = {}
        for kind in REGISTRY_HOOKS:
            for entry in self.registry(kind).entries():
                out.setdefault(entry.plugin, {}).setdefault(kind, []).append(entry.name)
        return out

    def find(self, name: str) -> list[tuple[str, Entry]]:
        """``(kind, entry)`` for every registry that holds ``name`` (``KIND:NAME`` picks one)."""
        kind, _, bare = name.rpartition(":")
        kinds = [kind] if kind else list(REGISTRY_HOOKS)
        unknown = [k for k in kinds if k not in REGISTRY_HOOKS]
        if unknown:
            raise PluginError(
                f"unknown registry {unknown[0]!r}; known: {', '.join(REGISTRY_HOOKS)}"
            )
        return [(k, self.registry(k).entry(bare)) for k in kinds if bare in self.registry(k)]

    def __getattr__(self, kind: str) -> Registry:
        if kind in REGISTRY_HOOKS:
            return self.registry(kind)
        raise AttributeError(kind)

    def add_commands(self, cli: Any, warn: Callable[[str], None] | None = None) -> None:
        """Let each plugin add its commands; a plugin that fails loses only its own commands
        (with a warning), so that ``--help`` and every other command keep working."""
        import sys

        warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr))
        for impl in reversed(self.pm.hook.register_commands.get_hookimpls()):
            before = dict(getattr(cli, "commands", {}))
            try:
                impl.function(**{key: cli for key in impl.argnames})
            except Exception as exc:
                if hasattr(cli, "commands"):  # drop what it added before failing
                    cli.commands.clear()
                    cli.commands.update(before)
                warn(
                    f"plugin {impl.plugin_name!r} failed in register_commands"
                    f" ({type(exc).__name__}: {exc}); its commands are disabled"
                )

    def template_overrides(self) -> list[tuple[str, str]]:
        """``(template, plugin)`` for each core template a plugin replaces."""
        from surveysim_core.prompts import default_templates

        core = default_templates()
        registry = self.templates
        return [(name, registry.entry(name).plugin) for name in registry if name in core]

    def write_reports(self, run: Any) -> None:
        self._call_each("surveysim_write_report", lambda plugin_name: {"run": run})

    def info(self) -> list[PluginInfo]:
        out = []
        for name, plugin in sorted(self.pm.list_name_plugin(), key=lambda item: item[0]):
            if self.pm.is_blocked(name):  # pluggy lists a blocked name with no plugin object
                continue
            hooks = sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or [])
            out.append(PluginInfo(name, self.versions.get(name, ""), hooks))
        try:
            overrides = self.template_overrides()
        except PluginError:  # a broken template registration is reported where it is used
            overrides = []
        for info in out:
            info.overrides = sorted(t for t, plugin in overrides if plugin == info.name)
        return out


_default: Plugins | None = None


def get_plugins() -> Plugins:
    """The process-wide plugin set, loaded from entry points on first use."""
    global _default
    if _default is None:
        _default = Plugins()
    return _default


def reset_plugins() -> None:
    """Forget the loaded plugins (tests use this after changing the environment)."""
    global _default
    _default = None
