"""Config validation against the JSON schema, defaults, and per-experiment settings.

The Snakefile calls `validate_config` once at start-up; scripts receive the resolved
per-experiment settings as rule params. Every failure is a `ConfigError` naming the key.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .errors import ConfigError
from .grid import grid_base, grid_points, with_values
from .schema import load_schema
from .settings import GmpHead

METHOD_KEYS = ("seed", "backbone", "gmp", "kmeans", "train", "mtl", "stage1", "stage2")
STAGES = ("mtl", "stage1", "stage2")
# Runtime settings in their old places (before the `runtime:` section): where each one lives now.
MOVED_TO_RUNTIME = {
    ("device",): "device",
    ("precision",): "precision",
    ("threads",): "threads",
    ("log_every_s",): "log_every_s",
    ("keep_features",): "keep_features",
    ("features", "batch_seconds"): "extract_batch_seconds",
    ("kmeans", "chunk_frames"): "kmeans_chunk_frames",
    ("train", "eval_batch_seconds"): "eval_batch_seconds",
    ("train", "checkpoint_minutes"): "checkpoint_minutes",
    ("train", "loader_workers"): "loader_workers",
    ("corpus", "check_full_release"): "check_full_release",
}
# The demo's tiny HuBERT: its hidden size must split into these (positional convolution groups, heads).
DEMO_POS_CONV_GROUPS, DEMO_ATTENTION_HEADS = 16, 4


def _with_defaults(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def _key(path, prefix: str = "") -> str:
    parts = [prefix] if prefix else []
    for item in path:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1] if parts else ''}[{item}]"]
        else:
            parts.append(str(item))
    return ".".join(parts) or "<top level>"


def _describe(error: jsonschema.ValidationError, prefix: str) -> str:
    key = _key(error.absolute_path, prefix)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        where = f"under '{key}'" if error.absolute_path or prefix else "at the top level"
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"config: unknown key {', '.join(repr(u) for u in unknown)} {where}{hint}"
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        full = f"{key}.{missing}" if key != "<top level>" else missing
        return f"config: required key '{full}' is missing"
    value = error.instance
    return f"config key '{key}': {value!r} is invalid ({error.message})"


def _validate(instance: dict, schema: dict, prefix: str = "") -> dict:
    filled = copy.deepcopy(instance)
    validator = _Validator(schema)
    errors = sorted(validator.iter_errors(filled), key=lambda e: (len(e.absolute_path), list(e.absolute_path)))
    if errors:
        raise ConfigError(_describe(errors[0], prefix))
    return filled


def deep_merge(base: dict, override: dict) -> dict:
    """A copy of `base` with `override` merged in, recursively for nested dicts."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def validate_config(config: dict, schema: dict | None = None) -> dict:
    """Validate `config`, fill defaults, check cross-key consistency; return the filled copy."""
    schema = schema or load_schema()
    if not isinstance(config, dict):
        raise ConfigError("config: the config file must be a mapping of keys to values")
    check_moved_keys(config)
    filled = _validate(config, schema)
    _check_corpus(filled["corpus"], filled["folds"], filled["demo"])
    _check_demo(filled["demo"])
    if filled.get("grid"):
        filled["experiments"] = expand_grid(filled, schema)
    if filled.get("compare_to") and filled["compare_to"] not in filled["experiments"]:
        raise ConfigError(
            f"config key 'compare_to': no experiment named '{filled['compare_to']}' "
            f"(experiments: {', '.join(filled['experiments'])})"
        )
    unknown = sorted(set(filled["deploy"] if isinstance(filled["deploy"], list) else []) - set(filled["experiments"]))
    if unknown:
        raise ConfigError(
            f"config key 'deploy' names {unknown}, which are not experiments ({list(filled['experiments'])})"
        )
    for name in filled["experiments"]:
        experiment_settings(filled, name, schema)
    return filled


GRID_PROBE = "<grid>"  # the name under which a single varied value is validated


def expand_grid(config: dict, schema: dict | None = None) -> dict:
    """`experiments` with one experiment per point of `config['grid']` added after the written ones (`gmptl.grid`).

    Each varied value is validated on its own first, so an error names it (`grid.vary.<key>[i]`). A point whose
    name is already an experiment must have the same settings (a config expanded before expands the same).
    """
    experiments = dict(config["experiments"])
    points = grid_points(config["grid"], experiments)
    base_override = experiments[grid_base(config["grid"], experiments)] or {}
    for key, values in config["grid"]["vary"].items():
        for i, value in enumerate(values):
            probe = {**config, "experiments": {GRID_PROBE: with_values(base_override, {key: value})}}
            try:
                experiment_settings(probe, GRID_PROBE, schema)
            except ConfigError as error:
                reason = str(error).replace(f"experiments.{GRID_PROBE}.", "").removeprefix("config: ")
                raise ConfigError(f"config key 'grid.vary.{key}[{i}]' ({value!r}): {reason}") from None
    for point in points:
        if point.name in experiments and experiments[point.name] != point.override:
            raise ConfigError(
                f"config key 'grid': its experiment '{point.name}' is also written under experiments: with other "
                "settings; rename that experiment"
            )
        experiments[point.name] = point.override
    return experiments


