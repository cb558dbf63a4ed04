"""Stage identity: each cached stage output is named by a hash of exactly what determines it.

A *recipe* is a JSON-able dict of a stage's own result settings plus the identities of its inputs
(upstream recipes' ids, the corpus/fold settings, the backbone). Its id is a short hash of it. Two
experiments that agree on a stage and everything upstream get the same id, hence one output and
one job. Runtime settings (the config's `runtime:` section) are never part of a recipe.

Layout of the cache (paths relative to the working directory):

    results/cache/<kind>/<id>/recipe.json                  the recipe (written by the first job of <id>)
    results/cache/mtl/<id>/fold<N>/                        model folder   (same for stage1, stage2)
    results/cache/features/<id>/fold<N>.h5                 frame features of the recipe's layers
    results/cache/gmp/<id>/fold<N>/layer<L>_k<K>.h5        k-means centroids and frame labels
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from .config import needs_gmp
from .errors import ConfigError
from .fileio import atomic_path, stable_hash
from .settings import (
    GmpHead,
    KMeansSettings,
    MtlSettings,
    Stage1Settings,
    Stage2Settings,
    TrainSettings,
)

CACHE = "results/cache"
MODEL_KINDS = ("mtl", "stage1", "stage2")
KINDS = ("mtl", "features", "gmp", "stage1", "stage2")
ID_LENGTH = 12
# Path patterns (Snakemake wildcards in braces); every cached path is built from these.
MODEL_DIR = CACHE + "/{stage}/{id}/fold{fold}"
FEATURES_FILE = CACHE + "/features/{id}/fold{fold}.h5"
LABELS_FILE = CACHE + "/gmp/{id}/fold{fold}/layer{layer}_k{k}.h5"
RECIPE_FILE = CACHE + "/{kind}/{id}/recipe.json"


def recipe_id(recipe: dict) -> str:
    """The short hash naming a recipe's output folder (of its JSON form)."""
    return stable_hash(recipe)[:ID_LENGTH]


# Typed recipes: each is the identity of one cached stage kind (`to_json`, `id`) and the input of the
# library function that builds it. Their JSON is what results/cache/<kind>/<id>/recipe.json holds.


@dataclass(frozen=True)
class Data:
    """What the manifest and folds are made of: the corpus and fold settings, and the folds' seed."""

    corpus: dict
    folds: dict
    folds_seed: int

    @classmethod
    def from_config(cls, config: dict) -> Data:
        return cls(dict(config["corpus"]), dict(config["folds"]), int(config["seed"]))

    def to_json(self) -> dict:
        return {"corpus": self.corpus, "folds": self.folds, "folds_seed": self.folds_seed}

    @property
    def classes(self) -> list[str]:
        return list(self.corpus["classes"])


@dataclass(frozen=True)
class Init:
    """Where a training stage starts: a pretrained `backbone` (its name) or an upstream `mtl`/`stage1` (its id)."""

    kind: str
    value: str

    def to_json(self) -> dict:
        return {self.kind: self.value}

    @classmethod
    def from_json(cls, values: dict) -> Init:
        ((kind, value),) = values.items()
        return cls(kind, value)

    @property
    def backbone(self) -> str | None:
        return self.value if self.kind == "backbone" else None

    def model_dir(self, fold: int | str) -> str | None:
        """The model folder this stage starts from; None for a pretrained backbone."""
        return None if self.kind == "backbone" else model_dir(self.kind, self.value, fold)


@dataclass(frozen=True)
class GmpRef:
    """The GMP labels a stage-1 recipe trains on: the gmp recipe id and the heads (layer, k)."""

    id: str
    heads: tuple[GmpHead, ...]

    def to_json(self) -> dict:
        return {"id": self.id, "heads": [head.name for head in self.heads]}

    @classmethod
    def from_json(cls, values: dict) -> GmpRef:
        return cls(values["id"], tuple(GmpHead.parse(name) for name in values["heads"]))

    def label_files(self, fold: int | str) -> dict[str, str]:
        return {head.name: labels_file(self.id, fold, head) for head in self.heads}


