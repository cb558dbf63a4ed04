"""Stage identity: each cached stage output is named by a hash of exactly what determines it.

A *recipe* is a JSON-able dict of a stage's own result settings plus the identities of its inputs
(upstream recipes' ids, the corpus/fold settings, the backbone). Its id is a short hash of it. Two
experiments that agree on a stage and everything upstream get the same id, hence one output and
one job. Runtime settings (device, precision, threads, inference batch sizes, `keep_features`,
`corpus.check_full_release`) are never part of a recipe.

Layout of the cache (paths relative to the working directory):

    results/cache/<kind>/<id>/recipe.json                  the recipe (written by the first job of <id>)
    results/cache/mtl/<id>/fold<N>/                        model folder   (same for stage1, stage2)
    results/cache/features/<id>/fold<N>.h5                 frame features of the recipe's layers
    results/cache/gmp/<id>/fold<N>/layer<L>_k<K>.h5        k-means centroids and frame labels
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .config import RUNTIME_KEYS, needs_gmp
from .fileio import atomic_path, stable_hash
from .settings import GmpHead

CACHE = "results/cache"
MODEL_KINDS = ("mtl", "stage1", "stage2")
KINDS = ("mtl", "features", "gmp", "stage1", "stage2")
ID_LENGTH = 12
# Path patterns (Snakemake wildcards in braces); every cached path is built from these.
MODEL_DIR = CACHE + "/{stage}/{id}/fold{fold}"
FEATURES_FILE = CACHE + "/features/{id}/fold{fold}.h5"
LABELS_FILE = CACHE + "/gmp/{id}/fold{fold}/layer{layer}_k{k}.h5"
RECIPE_FILE = CACHE + "/{kind}/{id}/recipe.json"
CORPUS_RUNTIME_KEYS = ("check_full_release",)


@dataclass(frozen=True)
class Stage:
    """One cached stage output (per fold): its kind, id and recipe."""

    kind: str
    id: str
    recipe: dict


def recipe_id(recipe: dict) -> str:
    """The short hash naming a recipe's output folder."""
    return stable_hash(recipe)[:ID_LENGTH]


def _stage(kind: str, recipe: dict) -> Stage:
    recipe = {"kind": kind, **recipe}
    return Stage(kind, recipe_id(recipe), recipe)


def _without(values: dict, keys) -> dict:
    return {key: value for key, value in values.items() if key not in keys}


def data_recipe(config: dict) -> dict:
    """What the manifest and folds are made of: the corpus and fold settings (minus runtime keys)."""
    return {
        "corpus": _without(config["corpus"], CORPUS_RUNTIME_KEYS),
        "folds": dict(config["folds"]),
        "folds_seed": config["seed"],
    }


UTTERANCE_ONLY_TRAIN_KEYS = ("class_weights", "specaugment")  # act only where an emotion loss is trained


def _train(settings: dict, stage: str) -> dict:
    drop = RUNTIME_KEYS["train"] + (UTTERANCE_ONLY_TRAIN_KEYS if stage == "stage1" else ())
    return _without(settings[stage]["train"], drop)


def _init(settings: dict, init: str, stages: dict[str, Stage]) -> dict:
    if init == "pretrained":
        return {"backbone": settings["backbone"]}
    return {init: stages[init].id}


def gmp_heads(settings: dict) -> list[GmpHead]:
    """The GMP heads of an experiment, one per (layer, k)."""
    return GmpHead.grid(settings["gmp"]["layers"], settings["gmp"]["k"])


def experiment_stages(config: dict, settings: dict) -> dict[str, Stage]:
    """The stages one experiment uses, keyed by kind, in dependency order."""
    data, seed = data_recipe(config), settings["seed"]
    stages: dict[str, Stage] = {}
    gmp_branch = needs_gmp(settings)
    if gmp_branch or settings["stage2"]["init"] == "mtl":  # the GMP features are read from the mtl model
        mtl = settings["mtl"]
        stages["mtl"] = _stage(
            "mtl",
            {
                "data": data,
                "init": _init(settings, "pretrained", stages),
                "seed": seed,
                "mtl": {"gender_weight": mtl["gender_weight"], "pooling": mtl["pooling"]},
                "train": _train(settings, "mtl"),
            },
        )
    if gmp_branch:
        heads = gmp_heads(settings)
        stages["features"] = _stage(
            "features",
            {"data": data, "model": stages["mtl"].id, "layers": sorted(settings["gmp"]["layers"])},
        )
        stages["gmp"] = _stage(
            "gmp",
            {
                "features": stages["features"].id,
                "kmeans": _without(settings["kmeans"], RUNTIME_KEYS["kmeans"]),
                "seed": seed,
            },
        )
        stage1 = settings["stage1"]
        stages["stage1"] = _stage(
            "stage1",
            {
                "data": data,
                "init": _init(settings, stage1["init"], stages),
                "seed": seed,
                "gmp": {"id": stages["gmp"].id, "heads": [head.name for head in heads]},
                "stage1": {
                    "loss_on": stage1["loss_on"],
                    "mask_prob": stage1["mask_prob"],
                    "mask_length": stage1["mask_length"],
                    "loss_weights": {head.name: float(stage1["loss_weights"].get(head.name, 1.0)) for head in heads},
                },
                "train": _train(settings, "stage1"),
            },
        )
    stage2 = settings["stage2"]
    stages["stage2"] = _stage(
        "stage2",
        {
            "data": data,
            "init": _init(settings, stage2["init"], stages),
            "seed": seed,
            "stage2": _without(stage2, ("train", "init")),
            "train": _train(settings, "stage2"),
        },
    )
    return stages