def grid_experiments(config: dict) -> list:
    """The grid's points (`gmptl.grid.GridPoint`) of a validated config; empty without a grid."""
    if not config.get("grid"):
        return []
    return grid_points(config["grid"], config["experiments"])


def _moved_keys(values: dict, prefix: str) -> list[tuple[str, str]]:
    """(old key, runtime key) of every runtime setting written in its old place under `values`."""
    found = []
    for path, new in MOVED_TO_RUNTIME.items():
        node = values
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and path[-1] in node:
            found.append((prefix + ".".join(path), new))
    for stage in STAGES:  # train keys also under <stage>.train
        stage_train = (values.get(stage) or {}).get("train") if isinstance(values.get(stage), dict) else None
        for (_, key), new in ((p, n) for p, n in MOVED_TO_RUNTIME.items() if p[0] == "train"):
            if isinstance(stage_train, dict) and key in stage_train:
                found.append((f"{prefix}{stage}.train.{key}", new))
    return found


def check_moved_keys(config: dict) -> None:
    """A runtime setting in its old place (top level, a result section, an experiment) is a config error
    naming its key under `runtime:`; runtime settings are never part of a result section or an experiment."""
    found = _moved_keys(config, "")
    for name, override in (config.get("experiments") or {}).items():
        if isinstance(override, dict):
            found += _moved_keys(override, f"experiments.{name}.")
            if "runtime" in override:
                raise ConfigError(
                    f"config key 'experiments.{name}.runtime': runtime settings cannot change a result and are "
                    "shared by every experiment; set them in the top-level runtime: section"
                )
    if isinstance(config.get("features"), dict) and not config["features"]:
        raise ConfigError("config key 'features' is gone: its batch_seconds is now runtime.extract_batch_seconds")
    if found:
        old, new = found[0]
        raise ConfigError(
            f"config key '{old}' is a runtime setting (it cannot change a result, so it is never part of a stage "
            f"or an experiment); set 'runtime.{new}' instead"
        )


def _check_demo(demo: dict) -> None:
    if demo["min_duration_s"] > demo["max_duration_s"]:
        raise ConfigError("config key 'demo.min_duration_s' is larger than 'demo.max_duration_s'")
    width = demo["hidden_size"]
    for parts, what in ((DEMO_POS_CONV_GROUPS, "positional-convolution groups"), (DEMO_ATTENTION_HEADS, "heads")):
        if width % parts:
            raise ConfigError(
                f"config key 'demo.hidden_size': {width} cannot be split into the tiny HuBERT's {parts} {what}; "
                f"use a multiple of {DEMO_POS_CONV_GROUPS} (e.g. 32 or 64)"
            )


