"""Config validation: defaults, one sentence naming the key, experiments."""

from __future__ import annotations

import pytest
from conftest import ROOT

from gmptl.config import experiment_settings, load_yaml, needs_gmp, validate_config
from gmptl.errors import ConfigError


def base(**extra):
    return {"corpus": {"root": "/data/IEMOCAP_full_release"}, **extra}


def test_defaults_are_filled():
    config = validate_config(base())
    assert config["corpus"]["sessions"] == [1, 2, 3, 4, 5]
    assert config["corpus"]["label_map"]["exc"] == "hap"
    assert config["folds"]["validation"] == "speaker"
    assert set(config["experiments"]) == {"gmp_tl", "finetune"}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "required key 'corpus' is missing"),
        ({"corpus": {}}, "required key 'corpus.root' is missing"),
        (base(colour="red"), "unknown key 'colour' at the top level"),
        ({"corpus": {"root": "x", "rooot": "y"}}, "unknown key 'rooot' under 'corpus'"),
        (base(gmp={"k": [64, "many"]}), r"config key 'gmp.k\[1\]': 'many' is invalid"),
        (base(seed="x"), "config key 'seed'"),
        (base(folds={"validation": "session"}), "config key 'folds.validation'"),
        (base(stage2={"classifier": "svm"}), "config key 'stage2.classifier'"),
        (base(experiments={"a": {"stage2": {"inti": "mtl"}}}), "unknown key 'inti' under 'experiments.a.stage2'"),
        (base(experiments={"a": {"mtl": {"train": {"lr": "fast"}}}}), "config key 'experiments.a.mtl.train.lr'"),
        (base(experiments={"a": {"mtl": {"train": {"lrr": 1}}}}), "unknown key 'lrr' under 'experiments.a.mtl.train'"),
        (base(corpus={"root": "x", "label_map": {"neu": "calm"}}), "corpus.label_map"),
        (base(stage1={"loss_weights": {"L3_k7": 2.0}}), "loss_weights"),
    ],
)
def test_bad_config_names_the_key(config, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_experiment_overrides_merge_over_defaults():
    config = validate_config(
        base(
            train={"lr": 1e-4},
            experiments={"no_gender": {"mtl": {"gender_weight": 0}}, "finetune": {"stage2": {"init": "pretrained"}}},
        )
    )
    settings = experiment_settings(config, "no_gender")
    assert settings["mtl"]["gender_weight"] == 0
    assert settings["stage2"]["train"]["lr"] == 1e-4
    assert needs_gmp(settings) and not needs_gmp(experiment_settings(config, "finetune"))


def test_stage_train_overrides_only_their_stage():
    config = validate_config(base(stage1={"train": {"epochs": 3}}))
    settings = experiment_settings(config, "gmp_tl")
    assert settings["stage1"]["train"]["epochs"] == 3
    assert settings["stage2"]["train"]["epochs"] == 20


@pytest.mark.parametrize("files", [["config.yaml"], ["config.yaml", "demo.yaml"]])
def test_shipped_configs_are_valid(files):
    from gmptl.config import deep_merge

    merged = {}
    for name in files:
        merged = deep_merge(merged, load_yaml(ROOT / name))
    validate_config(merged)


def test_every_schema_property_has_a_clean_description_and_a_readme_row():
    """Unquoted commas in a YAML flow mapping silently cut a description into stray keys; the README lists every key."""
    from conftest import ROOT

    from gmptl.config import load_schema

    readme = (ROOT / "README.md").read_text()
    keywords = {"type", "default", "description", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}
    keywords |= {"enum", "items", "minItems", "uniqueItems", "properties", "additionalProperties", "required", "$ref"}
    keywords |= {"pattern", "minLength", "oneOf", "propertyNames", "minProperties"}
    schema = load_schema()

    def leaves(prefix, properties):
        for name, sub in properties.items():
            stray = [k for k in sub if k not in keywords]
            assert not stray, f"{prefix}{name}: stray schema keys {stray} (quote the description)"
            ref = sub.get("$ref", "").split("/")[-1]
            if ref in schema["$defs"] and ref != "train_override":
                yield from leaves(f"{prefix}{name}.", schema["$defs"][ref]["properties"])
            elif "properties" in sub and name != "columns":
                yield from leaves(f"{prefix}{name}.", sub["properties"])
            else:
                yield f"{prefix}{name}"

    missing = [key for key in leaves("", schema["properties"]) if f"`{key}`" not in readme]
    assert not missing, f"config keys without a README row: {missing}"