def experiment_seeds(config: dict, settings: dict) -> list[int]:
    """The seeds an experiment runs: the config's `seeds` list, else its own `seed`."""
    return list(config.get("seeds") or [settings["seed"]])


def seeded(settings: dict, seed: int) -> dict:
    """An experiment's settings for one of its seeds."""
    return {**settings, "seed": seed}


RUN_PATTERN = r"(seed\d+/)?fold\d+"


def run_name(seed: int, fold: int | str, several_seeds: bool) -> str:
    """The folder of one (seed, fold) run under results/<exp>/: 'fold<N>', or 'seed<S>/fold<N>' with several seeds."""
    return f"seed{seed}/fold{fold}" if several_seeds else f"fold{fold}"


def parse_run(run: str) -> tuple[int | None, int]:
    """(seed or None, fold) of a run folder name."""
    seed, _, fold = run.rpartition("/")
    return (int(seed.removeprefix("seed")) if seed else None), int(fold.removeprefix("fold"))


def catalog(plans: dict) -> dict[tuple[str, str], Stage]:
    """Every distinct stage of all experiments, keyed by (kind, id)."""
    return {(stage.kind, stage.id): stage for stages in plans.values() for stage in stages.values()}


# Paths ---------------------------------------------------------------------------------------------


def model_dir(kind: str, stage_id: str, fold: int | str) -> str:
    return MODEL_DIR.format(stage=kind, id=stage_id, fold=fold)


def features_file(stage_id: str, fold: int | str) -> str:
    return FEATURES_FILE.format(id=stage_id, fold=fold)


def labels_file(stage_id: str, fold: int | str, head: GmpHead) -> str:
    return LABELS_FILE.format(id=stage_id, fold=fold, layer=head.layer, k=head.k)


def recipe_file(kind: str, stage_id: str) -> str:
    return RECIPE_FILE.format(kind=kind, id=stage_id)


def init_model_dir(recipe: dict, fold: int | str) -> str | None:
    """The model folder a training recipe starts from; None for the pretrained backbone."""
    (kind, value), *_ = recipe["init"].items()
    return None if kind == "backbone" else model_dir(kind, value, fold)


def backbone_of(recipe: dict) -> str | None:
    """The pretrained backbone a recipe starts from, if it starts from one."""
    return recipe.get("init", {}).get("backbone")


def label_files(recipe: dict, fold: int | str) -> dict[str, str]:
    """GMP head name → label file of a stage-1 recipe (empty for other kinds)."""
    if "gmp" not in recipe:
        return {}
    return {name: labels_file(recipe["gmp"]["id"], fold, GmpHead.parse(name)) for name in recipe["gmp"]["heads"]}


def output_paths(stage: Stage, fold: int | str) -> list[tuple[str, str]]:
    """(head or '', path) of what a stage writes for one fold."""
    if stage.kind in MODEL_KINDS:
        return [("", model_dir(stage.kind, stage.id, fold))]
    if stage.kind == "features":
        return [("", features_file(stage.id, fold))]
    return []  # gmp: the label files are listed by the stage-1 recipe that uses them


def experiment_rows(stages: dict[str, Stage], folds: list[int], seed: int) -> list[dict]:
    """The rows of results/<exp>/stages.tsv for one seed: stage, fold, path, id, head, seed."""
    rows = []
    for fold in folds:
        for stage in stages.values():
            rows += [
                {"stage": stage.kind, "fold": fold, "path": path, "id": stage.id, "head": head}
                for head, path in output_paths(stage, fold)
            ]
        if "stage1" in stages:
            rows += [
                {"stage": "gmp", "fold": fold, "path": path, "id": stages["gmp"].id, "head": head}
                for head, path in label_files(stages["stage1"].recipe, fold).items()
            ]
    order = {kind: i for i, kind in enumerate(KINDS)}
    return [{**row, "seed": seed} for row in sorted(rows, key=lambda r: (r["fold"], order[r["stage"]], r["head"]))]


def write_recipe(kind: str, stage_id: str, recipe: dict, root: str | os.PathLike = ".") -> Path:
    """Write results/cache/<kind>/<id>/recipe.json (idempotent, atomic) so a person can see what a folder holds."""
    path = Path(root) / recipe_file(kind, stage_id)
    text = json.dumps(recipe, indent=2, sort_keys=True) + "\n"
    if not path.is_file() or path.read_text() != text:
        with atomic_path(path) as tmp:
            tmp.write_text(text)
    return path
