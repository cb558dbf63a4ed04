# Helpers shared by the rules. Input functions map wildcards to paths; the library
# (workflow/scripts/gmptl) never sees `snakemake` or `config`.
#
# Every cached stage output is named by its recipe id (gmptl.recipes): experiments that agree on a
# stage and everything upstream share one output and one job. Rules get the recipe as their only
# result-changing param; runtime settings (the `runtime:` section) are read by the adapters from the
# config and never trigger a rerun. The jobs themselves are enumerated once, by gmptl.workplan, which
# `gmptl plan` uses too.

from gmptl import grid, recipes, workplan
from gmptl.config import deployed_experiments, experiment_settings, grid_experiments
from gmptl.corpus import CorpusSettings, corpus_fingerprint
from gmptl.demo import demo_outputs
from gmptl.folds import DEPLOY_FOLD
from gmptl.protocols import expected_fold_ids

EXPERIMENTS = {
    name: experiment_settings(config, name) for name in config["experiments"]
}
SEEDS = {
    name: recipes.experiment_seeds(config, settings)
    for name, settings in EXPERIMENTS.items()
}
# The stages of every (experiment, seed) run, keyed by kind.
PLANS = {
    (name, seed): recipes.experiment_stages(config, recipes.seeded(settings, seed))
    for name, settings in EXPERIMENTS.items()
    for seed in SEEDS[name]
}
STAGES = recipes.catalog(PLANS)
DEPLOYED = deployed_experiments(config)
GRID = grid_experiments(
    config
)  # the points of the ablation grid (empty without `grid:`)
DATA = recipes.data_recipe(config)
# Fold ids known from the config (IEMOCAP sessions/speakers, kfold, predefined); None: read from
# results/folds.tsv once the checkpoint make_folds has run (e.g. leave-one-speaker-out on RAVDESS).
KNOWN_FOLDS = expected_fold_ids(config["corpus"], config["folds"])
# Demo rules write only under results/demo/; an existing corpus or backbone elsewhere is used as it is.
BUILDS = demo_outputs(
    config["demo"]["enabled"], config["corpus"]["root"], config["backbone"]
)
CORPUS_ROOT = config["corpus"]["root"]
ENV = "../../envs/gmptl.yaml"


wildcard_constraints:
    exp="|".join(sorted(EXPERIMENTS)),
    fold=r"\d+",
    layer=r"\d+",
    k=r"\d+",
    id=rf"[0-9a-f]{{{recipes.ID_LENGTH}}}",
    stage="|".join(recipes.MODEL_KINDS),
    run=recipes.RUN_PATTERN,


def recipe_of(kind, wildcards):
    """The recipe named by a cached path's kind and id."""
    return STAGES[(kind, wildcards.id)].recipe


def training_recipe(wildcards):
    return recipe_of(wildcards.stage, wildcards)


def features_recipe(wildcards):
    return recipe_of("features", wildcards)


def kmeans_recipe(wildcards):
    return recipe_of("gmp", wildcards)


def fold_data(wildcards=None):
    """Manifest and the fold table (fold 0: the deploy split, all data trains)."""
    deploy = str(getattr(wildcards, "fold", "")) == str(DEPLOY_FOLD)
    return {
        "manifest": "results/manifest.tsv",
        "folds": "results/deploy_split.tsv" if deploy else "results/folds.tsv",
    }


def training_input(wildcards):
    """Manifest, folds, the initial model (or the demo's tiny backbone) and the GMP label files."""
    recipe = training_recipe(wildcards)
    inputs = fold_data(wildcards)
    init = recipes.init_model_dir(recipe, wildcards.fold)
    if init:
        inputs["model"] = init
    elif BUILDS.backbone and recipes.backbone_of(recipe) == config["backbone"]:
        inputs["backbone"] = config["backbone"]
    inputs.update(recipes.label_files(recipe, wildcards.fold))
    return inputs


def features_input(wildcards):
    """The GMP features are read from the fold's gender-augmented multi-task model."""
    model = recipes.model_dir(
        "mtl", features_recipe(wildcards)["model"], wildcards.fold
    )
    return {**fold_data(wildcards), "model": model}


def kmeans_input(wildcards):
    return {
        "features": recipes.features_file(
            kmeans_recipe(wildcards)["features"], wildcards.fold
        )
    }


def recipe_path(wildcards):
    """results/cache/<kind>/<id>/recipe.json of a cached stage job."""
    kind = getattr(wildcards, "stage", None) or (
        "gmp" if hasattr(wildcards, "k") else "features"
    )
    return recipes.recipe_file(kind, wildcards.id)


def state_dir(wildcards, output):
    """Undeclared resume folder beside the declared model folder (survives Snakemake's cleanup)."""
    return f"{output.model}.resume"


def train_runtime(wildcards, attempt):
    """Minutes requested per training job; grows with each retry after a time-out."""
    return workplan.minutes("train_stage", attempt)


def bulky(path):
    """The features file is kept, or deleted once consumed when `runtime.keep_features` is false."""
    return path if config["runtime"]["keep_features"] else temp(path)


def fold_ids():
    """The folds of this run (from the config, or from results/folds.tsv after the checkpoint)."""
    if KNOWN_FOLDS is not None:
        return KNOWN_FOLDS
    import pandas as pd

    folds = pd.read_csv(
        checkpoints.make_folds.get().output.folds, sep="\t", usecols=["fold"]
    )
    return sorted(int(fold) for fold in folds["fold"].unique())