STAGE_SETTINGS = {"mtl": MtlSettings, "stage1": Stage1Settings, "stage2": Stage2Settings}


@dataclass(frozen=True)
class TrainingRecipe:
    """One training stage (kind mtl | stage1 | stage2): data, initial weights, seed, its own settings, optimisation."""

    kind: str
    data: Data
    init: Init
    seed: int
    settings: MtlSettings | Stage1Settings | Stage2Settings
    train: TrainSettings
    gmp: GmpRef | None = None  # stage 1 only

    def to_json(self) -> dict:
        recipe = {
            "kind": self.kind,
            "data": self.data.to_json(),
            "init": self.init.to_json(),
            "seed": self.seed,
            self.kind: asdict(self.settings),
            "train": self.train.to_dict(),
        }
        if self.gmp is not None:
            recipe["gmp"] = self.gmp.to_json()
        return recipe

    @classmethod
    def from_json(cls, recipe: dict) -> TrainingRecipe:
        kind = recipe["kind"]
        return cls(
            kind=kind,
            data=Data(**recipe["data"]),
            init=Init.from_json(recipe["init"]),
            seed=int(recipe["seed"]),
            settings=STAGE_SETTINGS[kind].from_dict(recipe[kind]),
            train=TrainSettings.from_dict(recipe["train"]),
            gmp=GmpRef.from_json(recipe["gmp"]) if "gmp" in recipe else None,
        )

    def label_files(self, fold: int | str) -> dict[str, str]:
        """GMP head name → label file (empty unless stage 1)."""
        return self.gmp.label_files(fold) if self.gmp else {}


@dataclass(frozen=True)
class FeaturesRecipe:
    """Frame features of `layers`, read from the fold's multi-task model (recipe id `model`)."""

    data: Data
    model: str
    layers: tuple[int, ...]
    kind: str = "features"

    def to_json(self) -> dict:
        return {"kind": self.kind, "data": self.data.to_json(), "model": self.model, "layers": list(self.layers)}

    @classmethod
    def from_json(cls, recipe: dict) -> FeaturesRecipe:
        return cls(Data(**recipe["data"]), recipe["model"], tuple(int(x) for x in recipe["layers"]))


@dataclass(frozen=True)
class GmpRecipe:
    """k-means of the features recipe `features` (every (layer, k) of the stage-1 recipes that use it)."""

    features: str
    kmeans: KMeansSettings
    seed: int
    kind: str = "gmp"

    def to_json(self) -> dict:
        return {"kind": self.kind, "features": self.features, "kmeans": asdict(self.kmeans), "seed": self.seed}

    @classmethod
    def from_json(cls, recipe: dict) -> GmpRecipe:
        return cls(recipe["features"], KMeansSettings.from_dict(recipe["kmeans"]), int(recipe["seed"]))


Recipe = TrainingRecipe | FeaturesRecipe | GmpRecipe
RECIPE_TYPES = {"mtl": TrainingRecipe, "stage1": TrainingRecipe, "stage2": TrainingRecipe}
RECIPE_TYPES.update(features=FeaturesRecipe, gmp=GmpRecipe)


def from_json(recipe: dict | Recipe) -> Recipe:
    """The typed recipe of a recipe's JSON form (a typed recipe is returned as it is)."""
    if not isinstance(recipe, dict):
        return recipe
    kind = recipe.get("kind")
    if kind not in RECIPE_TYPES:
        raise ConfigError(f"recipe kind '{kind}' is unknown (expected one of {', '.join(KINDS)})")
    return RECIPE_TYPES[kind].from_json(recipe)


@dataclass(frozen=True)
class Stage:
    """One cached stage output (per fold): its kind, id, JSON recipe (the identity) and typed recipe."""

    kind: str
    id: str
    recipe: dict
    typed: Recipe


