"""Ablation grids: a `grid:` section (a base experiment and the values of some dotted method keys) expanded into
named experiments, one per combination of values, which share every common stage like any other experiments.

Names (`point_name`): the base's name, then for every varied key, in the order written, `__<label>-<value>`.
The label is the key's last part (`gmp.k` → `k`), or the whole key with dots as underscores where two varied
keys end alike (`stage1.train.lr`, `stage2.train.lr` → `stage1_train_lr`, `stage2_train_lr`). A value is written
as: a list, its items joined by `-` (`[64, 512]` → `64-512`); a number in its shortest form with `.` as `p` and a
leading minus as `m` (`0.5` → `0p5`, `1.0` → `1`, `-2` → `m2`, `1e-05` → `1em05`); true/false/null as
`true`/`false`/`none`; text with every run of characters other than letters, digits, `_` and `-` as `_`. So
`gmp.k: [[64], [64, 512]]` × `mtl.gender_weight: [0.0, 1.0]` on base gmp_tl gives gmp_tl__k-64__gender_weight-0,
gmp_tl__k-64__gender_weight-1, gmp_tl__k-64-512__gender_weight-0 and gmp_tl__k-64-512__gender_weight-1.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import ConfigError

METHOD_ROOTS = ("seed", "backbone", "gmp", "kmeans", "train", "mtl", "stage1", "stage2")


@dataclass(frozen=True)
class GridPoint:
    """One experiment of a grid: its name, the value of every varied key, and its `experiments:` override."""

    name: str
    values: dict = field(hash=False)  # dotted key → value, in the grid's key order
    override: dict = field(hash=False)


def grid_base(grid: Mapping, experiments: Mapping) -> str:
    """The experiment the grid varies: `grid.base`, or the first experiment."""
    base = grid.get("base") or next(iter(experiments))
    if base not in experiments:
        known = ", ".join(experiments)
        raise ConfigError(f"config key 'grid.base': no experiment named '{base}' (experiments: {known})")
    return base


def grid_points(grid: Mapping, experiments: Mapping) -> list[GridPoint]:
    """Every combination of the varied values (the first key varying slowest), named by `point_name`, each with
    the base's override and the varied keys set."""
    base = grid_base(grid, experiments)
    vary = grid["vary"]
    for key, values in vary.items():
        _check_key(key, values)
    labels = key_labels(list(vary))
    points, seen = [], {}
    for combination in itertools.product(*vary.values()):
        values = dict(zip(vary, combination, strict=True))
        name = point_name(base, labels, values)
        if name in seen:
            raise ConfigError(
                f"config key 'grid.vary': the values {seen[name]} and {values} give the same experiment name "
                f"'{name}'; give each varied value a distinct written form"
            )
        seen[name] = values
        override = with_values(experiments[base] or {}, values)
        points.append(GridPoint(name, values, override))
    return points


def _check_key(key: str, values) -> None:
    root = key.split(".")[0]
    if root not in METHOD_ROOTS or not re.fullmatch(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*", key):
        raise ConfigError(
            f"config key 'grid.vary.{key}': a grid varies dotted method keys under {', '.join(METHOD_ROOTS)} "
            "(e.g. gmp.k, mtl.gender_weight, stage2.train.lr)"
        )
    if not isinstance(values, list) or not values:
        raise ConfigError(f"config key 'grid.vary.{key}': give a non-empty list of the values to try")
    for i, value in enumerate(values):
        if isinstance(value, dict):
            raise ConfigError(
                f"config key 'grid.vary.{key}[{i}]': a mapping cannot be varied as one value; vary its keys "
                f"(e.g. {key}.<name>) instead"
            )


def key_labels(keys: list[str]) -> dict[str, str]:
    """The name label of every varied key: its last part, or the whole key where two keys end alike."""
    last = [key.split(".")[-1] for key in keys]
    return {key: end if last.count(end) == 1 else key.replace(".", "_") for key, end in zip(keys, last, strict=True)}


def point_name(base: str, labels: Mapping[str, str], values: Mapping) -> str:
    """The experiment name of one grid point (rule in the module docstring)."""
    return base + "".join(f"__{labels[key]}-{written_value(value)}" for key, value in values.items())


def written_value(value) -> str:
    """A value as it appears in a grid point's name: filesystem-safe, readable."""
    if isinstance(value, list):
        return "-".join(written_value(item) for item in value)
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        text = format(value, "g")
        return ("m" + text[1:] if text.startswith("-") else text).replace(".", "p").replace("-", "m").replace("+", "")
    return re.sub(r"[^A-Za-z0-9_-]+", "_", str(value)).strip("_") or "empty"


def shown_value(value) -> str:
    """A varied value as a table cell: lists as JSON (`[64, 512]`), scalars as written."""
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def with_values(override: Mapping, values: Mapping) -> dict:
    """A copy of `override` with each dotted key set (nested mappings created as needed)."""
    merged = json.loads(json.dumps(override))
    for key, value in values.items():
        node = merged
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[leaf] = json.loads(json.dumps(value))
    return merged
