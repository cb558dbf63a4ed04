"""Stage identity and the cache layout: recipes, their paths, the stages.tsv rows, recipe.json."""

from __future__ import annotations

import json
import os

import pytest

from gmptl.config import experiment_settings, validate_config
from gmptl.errors import ConfigError
from gmptl.recipes import (
    FeaturesRecipe,
    GmpRecipe,
    Init,
    backbone_of,
    data_recipe,
    experiment_rows,
    experiment_stages,
    from_json,
    init_model_dir,
    label_files,
    output_paths,
    parse_run,
    recipe_file,
    run_name,
    write_recipe,
)

CONFIG = {"corpus": {"root": "/data/IEMOCAP_full_release"}, "gmp": {"layers": [2, 1], "k": [8, 32]}}


@pytest.fixture  # per test (cheap): mutation testing maps a fixture's calls to each test that uses it
def config():
    return validate_config(CONFIG)


@pytest.fixture
def gmp_tl(config):
    return experiment_stages(config, experiment_settings(config, "gmp_tl"))


def test_the_gmp_run_has_five_stages_each_starting_where_its_settings_say(gmp_tl):
    assert list(gmp_tl) == ["mtl", "features", "gmp", "stage1", "stage2"]
    mtl, stage1, stage2 = gmp_tl["mtl"], gmp_tl["stage1"], gmp_tl["stage2"]
    assert backbone_of(mtl.recipe) == "facebook/hubert-base-ls960" and init_model_dir(mtl.recipe, 1) is None
    assert init_model_dir(stage1.recipe, 3) is None  # stage 1 starts from the pretrained backbone by default
    assert backbone_of(stage1.recipe) == "facebook/hubert-base-ls960"
    assert init_model_dir(stage2.recipe, 3) == f"results/cache/stage1/{stage1.id}/fold3"
    assert backbone_of(stage2.recipe) is None
    assert gmp_tl["features"].recipe["model"] == mtl.id and gmp_tl["features"].recipe["layers"] == [1, 2]
    assert gmp_tl["gmp"].recipe["features"] == gmp_tl["features"].id


def test_every_recipe_reads_back_as_the_typed_recipe_it_came_from(gmp_tl):
    for stage in gmp_tl.values():
        typed = from_json(stage.recipe)
        assert typed == stage.typed, stage.kind
        assert typed.to_json() == stage.recipe
    assert isinstance(from_json(gmp_tl["features"].recipe), FeaturesRecipe)
    assert isinstance(from_json(gmp_tl["gmp"].recipe), GmpRecipe)
    assert from_json(gmp_tl["gmp"].typed) is gmp_tl["gmp"].typed
    with pytest.raises(ConfigError, match="^recipe kind 'svm' is unknown \\(expected one of mtl, features, gmp"):
        from_json({"kind": "svm"})


def test_stage1_trains_on_the_label_files_of_every_head(gmp_tl):
    gmp = gmp_tl["gmp"].id
    expected = {
        f"L{layer}_k{k}": f"results/cache/gmp/{gmp}/fold4/layer{layer}_k{k}.h5" for layer in (1, 2) for k in (8, 32)
    }
    assert label_files(gmp_tl["stage1"].recipe, 4) == expected
    assert label_files(gmp_tl["stage2"].recipe, 4) == {}
    assert label_files(gmp_tl["features"].recipe, 4) == {}


def test_output_paths_and_recipe_files_follow_the_cache_layout(gmp_tl):
    ids = {kind: stage.id for kind, stage in gmp_tl.items()}
    assert output_paths(gmp_tl["mtl"], 2) == [("", f"results/cache/mtl/{ids['mtl']}/fold2")]
    assert output_paths(gmp_tl["stage2"], "0") == [("", f"results/cache/stage2/{ids['stage2']}/fold0")]
    assert output_paths(gmp_tl["features"], 2) == [("", f"results/cache/features/{ids['features']}/fold2.h5")]
    assert output_paths(gmp_tl["gmp"], 2) == []  # listed by the stage-1 recipe that uses them
    assert recipe_file("gmp", ids["gmp"]) == f"results/cache/gmp/{ids['gmp']}/recipe.json"
    assert Init("stage1", "abc").model_dir(5) == "results/cache/stage1/abc/fold5"
    assert Init("backbone", "x").model_dir(5) is None


