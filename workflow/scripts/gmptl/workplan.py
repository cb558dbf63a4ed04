"""The jobs a config implies, enumerated once: the Snakefile's targets and `gmptl plan` both come from here.

`workflow_jobs` lists every job the workflow runs for a config on given folds — rule, what it makes, its
output paths, fold, seed, experiment, the stage's recipe id — with stages shared by experiments and seeds
listed once. `rule all` requests the outputs of the jobs marked `target` (cached features and label files
are not targets: a deleted one is rebuilt only when something needs it); `gmptl plan` counts the jobs.
A test compares these counts with `snakemake -n`, so the plan cannot disagree with the workflow.

`RULES` holds what each rule asks of the scheduler (GPU or not, memory, minutes at the first attempt); the
rule files read their resources from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .folds import DEPLOY_FOLD
from .recipes import MODEL_KINDS, Stage, features_file, label_files, model_dir, run_name


@dataclass(frozen=True)
class Rule:
    """What one rule asks of the scheduler: a GPU, memory, minutes at the first attempt, local or not."""

    gpu: bool = False
    mem_mb: int = 0
    minutes: int = 0
    local: bool = False
    minutes_grow_per_attempt: bool = False


RULES = {
    "make_demo_corpus": Rule(),
    "make_tiny_backbone": Rule(),
    "build_manifest": Rule(),
    "make_folds": Rule(local=True),
    "make_deploy_split": Rule(),
    "train_stage": Rule(gpu=True, mem_mb=32000, minutes=240, minutes_grow_per_attempt=True),
    "extract_features": Rule(gpu=True, mem_mb=16000, minutes=120),
    "fit_kmeans": Rule(gpu=True, mem_mb=16000, minutes=120),
    "evaluate_fold": Rule(gpu=True, mem_mb=8000, minutes=30),
    "record_stages": Rule(local=True),
    "summarize_experiment": Rule(local=True),
    "plot_experiment": Rule(local=True),
    "compare_experiments": Rule(local=True),
    "ablation": Rule(local=True),
    "deploy_model": Rule(),
    "all": Rule(local=True),
}
LOCAL_RULES = tuple(name for name, rule in RULES.items() if rule.local)
GPU_RULES = tuple(name for name, rule in RULES.items() if rule.gpu)


def minutes(rule: str, attempt: int = 1) -> int:
    """The time limit a rule asks for at an attempt (training grows with each retry after a time-out)."""
    spec = RULES[rule]
    return spec.minutes * attempt if spec.minutes_grow_per_attempt else spec.minutes


@dataclass(frozen=True)
class Job:
    """One job of the workflow: its rule, what it makes, its outputs and where it belongs."""

    rule: str
    what: str
    outputs: tuple[str, ...]
    fold: int | None = None
    seed: int | None = None
    experiment: str | None = None
    stage_id: str | None = None
    target: bool = True  # requested by `rule all`


def run_folder(experiment: str, seed: int, fold: int, several_seeds: bool) -> str:
    return f"results/{experiment}/{run_name(seed, fold, several_seeds)}"


def _stage_jobs(stages: dict[str, Stage], fold: int) -> list[Job]:
    jobs = []
    for kind, stage in stages.items():
        if kind in MODEL_KINDS:
            jobs.append(Job("train_stage", kind, (model_dir(kind, stage.id, fold),), fold, stage_id=stage.id))
        elif kind == "features":
            path = features_file(stage.id, fold)
            jobs.append(Job("extract_features", "features", (path,), fold, stage_id=stage.id, target=False))
    if "stage1" in stages:  # one k-means job per label file the stage-1 recipe reads
        gmp_id = stages["gmp"].id
        for path in label_files(stages["stage1"].typed, fold).values():
            jobs.append(Job("fit_kmeans", "labels per (layer, k)", (path,), fold, stage_id=gmp_id, target=False))
    return jobs


def _experiment_jobs(experiment: str, seeds: list[int], folds: list[int]) -> list[Job]:
    several = len(seeds) > 1
    jobs = [
        Job(
            "evaluate_fold",
            "predictions",
            tuple(
                f"{run_folder(experiment, seed, fold, several)}/{name}" for name in ("predictions.tsv", "metrics.tsv")
            ),
            fold,
            seed,
            experiment,
        )
        for seed in seeds
        for fold in folds
    ]
    base = f"results/{experiment}"
    tables = ("metrics/folds.tsv", "metrics/summary.tsv", "metrics/folds.html", "metrics/summary.html", "settings.html")
    jobs += [
        Job("record_stages", "stages.tsv", (f"{base}/stages.tsv",), experiment=experiment),
        Job("summarize_experiment", "tables", tuple(f"{base}/{name}" for name in tables), experiment=experiment),
        Job(
            "plot_experiment",
            "plots",
            (f"{base}/plots/confusion.png", f"{base}/plots/training_curves.png"),
            experiment=experiment,
        ),
    ]
    return jobs


def workflow_jobs(
    plans: dict[tuple[str, int], dict[str, Stage]],
    seeds: dict[str, list[int]],
    folds: list[int],
    *,
    deployed: list[str],
    demo_corpus: str | None,
    demo_backbone: str | None,
    ablation: bool = False,
) -> list[Job]:
    """Every job of the workflow, each once.

    `plans`: the stages of every (experiment, seed) run; `seeds`: each experiment's seeds (first: the deploy
    seed); `folds`: the fold ids; `deployed`: experiments also trained on all data (fold 0);
    `demo_corpus` / `demo_backbone`: the paths the demo rules build, None when not built; `ablation`: whether
    the config has a grid (its table, plot and page).
    """
    jobs = []
    if demo_corpus:
        jobs.append(Job("make_demo_corpus", "demo corpus", (demo_corpus,)))
    if demo_backbone:
        jobs.append(Job("make_tiny_backbone", "tiny backbone", (demo_backbone,)))
    jobs.append(Job("build_manifest", "manifest", ("results/manifest.tsv", "results/manifest_counts.tsv")))
    jobs.append(Job("make_folds", "folds", ("results/folds.tsv",)))
    runs = [(stages, fold) for stages in plans.values() for fold in folds]
    if deployed:
        jobs.append(Job("make_deploy_split", "deploy split", ("results/deploy_split.tsv",)))
        runs += [(plans[(name, seeds[name][0])], DEPLOY_FOLD) for name in deployed]
    seen: set[tuple[str, ...]] = set()
    for stages, fold in runs:
        for job in _stage_jobs(stages, fold):
            if job.outputs not in seen:
                seen.add(job.outputs)
                jobs.append(job)
    for name in seeds:
        jobs += _experiment_jobs(name, seeds[name], folds)
    jobs += [Job("deploy_model", "deploy model", (f"results/{name}/deploy",), experiment=name) for name in deployed]
    jobs.append(Job("compare_experiments", "comparison", ("results/comparison.tsv", "results/comparison.html")))
    if ablation:
        jobs.append(Job("ablation", "ablation grid", ABLATION_OUTPUTS))
    return jobs


ABLATION_OUTPUTS = ("results/ablation.tsv", "results/ablation.html", "results/ablation.png")


def targets(jobs: list[Job]) -> list[str]:
    """The outputs `rule all` requests."""
    return [path for job in jobs if job.target for path in job.outputs]