def corpus_state():
    """What the manifest is read from: the demo corpus is a rule output (tracked by Snakemake); a real corpus
    is fingerprinted (label files by content, audio by size), so editing it rebuilds the manifest.
    """
    return (
        "demo"
        if BUILDS.corpus
        else corpus_fingerprint(CorpusSettings.from_config(config["corpus"]))
    )


def corpus_input(wildcards):
    """The demo corpus folder when the workflow builds it; a real corpus is read, not tracked."""
    return [CORPUS_ROOT] if BUILDS.corpus else []


def runs(exp):
    """(seed, fold) of every run of an experiment."""
    return [(seed, fold) for seed in SEEDS[exp] for fold in fold_ids()]


def run_folder(exp, seed, fold):
    return workplan.run_folder(exp, seed, fold, len(SEEDS[exp]) > 1)


def run_seed(wildcards):
    seed, _ = recipes.parse_run(wildcards.run)
    return SEEDS[wildcards.exp][0] if seed is None else seed


def run_fold(wildcards):
    return recipes.parse_run(wildcards.run)[1]


def deploy_stage2(wildcards):
    """The stage-2 model of the experiment's first seed trained on all data (fold 0)."""
    stage = PLANS[(wildcards.exp, SEEDS[wildcards.exp][0])]["stage2"]
    return recipes.model_dir("stage2", stage.id, DEPLOY_FOLD)


def deploy_stage_ids(wildcards):
    """Stage → recipe id of the deploy model's stages (its model card names them)."""
    plan = PLANS[(wildcards.exp, SEEDS[wildcards.exp][0])]
    return {kind: stage.id for kind, stage in plan.items()}


def stage2_model(wildcards):
    stage = PLANS[(wildcards.exp, run_seed(wildcards))]["stage2"]
    return recipes.model_dir("stage2", stage.id, run_fold(wildcards))


def stage_rows(wildcards):
    """The rows of results/<exp>/stages.tsv: every cached output of every (seed, fold) run."""
    return [
        row
        for seed in SEEDS[wildcards.exp]
        for row in recipes.experiment_rows(
            PLANS[(wildcards.exp, seed)], fold_ids(), seed
        )
    ]


def run_keys(wildcards):
    """[seed, fold] of each predictions file, in input order."""
    return [[seed, fold] for seed, fold in runs(wildcards.exp)]


def run_predictions(wildcards):
    return [
        f"{run_folder(wildcards.exp, seed, fold)}/predictions.tsv"
        for seed, fold in runs(wildcards.exp)
    ]


def all_run_keys(wildcards):
    """[experiment, seed, fold] of each predictions file of every experiment, in input order."""
    return [[exp, seed, fold] for exp in EXPERIMENTS for seed, fold in runs(exp)]


def all_run_predictions(wildcards):
    return [
        f"{run_folder(exp, seed, fold)}/predictions.tsv"
        for exp in EXPERIMENTS
        for seed, fold in runs(exp)
    ]


def shown_settings(wildcards):
    """The experiment's result settings (runtime settings live apart, so they never trigger a rerun)."""
    return {**EXPERIMENTS[wildcards.exp], "seeds": SEEDS[wildcards.exp]}


def reference_experiment():
    return config["compare_to"] or next(iter(EXPERIMENTS))


def experiment_models(exp):
    """Every model folder of an experiment, keyed '<stage>_seed<S>_fold<N>'."""
    return {
        f"{kind}_seed{seed}_fold{fold}": recipes.model_dir(kind, stage.id, fold)
        for seed in SEEDS[exp]
        for kind, stage in PLANS[(exp, seed)].items()
        if kind in recipes.MODEL_KINDS
        for fold in fold_ids()
    }


def stage_models(wildcards):
    """Every model folder of an experiment (their history.tsv feed the training curves)."""
    return experiment_models(wildcards.exp)


def all_jobs():
    """Every job of this config (gmptl.workplan: the same enumeration `gmptl plan` counts)."""
    return workplan.workflow_jobs(
        PLANS,
        SEEDS,
        fold_ids(),
        deployed=DEPLOYED,
        demo_corpus=CORPUS_ROOT if BUILDS.corpus else None,
        demo_backbone=config["backbone"] if BUILDS.backbone else None,
        ablation=bool(GRID),
    )


def all_targets(wildcards):
    """Every target output; a deleted model is retrained, and what depends on it reruns."""
    return workplan.targets(all_jobs())


def job_attempt(wildcards, attempt):
    """The attempt number (1, 2 … with `retries:`) as a resource, so that the job's script can read it."""
    return attempt


def grid_base():
    """The experiment the ablation grid varies."""
    return grid.grid_base(config["grid"], config["experiments"]) if GRID else None


def ablation_names():
    """The base, then every grid point: the experiments of results/ablation.tsv."""
    return list(dict.fromkeys([grid_base(), *(point.name for point in GRID)]))


def ablation_run_keys(wildcards):
    """[experiment, seed, fold] of each predictions file of the ablation, in input order."""
    return [[exp, seed, fold] for exp in ablation_names() for seed, fold in runs(exp)]


def ablation_predictions(wildcards):
    return [
        f"{run_folder(exp, seed, fold)}/predictions.tsv"
        for exp in ablation_names()
        for seed, fold in runs(exp)
    ]


def ablation_points():
    """[name, {dotted key: value}] of every grid point (plain lists, as rule params)."""
    return [[point.name, point.values] for point in GRID]