def test_stages_rows_list_every_output_per_fold_in_pipeline_order(gmp_tl):
    rows = experiment_rows(gmp_tl, [2, 1], seed=43)
    ids = {kind: stage.id for kind, stage in gmp_tl.items()}
    heads = ["L1_k32", "L1_k8", "L2_k32", "L2_k8"]  # sorted by name within the gmp stage
    expected = []
    for fold in (1, 2):
        expected += [
            {"stage": "mtl", "fold": fold, "path": f"results/cache/mtl/{ids['mtl']}/fold{fold}", "head": ""},
            {
                "stage": "features",
                "fold": fold,
                "path": f"results/cache/features/{ids['features']}/fold{fold}.h5",
                "head": "",
            },
        ]
        expected += [
            {
                "stage": "gmp",
                "fold": fold,
                "path": f"results/cache/gmp/{ids['gmp']}/fold{fold}/layer{head[1]}_k{head.split('_k')[1]}.h5",
                "head": head,
            }
            for head in heads
        ]
        expected += [
            {"stage": kind, "fold": fold, "path": f"results/cache/{kind}/{ids[kind]}/fold{fold}", "head": ""}
            for kind in ("stage1", "stage2")
        ]
    for row in expected:
        row["id"] = ids[row["stage"]]
        row["seed"] = 43
    assert rows == expected


def test_stages_rows_of_an_experiment_without_gmp(config):
    finetune = experiment_stages(config, experiment_settings(config, "finetune"))
    assert list(finetune) == ["stage2"]
    rows = experiment_rows(finetune, [3], seed=42)
    path = f"results/cache/stage2/{finetune['stage2'].id}/fold3"
    assert rows == [{"stage": "stage2", "fold": 3, "path": path, "id": finetune["stage2"].id, "head": "", "seed": 42}]


@pytest.mark.parametrize(("seed", "fold", "several", "name"), [(42, 3, False, "fold3"), (7, 10, True, "seed7/fold10")])
def test_run_names_read_back(seed, fold, several, name):
    assert run_name(seed, fold, several) == name
    assert parse_run(name) == ((seed if several else None), fold)


def test_data_recipe_is_the_corpus_the_folds_and_their_seed(config):
    assert data_recipe(config) == {"corpus": config["corpus"], "folds": config["folds"], "folds_seed": 42}


def test_recipe_json_is_written_sorted_atomically_and_only_when_it_changes(tmp_path):
    path = tmp_path / "cache" / "gmp" / "abc" / "recipe.json"
    assert write_recipe(path, {"b": 1, "a": {"d": 2, "c": [1, 2]}}) == path
    assert path.read_text() == json.dumps({"a": {"c": [1, 2], "d": 2}, "b": 1}, indent=2) + "\n"
    os.utime(path, (1, 1))
    write_recipe(path, {"a": {"c": [1, 2], "d": 2}, "b": 1})  # the same recipe: the file is left alone
    assert path.stat().st_mtime == 1
    write_recipe(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1} and path.stat().st_mtime != 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["recipe.json"]  # no temporary file left


def test_stage1_trains_without_the_utterance_only_settings_and_may_start_from_mtl(gmp_tl):
    assert "class_weights" not in gmp_tl["stage1"].recipe["train"]
    assert "specaugment" not in gmp_tl["stage1"].recipe["train"]
    assert "class_weights" in gmp_tl["stage2"].recipe["train"]
    config = validate_config({**CONFIG, "stage1": {"init": "mtl"}})
    stages = experiment_stages(config, experiment_settings(config, "gmp_tl"))
    assert init_model_dir(stages["stage1"].recipe, 2) == f"results/cache/mtl/{stages['mtl'].id}/fold2"
    assert stages["gmp"].recipe["seed"] == 42 and stages["stage1"].recipe["gmp"]["id"] == stages["gmp"].id


def test_stage2_from_mtl_without_gmp_trains_the_mtl_model_first():
    config = validate_config({**CONFIG, "experiments": {"mtl_ft": {"stage2": {"init": "mtl"}}}})
    stages = experiment_stages(config, experiment_settings(config, "mtl_ft"))
    assert list(stages) == ["mtl", "stage2"]
    assert init_model_dir(stages["stage2"].recipe, 1) == f"results/cache/mtl/{stages['mtl'].id}/fold1"