def _check_corpus(corpus: dict, folds: dict | None = None, demo: dict | None = None) -> None:
    """Cross-key checks of `corpus` (and of `folds` / `demo` when given); resolves `corpus.label_map`.

    A null label_map becomes the format's default map restricted to corpus.classes, so every rule
    sees the map that is used.
    """
    from .corpora.labels import LABEL_VOCABULARY, resolve_label_map

    corpus_format = corpus.get("format", "iemocap")
    corpus["label_map"] = resolve_label_map(corpus_format, corpus.get("label_map"), corpus["classes"])
    classes = corpus["classes"]
    unknown = sorted({v for v in corpus["label_map"].values() if v not in classes})
    if unknown:
        raise ConfigError(f"config key 'corpus.label_map' maps to {unknown}, which are not in corpus.classes {classes}")
    unused = [c for c in classes if c not in corpus["label_map"].values()]
    if unused:
        raise ConfigError(
            f"config key 'corpus.classes': no label in corpus.label_map maps to {unused} "
            f"(the default map of format {corpus_format} has none; give corpus.label_map)"
        )
    vocabulary = LABEL_VOCABULARY.get(corpus_format)
    if vocabulary is not None:
        reachable = {name for raw, name in corpus["label_map"].items() if raw in vocabulary}
        unreachable = [c for c in classes if c not in reachable]
        if unreachable:
            raise ConfigError(
                f"config key 'corpus.label_map': no {corpus_format} label maps to {unreachable} "
                f"(its labels: {sorted(vocabulary)}); leave corpus.label_map unset for the format's default map, "
                "or map its labels"
            )
    only_for = {"table": "table", "columns": "table", "subset": "iemocap", "include_song": "ravdess"}
    only_for["sessions"] = "iemocap"
    defaults = {"table": None, "columns": {}, "subset": "all", "include_song": False, "sessions": [1, 2, 3, 4, 5]}
    for key, owner in only_for.items():
        if corpus_format != owner and corpus.get(key, defaults[key]) != defaults[key]:
            raise ConfigError(
                f"config key 'corpus.{key}' applies to corpus.format {owner} only (format: {corpus_format})"
            )
    if corpus_format == "table" and not corpus.get("table"):
        raise ConfigError("config key 'corpus.table' is missing; corpus.format table needs the table file (TSV or CSV)")
    protocol = (folds or {}).get("protocol", "session")
    if protocol == "predefined" and corpus_format not in ("msp_podcast", "table"):
        raise ConfigError(
            f"config key 'folds.protocol': predefined needs a corpus with its own split "
            f"(msp_podcast, or a table with a split column); corpus.format is {corpus_format}"
        )
    if corpus_format == "msp_podcast" and protocol in ("session", "speaker"):
        raise ConfigError(
            f"config key 'folds.protocol': {protocol} would make one fold per MSP-Podcast "
            f"{'podcast' if protocol == 'session' else 'speaker'}; use predefined or kfold"
        )
    if demo and demo.get("enabled") and demo.get("format", "iemocap") != corpus_format:
        raise ConfigError(
            f"config key 'demo.format' is {demo.get('format', 'iemocap')} but corpus.format is {corpus_format}; "
            "the demo corpus must be written in the format that is read"
        )


def experiment_settings(config: dict, name: str, schema: dict | None = None) -> dict:
    """The full method settings of experiment `name`: top-level method keys with its overrides merged.

    Each stage's `train` is resolved too: `train` defaults with `<stage>.train` merged over them.
    """
    schema = schema or load_schema()
    if name not in config["experiments"]:
        raise ConfigError(f"config key 'experiments': no experiment named '{name}'")
    base = {key: config[key] for key in METHOD_KEYS}
    merged = deep_merge(base, config["experiments"][name] or {})
    method_schema = {
        "$defs": schema["$defs"],
        "type": "object",
        "properties": {key: schema["properties"][key] for key in METHOD_KEYS},
    }
    settings = _validate(merged, method_schema, prefix=f"experiments.{name}")
    train_schema = {"$defs": schema["$defs"], **schema["$defs"]["train"]}
    for stage in STAGES:
        stage_train = deep_merge(settings["train"], settings[stage].get("train", {}))
        settings[stage]["train"] = _validate(stage_train, train_schema, prefix=f"experiments.{name}.{stage}.train")
    _check_loss_weights(settings, name)
    _check_masked_loss(settings, name)
    return settings


def _check_masked_loss(settings: dict, name: str) -> None:
    stage1 = settings["stage1"]
    if stage1["loss_on"] == "masked" and stage1["mask_prob"] == 0:
        raise ConfigError(
            f"config key 'experiments.{name}.stage1.loss_on' is masked but stage1.mask_prob is 0: no frame would be "
            "masked, so no frame would carry a loss; set mask_prob > 0 or loss_on: all"
        )


def _check_loss_weights(settings: dict, name: str) -> None:
    heads = {head.name for head in GmpHead.grid(settings["gmp"]["layers"], settings["gmp"]["k"])}
    unknown = sorted(set(settings["stage1"]["loss_weights"]) - heads)
    if unknown:
        raise ConfigError(
            f"config key 'experiments.{name}.stage1.loss_weights' names {unknown}, "
            f"which are not GMP heads of this experiment ({sorted(heads)})"
        )


def deployed_experiments(config: dict) -> list[str]:
    """The experiments whose deploy model (trained on all data) is built."""
    deploy = config["deploy"]
    return list(config["experiments"]) if deploy is True else list(deploy or [])


def needs_gmp(settings: dict) -> bool:
    """Whether an experiment uses the GMP branch (mtl → features → k-means → stage 1)."""
    return settings["stage2"]["init"] == "stage1"


def load_yaml(path: str | Path) -> Any:
    """Read a YAML file (used by tests and tools; Snakemake reads config files itself)."""
    return yaml.safe_load(Path(path).read_text())
