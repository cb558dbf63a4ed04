"""The config schema (workflow/schemas/config.schema.yaml): validation rules, descriptions and the only defaults.

Typed settings (`gmptl.settings`) take their defaults from here, so a default is written once.
"""

from __future__ import annotations

import functools
from pathlib import Path

import yaml

SCHEMA_PATH = Path(__file__).resolve().parent / "config.schema.yaml"  # package data; workflow/schemas/ links to it


@functools.cache
def _schema_text(path: str) -> str:
    return Path(path).read_text()


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    """The config schema as a (fresh) dict."""
    return yaml.safe_load(_schema_text(str(path)))


def section(*keys: str, schema: dict | None = None) -> dict:
    """The schema of one section, e.g. section('runtime') or section('$defs', 'train'); `$ref`s followed."""
    schema = schema or load_schema()
    node = schema
    for key in keys:
        node = node["properties"][key] if key in node.get("properties", {}) else node[key]
        while "$ref" in node:
            node = _resolve(schema, node["$ref"])
    return node


def _resolve(schema: dict, ref: str) -> dict:
    node = schema
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def defaults(*keys: str) -> dict:
    """The default of every property of a section that has one (e.g. defaults('runtime'))."""
    return {name: prop["default"] for name, prop in section(*keys)["properties"].items() if "default" in prop}


def properties(*keys: str) -> set[str]:
    """The property names of a section."""
    return set(section(*keys)["properties"])


def _cell(value) -> str:
    if value is None:
        return "None"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in value) + "]"
    if isinstance(value, dict):
        return ", ".join(value) if value else "{}"
    return str(value)


def _rows(prefix: str, props: dict, schema: dict):
    for name, prop in props.items():
        while "$ref" in prop and not prop["$ref"].endswith("train_override"):
            prop = {**_resolve(schema, prop["$ref"]), **{k: v for k, v in prop.items() if k != "$ref"}}
        key = f"{prefix}{name}"
        if prop.get("$ref", "").endswith("train_override"):
            yield key, "{}", "per-stage overrides of any `train.*` key"
        elif "properties" in prop and name != "columns":
            yield from _rows(f"{key}.", prop["properties"], schema)
        else:
            default = "(required)" if "default" not in prop else _cell(prop["default"])
            yield key, default, " ".join(str(prop.get("description", "")).split())


def readme_table(schema: dict | None = None) -> str:
    """The README's table of config keys (`python -m gmptl.schema` prints it)."""
    schema = schema or load_schema()
    lines = ["| key | default | meaning |", "|---|---|---|"]
    lines += [
        f"| `{key}` | {default} | {meaning} |" for key, default, meaning in _rows("", schema["properties"], schema)
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(readme_table())
