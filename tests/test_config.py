"""Config validation: defaults, one sentence naming the key, experiments."""

from __future__ import annotations

import re

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


def test_readme_config_table_is_the_schema():
    from gmptl.schema import readme_table

    assert readme_table() in (ROOT / "README.md").read_text(), "regenerate it: python -m gmptl.schema"


@pytest.mark.parametrize(
    ("cls", "keys", "leave_out"),
    [
        ("TrainSettings", ("$defs", "train"), ()),
        ("KMeansSettings", ("$defs", "kmeans"), ()),
        ("MtlSettings", ("$defs", "mtl"), ("train",)),
        ("Stage1Settings", ("$defs", "stage1"), ("train", "init")),
        ("Stage2Settings", ("$defs", "stage2"), ("train", "init")),
        ("SpecAugment", ("$defs", "train", "specaugment"), ()),
    ],
)
def test_each_settings_type_has_exactly_the_fields_of_its_schema_section(cls, keys, leave_out):
    import dataclasses

    from gmptl import schema, settings

    fields = {field.name for field in dataclasses.fields(getattr(settings, cls))}
    assert fields == schema.properties(*keys) - set(leave_out)
    assert all(field.default is dataclasses.MISSING for field in dataclasses.fields(getattr(settings, cls)))


def test_runtime_settings_are_the_runtime_section_with_its_defaults():
    import dataclasses

    from gmptl import schema
    from gmptl.settings import RuntimeSettings

    defaults = {f.name: f.default for f in dataclasses.fields(RuntimeSettings) if f.name != "demo"}
    assert defaults == schema.defaults("runtime")
    config = validate_config({"corpus": {"root": "/x"}, "runtime": {"gpus": [0, 1], "checkpoint_minutes": 1}})
    runtime = RuntimeSettings.from_config(config, threads=3)
    assert (runtime.gpus, runtime.checkpoint_minutes, runtime.threads) == ((0, 1), 1, 3)


@pytest.mark.parametrize(
    ("config", "new_key"),
    [
        ({"stage1": {"train": {"checkpoint_minutes": 1}}}, "runtime.checkpoint_minutes"),
        ({"train": {"loader_workers": 0}}, "runtime.loader_workers"),
        ({"device": "cpu"}, "runtime.device"),
        ({"threads": 2}, "runtime.threads"),
        ({"features": {"batch_seconds": 10}}, "runtime.extract_batch_seconds"),
        ({"kmeans": {"chunk_frames": 10}}, "runtime.kmeans_chunk_frames"),
        ({"corpus": {"root": "/x", "check_full_release": False}}, "runtime.check_full_release"),
        ({"experiments": {"a": {"stage2": {"train": {"eval_batch_seconds": 3}}}}}, "runtime.eval_batch_seconds"),
        ({"experiments": {"a": {"keep_features": False}}}, "runtime.keep_features"),
    ],
)
def test_a_runtime_key_in_its_old_place_names_its_new_key(config, new_key):
    with pytest.raises(ConfigError, match=rf"set '{re.escape(new_key)}' instead"):
        validate_config({"corpus": {"root": "/x"}, **config})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"seed": -1}, "'seed'"),
        ({"seeds": [-1]}, "'seeds[0]'"),
        ({"experiments": {"a": {"seed": -3}}}, "experiments.a"),
        ({"demo": {"hidden_size": 10}}, "demo.hidden_size"),
        (
            {"experiments": {"a": {"stage1": {"mask_prob": 0}}}},
            "config key 'experiments.a.stage1.loss_on' is masked but stage1.mask_prob is 0",
        ),
    ],
)
def test_values_that_cannot_work_are_config_errors(config, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config({"corpus": {"root": "/x"}, **config})


def test_a_crop_shorter_than_the_receptive_field_is_a_config_error(tiny_backbone):
    from gmptl.preflight import check_config

    config = validate_config(
        {"corpus": {"root": "/x"}, "backbone": tiny_backbone, "gmp": {"layers": [1]}, "train": {"max_crop_s": 0.001}}
    )
    with pytest.raises(ConfigError, match=r"'\w+.train.max_crop_s'.*receptive field.*400 samples"):
        check_config(config)
    ok = validate_config({"corpus": {"root": "/x"}, "backbone": tiny_backbone, "gmp": {"layers": [1]}})
    check_config(ok)


def test_a_label_map_of_another_corpus_is_a_config_error_before_any_job():
    iemocap_map = {"neu": "neu", "hap": "hap", "exc": "hap", "ang": "ang", "sad": "sad"}
    with pytest.raises(ConfigError, match=r"no ravdess label maps to \['neu', 'hap', 'ang'\]"):
        validate_config({"corpus": {"root": "/x", "format": "ravdess", "label_map": iemocap_map}})


def test_sessions_apply_to_iemocap_only():
    with pytest.raises(ConfigError, match="'corpus.sessions' applies to corpus.format iemocap only"):
        validate_config({"corpus": {"root": "/x", "format": "emodb", "sessions": [1, 2]}})


def test_runtime_settings_are_never_an_experiment_override():
    with pytest.raises(ConfigError, match=r"'experiments.a.runtime': runtime settings .* top-level runtime: section"):
        validate_config({"corpus": {"root": "/x"}, "experiments": {"a": {"runtime": {"threads": 2}}}})


def test_the_recipe_param_does_not_depend_on_the_order_of_keys_in_a_yaml_file():
    from gmptl.recipes import experiment_stages

    def stages(corpus):
        config = validate_config({"corpus": corpus})
        return experiment_stages(config, experiment_settings(config, "gmp_tl"))

    one = stages({"root": "/x", "classes": ["neu", "hap", "ang", "sad"], "on_missing_audio": "error"})
    other = stages({"on_missing_audio": "error", "classes": ["neu", "hap", "ang", "sad"], "root": "/x"})
    assert all(repr(one[kind].recipe) == repr(other[kind].recipe) for kind in one)  # what Snakemake compares
