"""Every hook in surveysim_core.hookspecs has a heading ``## hook_name(arg, ...)`` in docs/hooks.md
(datasette checks its hook documentation the same way)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from surveysim_core import hookspecs

DOCS = Path(__file__).resolve().parents[1] / "docs" / "hooks.md"
HEADING = re.compile(r"^## (\w+)\((.*)\)\s*$", re.MULTILINE)


def declared_hooks() -> dict[str, list[str]]:
    """Hook name -> argument names, from the functions marked as hook specifications."""
    marker = f"{hookspecs.hookspec.project_name}_spec"
    return {
        name: list(inspect.signature(fn).parameters)
        for name, fn in vars(hookspecs).items()
        if inspect.isfunction(fn) and hasattr(fn, marker)
    }


def documented_hooks() -> dict[str, list[str]]:
    text = DOCS.read_text(encoding="utf-8")
    return {
        name: [a.strip() for a in args.split(",") if a.strip()]
        for name, args in HEADING.findall(text)
    }


def test_hookspecs_are_found():
    hooks = declared_hooks()
    assert "register_surveys" in hooks and "surveysim_write_report" in hooks
    assert hooks["register_commands"] == ["cli"]


def test_every_hook_is_documented():
    assert DOCS.exists(), f"{DOCS} is missing"
    documented = documented_hooks()
    missing = sorted(set(declared_hooks()) - set(documented))
    assert not missing, f"hooks without a '## name(args)' heading in docs/hooks.md: {missing}"


def test_documented_hooks_exist_with_their_arguments():
    if not DOCS.exists():
        pytest.fail(f"{DOCS} is missing")
    declared = declared_hooks()
    documented = documented_hooks()
    stale = sorted(set(documented) - set(declared))
    assert not stale, f"docs/hooks.md documents hooks that do not exist: {stale}"
    for name, args in documented.items():
        assert args == declared[name], f"{name}: documented {args}, declared {declared[name]}"
