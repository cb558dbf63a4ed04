# Helpers shared by the rules. Input functions map wildcards to paths; the library
# (workflow/scripts/gmptl) never sees `snakemake` or `config`.

from gmptl.config import experiment_settings, needs_gmp

EXPERIMENTS = {name: experiment_settings(config, name) for name in config["experiments"]}
FOLDS = sorted(config["corpus"]["sessions"])
DEMO = config["demo"]["enabled"]
CORPUS_ROOT = config["corpus"]["root"]
RUNTIME = {"device": config["device"], "precision": config["precision"]}
ENV = "../../envs/gmptl.yaml"


wildcard_constraints:
    exp="|".join(sorted(EXPERIMENTS)),
    fold=r"\d+",
    layer=r"\d+",
    k=r"\d+",


def scoped(wildcards, keys):
    """The part of an experiment's settings a rule uses, so that editing one stage's keys
    reruns that stage and what depends on it, not everything."""
    return {key: EXPERIMENTS[wildcards.exp][key] for key in ("seed", *keys)}


def feature_settings(wildcards):
    return scoped(wildcards, ("gmp", "features"))


def kmeans_settings(wildcards):
    return scoped(wildcards, ("kmeans",))


def mtl_settings(wildcards):
    return scoped(wildcards, ("backbone", "mtl"))


def stage1_settings(wildcards):
    return scoped(wildcards, ("backbone", "gmp", "stage1"))


def stage2_settings(wildcards):
    return scoped(wildcards, ("backbone", "stage2"))


def bulky(path):
    """The features file is kept, or deleted once consumed when `keep_features` is false."""
    return path if config["keep_features"] else temp(path)


def corpus_input(wildcards):
    """The demo corpus folder when the workflow builds it; a real corpus is read, not tracked."""
    return [CORPUS_ROOT] if DEMO else []


def fold_dir(wildcards):
    return f"results/{wildcards.exp}/fold{wildcards.fold}"


def init_input(wildcards, init):
    """Named input of a stage's initial weights: a model folder, or the demo's tiny backbone."""
    if init == "pretrained":
        backbone = EXPERIMENTS[wildcards.exp]["backbone"]
        return {"backbone": backbone} if DEMO and backbone == config["backbone"] else {}
    return {"model": f"{fold_dir(wildcards)}/{init}"}


def mtl_init(wildcards):
    return init_input(wildcards, "pretrained")


def stage1_init(wildcards):
    return init_input(wildcards, EXPERIMENTS[wildcards.exp]["stage1"]["init"])


def stage2_init(wildcards):
    return init_input(wildcards, EXPERIMENTS[wildcards.exp]["stage2"]["init"])


def feature_model(wildcards):
    """The GMP features are read from the fold's gender-augmented multi-task model."""
    return f"{fold_dir(wildcards)}/mtl"


def gmp_label_files(wildcards):
    gmp = EXPERIMENTS[wildcards.exp]["gmp"]
    return {
        f"L{layer}_k{k}": f"{fold_dir(wildcards)}/gmp/layer{layer}_k{k}.h5"
        for layer in gmp["layers"]
        for k in gmp["k"]
    }


def state_dir(wildcards, output):
    """Undeclared resume folder beside the declared model folder (survives Snakemake's cleanup)."""
    return f"{output.model}.resume"


def train_runtime(wildcards, attempt):
    """Minutes requested per training job; grows with each retry after a time-out."""
    return 240 * attempt


def fold_files(wildcards, name):
    return [f"results/{wildcards.exp}/fold{fold}/{name}" for fold in FOLDS]


def fold_metrics(wildcards):
    return fold_files(wildcards, "metrics.tsv")


def fold_predictions(wildcards):
    return fold_files(wildcards, "predictions.tsv")


def experiment_stages(exp):
    """The training stages an experiment runs, in order."""
    settings = EXPERIMENTS[exp]
    if needs_gmp(settings):
        return ["mtl", "stage1", "stage2"]
    return ["mtl", "stage2"] if settings["stage2"]["init"] == "mtl" else ["stage2"]


def experiment_models(exp):
    """Every model folder of an experiment, keyed '<stage>_fold<N>'."""
    return {f"{stage}_fold{fold}": f"results/{exp}/fold{fold}/{stage}" for stage in experiment_stages(exp) for fold in FOLDS}


def stage_models(wildcards):
    """Every model folder of an experiment (their history.tsv feed the training curves)."""
    return experiment_models(wildcards.exp)


def experiment_summaries(wildcards):
    return {name: f"results/{name}/metrics/summary.tsv" for name in EXPERIMENTS}


def all_targets():
    targets = ["results/manifest.tsv", "results/manifest_counts.tsv", "results/folds.tsv", "results/comparison.tsv"]
    for name in EXPERIMENTS:
        targets += [
            f"results/{name}/metrics/folds.tsv",
            f"results/{name}/metrics/summary.tsv",
            f"results/{name}/plots/confusion.png",
            f"results/{name}/plots/training_curves.png",
            *experiment_models(name).values(),  # a deleted model is retrained, and what depends on it reruns
        ]
    return targets
