"""Ablation grids: expansion into named experiments, the naming rule, errors naming the key, the ablation table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT

from gmptl.ablation import ablation_page, ablation_table, plot_ablation
from gmptl.config import experiment_settings, grid_experiments, load_yaml, validate_config
from gmptl.errors import ConfigError
from gmptl.grid import GridPoint, key_labels, point_name, written_value


def config_with(grid: dict, experiments: dict | None = None) -> dict:
    config = load_yaml(ROOT / "config.yaml")
    config.update(load_yaml(ROOT / "demo.yaml"))
    config["grid"] = grid
    if experiments is not None:
        config["experiments"] = experiments
    return config


def test_a_grid_adds_one_experiment_per_combination_after_the_written_ones():
    grid = {"base": "gmp_tl", "vary": {"gmp.k": [[64], [64, 512]], "mtl.gender_weight": [0.0, 1.0]}}
    filled = validate_config(config_with(grid))
    assert list(filled["experiments"]) == [
        "finetune",
        "gmp_tl",
        "gmp_tl__k-64__gender_weight-0",
        "gmp_tl__k-64__gender_weight-1",
        "gmp_tl__k-64-512__gender_weight-0",
        "gmp_tl__k-64-512__gender_weight-1",
    ]
    settings = experiment_settings(filled, "gmp_tl__k-64-512__gender_weight-0")
    assert settings["gmp"]["k"] == [64, 512] and settings["mtl"]["gender_weight"] == 0.0
    assert settings["gmp"]["layers"] == filled["gmp"]["layers"]  # everything else: the base's
    points = grid_experiments(filled)
    assert [p.values for p in points][1] == {"gmp.k": [64], "mtl.gender_weight": 1.0}
    assert validate_config(filled)["experiments"] == filled["experiments"]  # expanding twice changes nothing


def test_the_base_keeps_its_own_overrides_and_defaults_to_the_first_experiment():
    experiments = {"wide": {"stage2": {"margin": 0.3}}, "other": {}}
    filled = validate_config(config_with({"vary": {"stage2.scale": [20, 30]}}, experiments))
    assert list(filled["experiments"])[2:] == ["wide__scale-20", "wide__scale-30"]
    settings = experiment_settings(filled, "wide__scale-20")
    assert settings["stage2"]["margin"] == 0.3 and settings["stage2"]["scale"] == 20


@pytest.mark.parametrize(
    "value, written",
    [
        ([64, 512, 4096], "64-512-4096"),
        (0.5, "0p5"),
        (1.0, "1"),
        (-2, "m2"),
        (1e-05, "1em05"),
        (True, "true"),
        (None, "none"),
        ("facebook/hubert-large-ll60k", "facebook_hubert-large-ll60k"),
        ([6], "6"),
    ],
)
def test_written_values_are_filesystem_safe_and_readable(value, written):
    assert written_value(value) == written


def test_keys_that_end_alike_are_named_in_full():
    labels = key_labels(["stage1.train.lr", "stage2.train.lr", "gmp.k"])
    assert labels == {"stage1.train.lr": "stage1_train_lr", "stage2.train.lr": "stage2_train_lr", "gmp.k": "k"}
    assert point_name("b", labels, {"stage1.train.lr": 1e-4, "gmp.k": [8]}) == "b__stage1_train_lr-0p0001__k-8"


@pytest.mark.parametrize(
    "grid, message",
    [
        ({"vary": {"gmp.k": [[8], ["x"]]}}, r"'grid\.vary\.gmp\.k\[1\]' \(\['x'\]\)"),
        ({"vary": {"gmp.kk": [1]}}, r"'grid\.vary\.gmp\.kk\[0\]'.*unknown key 'kk' under 'gmp'"),
        ({"vary": {"corpus.root": ["x"]}}, r"'grid\.vary\.corpus\.root': a grid varies dotted method keys"),
        ({"vary": {"mtl.gender_weight": [1, 1.0]}}, r"give the same experiment name 'finetune__gender_weight-1'"),
        ({"vary": {"stage2": [{"margin": 0.1}]}}, r"'grid\.vary\.stage2\[0\]': a mapping cannot be varied"),
        ({"base": "nope", "vary": {"gmp.k": [[8]]}}, r"'grid\.base': no experiment named 'nope'"),
        ({"vary": {}}, r"grid\.vary"),
        ({"base": "gmp_tl"}, r"grid\.vary"),
    ],
)
def test_a_bad_grid_is_one_sentence_naming_its_key(grid, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(config_with(grid))


def test_a_point_named_like_a_written_experiment_with_other_settings_is_an_error():
    experiments = {"base": {}, "base__scale-20": {"stage2": {"margin": 0.4}}}
    with pytest.raises(ConfigError, match="'base__scale-20' is also written under experiments"):
        validate_config(config_with({"vary": {"stage2.scale": [20]}}, experiments))


CLASSES = ["neu", "hap", "ang", "sad"]


def runs_with(accuracy: float, seed: int) -> dict:
    """Predictions of 2 folds × 60 utterances in dialogues of 10."""
    rng = np.random.default_rng(seed)
    runs = {}
    for fold in (1, 2):
        true = np.array(CLASSES)[np.arange(60) % 4]
        wrong = np.array(CLASSES)[(np.arange(60) + 1) % 4]
        runs[(42, fold)] = pd.DataFrame(
            {
                "utt_id": [f"f{fold}_{i}" for i in range(60)],
                "true": true,
                "predicted": np.where(rng.random(60) < accuracy, true, wrong),
            }
        )
    return runs


def test_the_ablation_table_has_one_row_per_point_with_tests_against_the_base(tmp_path):
    manifest = pd.DataFrame(
        [
            {"utt_id": f"f{fold}_{i}", "dialog": f"f{fold}d{i // 10}", "speaker": "s"}
            for fold in (1, 2)
            for i in range(60)
        ]
    )
    points = [
        GridPoint("b__m-1", {"stage2.margin": 0.1, "gmp.k": [8]}, {}),
        GridPoint("b__m-2", {"stage2.margin": 0.2, "gmp.k": [8]}, {}),
        GridPoint("b__m-3", {"stage2.margin": 0.1, "gmp.k": [8, 32]}, {}),
        GridPoint("b__m-4", {"stage2.margin": 0.2, "gmp.k": [8, 32]}, {}),
    ]
    experiments = {"b": runs_with(0.5, 0), **{p.name: runs_with(0.5 + 0.1 * i, i + 1) for i, p in enumerate(points)}}
    table = ablation_table(experiments, points, "b", CLASSES, resamples=500, unit="dialog", manifest=manifest)
    assert table["experiment"].tolist() == [p.name for p in points]
    assert table["gmp.k"].tolist() == ["[8]", "[8]", "[8, 32]", "[8, 32]"]
    assert table["stage2.margin"].tolist() == ["0.1", "0.2", "0.1", "0.2"]
    assert (table["uar_p_holm"] >= table["uar_p"]).all() and set(table["n_clusters"]) == {12}
    assert table["uar_diff"].iloc[-1] > 0.2  # 0.9 accurate against 0.5
    plot_ablation(table, ["stage2.margin", "gmp.k"], tmp_path / "ablation.png", "grid")
    assert (tmp_path / "ablation.png").stat().st_size > 5000
    page = ablation_page(table, ["stage2.margin", "gmp.k"])
    assert page.count("<tr") == 5 and "[8, 32]" in page and "resampling whole dialogues within folds (12" in page
