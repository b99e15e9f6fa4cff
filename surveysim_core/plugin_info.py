"""What ``surveysim plugins`` prints: each plugin's registrations, and one object's options.

Listing imports no registered object (registrations are mostly lazy ``"module:attr"`` paths);
``--options`` imports only the options model when the plugin declared it at registration.
"""

from __future__ import annotations

import json
from typing import Any

from surveysim_core.errors import PluginError
from surveysim_core.plugins import REGISTRY_HOOKS, Entry, Plugins


def list_plugins(plugins: Plugins, as_json: bool = False) -> str:
    """Every loaded plugin: version, hooks, and the names it registers by kind."""
    registered = plugins.registrations()
    rows: list[dict[str, Any]] = [
        {
            "name": p.name,
            "version": p.version,
            "hooks": p.hooks,
            "registers": registered.get(p.name, {}),
            "overrides": p.overrides,  # core templates this plugin replaces
        }
        for p in plugins.info()
    ]
    if as_json:
        return json.dumps(rows, indent=2)
    lines = []
    for row in rows:
        lines.append(f"{row['name']} {row['version']}".rstrip())
        lines.append(f"  hooks: {', '.join(row['hooks']) or '-'}")
        for kind in REGISTRY_HOOKS:  # in the registries' order, not alphabetical
            names = row["registers"].get(kind)
            if names:
                lines.append(f"  {kind}: {', '.join(names)}")
        if row["overrides"]:
            lines.append(f"  overrides core template(s): {', '.join(row['overrides'])}")
    return "\n".join(lines)


def _singular(kind: str) -> str:
    """The singular of a registry kind: losses -> loss, baselines -> baseline."""
    return kind[:-2] if kind.endswith("sses") else kind.removesuffix("s")


def _target(entry: Entry) -> str:
    if isinstance(entry.target, str) and entry.lazy:
        return entry.target
    obj = entry.target
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', type(obj).__name__)}"


def _type_of(prop: dict[str, Any]) -> str:
    """A short type for one JSON-schema property: 'integer', 'list[number]', 'a | b', ..."""
    if "enum" in prop:
        return " | ".join(json.dumps(v) for v in prop["enum"])
    if "const" in prop:
        return json.dumps(prop["const"])
    if "anyOf" in prop:
        return " | ".join(_type_of(p) for p in prop["anyOf"])
    if prop.get("type") == "array":
        return f"list[{_type_of(prop.get('items', {}))}]"
    if "$ref" in prop:
        return prop["$ref"].rsplit("/", 1)[-1]
    return str(prop.get("type", "any"))


def _option_lines(schema: dict[str, Any]) -> list[str]:
    lines = []
    required = set(schema.get("required", []))
    for name, prop in schema.get("properties", {}).items():
        default = "required" if name in required else f"default {json.dumps(prop.get('default'))}"
        lines.append(f"  {name} ({_type_of(prop)}; {default})")
        if prop.get("description"):
            lines.append(f"      {prop['description']}")
    return lines


def describe_options(plugins: Plugins, name: str, as_json: bool = False) -> str:
    """The options of every object registered as ``name`` (``KIND:NAME`` picks one registry),
    as a readable list followed by their JSON schema (pydantic ``model_json_schema``)."""
    found = plugins.find(name)
    if not found:
        raise PluginError(
            f"no plugin registers an object named {name!r}; `surveysim plugins` lists them"
        )
    described: list[dict[str, Any]] = []
    for kind, entry in found:
        model = entry.options_model()
        schema = model.model_json_schema() if model is not None else None
        described.append(
            {"kind": kind, "name": entry.name, "plugin": entry.plugin, "target": _target(entry),
             "schema": schema}
        )  # fmt: skip
    if as_json:
        return json.dumps(described, indent=2)
    lines = []
    for item in described:
        lines.append(
            f"{_singular(item['kind'])} {item['name']!r} (plugin {item['plugin']}): {item['target']}"
        )
        if item["schema"] is None:
            lines.append("  takes no options")
            continue
        lines += _option_lines(item["schema"])
        lines.append("JSON schema:")
        lines.append(json.dumps(item["schema"], indent=2))
    return "\n".join(lines)
