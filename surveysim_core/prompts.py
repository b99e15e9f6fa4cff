"""Prompt rendering: Jinja templates in a sandbox, with StrictUndefined.

Templates come from three places, later ones overriding earlier ones: the defaults shipped in
``templates/``, templates registered by plugins (``register_templates``), and the survey's own
``templates:`` section.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from surveysim_core.errors import ConfigError


@cache
def default_templates() -> dict[str, str]:
    """The templates shipped with the core (``templates/*.j2``), by name without suffix."""
    try:  # installed: templates/ is packaged as surveysim_core.templates
        folder = resources.files("surveysim_core.templates")
    except ModuleNotFoundError:  # a source checkout on sys.path
        folder = Path(__file__).resolve().parent.parent / "templates"
    return {
        item.name.removesuffix(".j2"): item.read_text(encoding="utf-8")
        for item in folder.iterdir()
        if item.name.endswith(".j2")
    }


def render_demographics(
    respondent: Mapping[str, Any], labels: Mapping[str, str] | None = None
) -> str:
    """Demographics as the paper's brace list: ``{age: 18-25, gender: Man}``.

    Multi-select values are written as a bracketed list: ``household: [My spouse, My children]``.
    """
    labels = labels or {}
    parts = []
    for name, value in respondent.items():
        if isinstance(value, (tuple, list)):
            value = "[" + ", ".join(map(str, value)) + "]"
        parts.append(f"{labels.get(name) or name}: {value}")
    return "{" + ", ".join(parts) + "}"


def render_demographics_compact(
    respondent: Mapping[str, Any], labels: Mapping[str, str] | None = None
) -> str:
    """Demographics as one short list: ``age: 18-25; gender: Man; household: spouse, children``."""
    labels = labels or {}
    parts = []
    for name, value in respondent.items():
        if isinstance(value, (tuple, list)):
            value = ", ".join(map(str, value))
        parts.append(f"{labels.get(name) or name}: {value}")
    return "; ".join(parts)


class PromptRenderer:
    """Renders named templates in a sandboxed Jinja environment with StrictUndefined."""

    def __init__(self, templates: Mapping[str, str], source: str = "templates"):
        self.source = source
        self.env = SandboxedEnvironment(
            loader=jinja2.DictLoader(dict(templates)),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["demographics"] = render_demographics
        self.env.filters["demographics_compact"] = render_demographics_compact
        self._compiled: dict[str, jinja2.Template] = {}

    def template(self, name: str) -> jinja2.Template:
        if name not in self._compiled:
            try:
                self._compiled[name] = self.env.get_template(name)
            except jinja2.TemplateNotFound:
                known = ", ".join(sorted(self.env.loader.list_templates()))  # type: ignore[union-attr]
                raise ConfigError(f"{self.source}: no template {name!r}; known: {known}") from None
            except jinja2.TemplateSyntaxError as exc:
                raise ConfigError(
                    f"{self.source}: template {name!r} line {exc.lineno}: {exc.message}"
                ) from None
        return self._compiled[name]

    # ``name`` is positional-only so that templates may use a variable called ``name``
    def render(self, name: str, /, **context: Any) -> str:
        try:
            text = self.template(name).render(**context)
        except jinja2.UndefinedError as exc:
            raise ConfigError(f"{self.source}: template {name!r}: {exc.message}") from None
        except jinja2.exceptions.SecurityError as exc:
            raise ConfigError(f"{self.source}: template {name!r} is unsafe: {exc}") from None
        except Exception as exc:  # a runtime error inside the template: 1/0, "a" + 1, ...
            raise ConfigError(
                f"{self.source}: template {name!r} failed: {type(exc).__name__}: {exc}"
            ) from None
        return " ".join(text.split())  # templates wrap lines for readability; prompts are one line