def canonical(value):
    """`value` with every dict's keys sorted, all the way down: its repr (what Snakemake compares to decide a
    params-triggered rerun) then depends on the settings alone, never on the order of keys in a YAML file."""
    if isinstance(value, dict):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list | tuple):
        return [canonical(item) for item in value]
    return value


def stage_of(recipe: Recipe) -> Stage:
    text = canonical(recipe.to_json())
    return Stage(recipe.kind, recipe_id(text), text, recipe)


def data_recipe(config: dict) -> dict:
    """What the manifest and folds are made of (JSON form of `Data`)."""
    return Data.from_config(config).to_json()


def _init(settings: dict, init: str, stages: dict[str, Stage]) -> Init:
    return Init("backbone", settings["backbone"]) if init == "pretrained" else Init(init, stages[init].id)


def gmp_heads(settings: dict) -> list[GmpHead]:
    """The GMP heads of an experiment, one per (layer, k)."""
    return GmpHead.grid(settings["gmp"]["layers"], settings["gmp"]["k"])


def _training(kind: str, settings: dict, data: Data, stages: dict[str, Stage], gmp: GmpRef | None = None) -> Stage:
    section = settings[kind]
    own = STAGE_SETTINGS[kind].from_dict(section)
    if gmp is not None:
        own = own.for_heads(list(gmp.heads))
    init = _init(settings, section.get("init", "pretrained"), stages)
    train = TrainSettings.for_stage(section["train"], kind)
    return stage_of(TrainingRecipe(kind, data, init, int(settings["seed"]), own, train, gmp))


def experiment_stages(config: dict, settings: dict) -> dict[str, Stage]:
    """The stages one experiment uses, keyed by kind, in dependency order."""
    data = Data.from_config(config)
    stages: dict[str, Stage] = {}
    gmp_branch = needs_gmp(settings)
    if gmp_branch or settings["stage2"]["init"] == "mtl":  # the GMP features are read from the mtl model
        stages["mtl"] = _training("mtl", settings, data, stages)
    if gmp_branch:
        layers = tuple(sorted(settings["gmp"]["layers"]))
        stages["features"] = stage_of(FeaturesRecipe(data, stages["mtl"].id, layers))
        kmeans = KMeansSettings.from_dict(settings["kmeans"])
        stages["gmp"] = stage_of(GmpRecipe(stages["features"].id, kmeans, int(settings["seed"])))
        gmp = GmpRef(stages["gmp"].id, tuple(gmp_heads(settings)))
        stages["stage1"] = _training("stage1", settings, data, stages, gmp)
    stages["stage2"] = _training("stage2", settings, data, stages)
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


def init_model_dir(recipe: dict | Recipe, fold: int | str) -> str | None:
    """The model folder a training recipe starts from; None for the pretrained backbone."""
    return from_json(recipe).init.model_dir(fold)


def backbone_of(recipe: dict | Recipe) -> str | None:
    """The pretrained backbone a training recipe starts from, if it starts from one."""
    return from_json(recipe).init.backbone


def label_files(recipe: dict | Recipe, fold: int | str) -> dict[str, str]:
    """GMP head name → label file of a stage-1 recipe (empty for other kinds)."""
    typed = from_json(recipe)
    return typed.label_files(fold) if isinstance(typed, TrainingRecipe) else {}


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


def write_recipe(path: str | os.PathLike, recipe: dict) -> Path:
    """Write a stage's recipe.json (results/cache/<kind>/<id>/recipe.json: the path Snakemake gave the job;
    idempotent, atomic) so a person can see what a cached folder holds."""
    path = Path(path)
    text = json.dumps(recipe, indent=2, sort_keys=True) + "\n"
    if not path.is_file() or path.read_text() != text:
        with atomic_path(path) as tmp:
            tmp.write_text(text)
    return path
