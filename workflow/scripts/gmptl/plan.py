"""What a configured run will cost before it starts: jobs per stage, GPU hours, audio hours per fold, disk.

The jobs are the workflow's own: the stages of every (experiment, seed) run from `gmptl.recipes`, shared
stages counted once, times the folds. Disk per output kind:

    features   frames × hidden × 2 bytes (float16) × layers, per (features recipe, fold)
    labels     frames × 4 bytes (int32) + k × hidden × 4 bytes (float32 centroids), per (layer, k, fold)
    models     parameters × 4 bytes (float32), per (stage, fold)

where frames are counted over every utterance of the fold (train, valid and test: the features file holds
them all) with the backbone's convolution formula on each utterance's samples (≈ 50 per second).
Small files (HDF5 alignment arrays, logs, tables) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .cache import human_bytes
from .config import deployed_experiments, experiment_settings
from .corpus import manifest_samples
from .demo import demo_outputs
from .errors import BackboneError, ConfigError
from .preflight import frames_of
from .protocols import expected_fold_ids
from .recipes import MODEL_KINDS, Stage, catalog, experiment_seeds, experiment_stages, seeded
from .settings import GmpHead
from .workplan import GPU_RULES, RULES, workflow_jobs
from .workplan import minutes as rule_minutes

FEATURE_BYTES, LABEL_BYTES, CENTROID_BYTES, WEIGHT_BYTES = 2, 4, 4, 4
HUBERT_CONV = ((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2))


@dataclass(frozen=True)
class BackboneShape:
    """What the disk estimate needs of a backbone; `source` says where it was read."""

    hidden: int
    layers: int
    params: int
    conv_kernel: tuple[int, ...] = HUBERT_CONV[0]
    conv_stride: tuple[int, ...] = HUBERT_CONV[1]
    source: str = ""

    def frames(self, samples) -> int | np.ndarray:
        """Frames the convolutional feature encoder makes of `samples` (0 for audio shorter than its field)."""
        frames = frames_of(np.asarray(samples), list(self.conv_kernel), list(self.conv_stride))
        return int(frames) if frames.ndim == 0 else frames


# Hub ids whose shape is known without their files (parameters counted on transformers' HubertModel
# built from the hub config: hubert-base-ls960 is HubertConfig's defaults; hubert-large-ll60k is hidden
# 1024, 24 layers, 16 heads, feed-forward 4096, layer-norm conv encoder with bias, stable layer norm).
KNOWN_BACKBONES = {
    "facebook/hubert-base-ls960": BackboneShape(768, 12, 94_371_712, source="table of known backbones"),
    "facebook/hubert-large-ll60k": BackboneShape(1024, 24, 315_438_720, source="table of known backbones"),
}


@dataclass
class Corpus:
    """Per fold: the samples of every utterance and its split (train | valid | test)."""

    folds: dict[int, pd.DataFrame]  # columns: samples, split
    sample_rate: int
    source: str

    def hours(self, fold: int, split: str | None = None) -> float:
        table = self.folds[fold]
        rows = table if split is None else table[table["split"] == split]
        return float(rows["samples"].sum()) / self.sample_rate / 3600


@dataclass
class JobCount:
    rule: str
    what: str
    jobs: int

    @property
    def gpu_hours(self) -> float:
        return self.jobs * rule_minutes(self.rule) / 60 if RULES[self.rule].gpu else 0.0


@dataclass
class DiskItem:
    kind: str
    files: int
    bytes: int
    note: str = ""


@dataclass
class Plan:
    corpus: Corpus
    backbone: BackboneShape
    backbone_name: str
    jobs: list[JobCount] = field(default_factory=list)
    disk: list[DiskItem] = field(default_factory=list)


# --- inputs ---------------------------------------------------------------------------------------


def backbone_shape(name: str) -> BackboneShape:
    """Hidden size, layers, parameters and convolution of a backbone: its config when on disk, else the table."""
    from .backbone import load_backbone_config  # transformers loads only here

    try:
        config = load_backbone_config(name)
    except BackboneError:
        if name in KNOWN_BACKBONES:
            return KNOWN_BACKBONES[name]
        known = ", ".join(KNOWN_BACKBONES)
        raise BackboneError(
            f"backbone '{name}' is not on disk and not in the table of known backbones ({known}); "
            "cache it or point config key 'backbone' at a save_pretrained folder"
        ) from None
    return BackboneShape(
        hidden=int(config.hidden_size),
        layers=int(config.num_hidden_layers),
        params=count_parameters(config),
        conv_kernel=tuple(config.conv_kernel),
        conv_stride=tuple(config.conv_stride),
        source=f"config of {name}",
    )


def count_parameters(config) -> int:
    """Parameters of the bare backbone a config describes (built on the meta device: no memory, no weights)."""
    import torch
    from transformers import AutoModel

    with torch.device("meta"):
        model = AutoModel.from_config(config)
    return sum(p.numel() for p in model.parameters())


def corpus_from_tables(manifest: pd.DataFrame, folds: pd.DataFrame, sample_rate: int, source: str) -> Corpus:
    """Samples and split of every utterance of every fold, from the manifest's `samples` and the folds table."""
    samples = pd.Series(manifest_samples(manifest, sample_rate), index=manifest["utt_id"].to_numpy())
    missing = sorted(set(folds["utt_id"]) - set(samples.index))
    if missing:
        raise ConfigError(f"{len(missing)} utterance(s) of the folds table are not in the manifest, e.g. {missing[0]}")
    per_fold = {
        int(fold): pd.DataFrame({"samples": samples.loc[rows["utt_id"]].to_numpy(), "split": rows["split"].to_numpy()})
        for fold, rows in folds.groupby("fold", sort=True)
    }
    return Corpus(per_fold, sample_rate, source)


def corpus_from_files(config: dict, manifest_path: Path, folds_path: Path | None) -> Corpus:
    """The corpus of a built manifest; folds from results/folds.tsv, else made as `make_folds` would make them."""
    from .corpus import read_manifest
    from .folds import make_folds

    if not manifest_path.is_file():
        raise ConfigError(
            f"manifest '{manifest_path}' does not exist; build it first (snakemake results/manifest.tsv), "
            "pass --manifest PATH, or plan from corpus statistics with --utterances N --mean-seconds S"
        )
    manifest = read_manifest(manifest_path)
    if folds_path is not None and folds_path.is_file():
        folds, source = pd.read_csv(folds_path, sep="\t", dtype={"utt_id": str}), f"{manifest_path}, {folds_path}"
    else:
        fold_settings = config["folds"]
        folds = make_folds(
            manifest,
            validation=fold_settings["validation"],
            valid_fraction=fold_settings["valid_fraction"],
            seed=config["seed"],
            protocol=fold_settings["protocol"],
            k=fold_settings["k"],
        )
        source = f"{manifest_path} (folds made as make_folds makes them)"
    return corpus_from_tables(manifest, folds, config["corpus"]["sample_rate"], source)


def corpus_from_statistics(config: dict, utterances: int, mean_seconds: float) -> Corpus:
    """An estimate from corpus size alone: equal utterances of `mean_seconds`, every utterance in every fold,
    each fold testing an equal share; validation is not separated (it is counted as training)."""
    folds = expected_fold_ids(config["corpus"], config["folds"])
    if not folds:
        raise ConfigError("the folds of this protocol depend on the data; plan from a manifest (--manifest PATH)")
    if utterances < 1 or mean_seconds <= 0:
        raise ConfigError("--utterances must be at least 1 and --mean-seconds positive")
    rate = config["corpus"]["sample_rate"]
    samples = round(mean_seconds * rate)
    per_fold = {}
    for index, fold in enumerate(folds):
        test = utterances // len(folds) + (1 if index < utterances % len(folds) else 0)
        split = ["test"] * test + ["train"] * (utterances - test)
        per_fold[fold] = pd.DataFrame({"samples": samples, "split": split})
    return Corpus(per_fold, rate, f"{utterances} utterances of {mean_seconds:g} s (estimate)")


# --- the plan ---------------------------------------------------------------------------------------


def experiment_plans(config: dict) -> dict[tuple[str, int], dict[str, Stage]]:
    """The stages of every (experiment, seed) run, as the workflow plans them (workflow/rules/common.smk)."""
    plans = {}
    for name in config["experiments"]:
        settings = experiment_settings(config, name)
        for seed in experiment_seeds(config, settings):
            plans[(name, seed)] = experiment_stages(config, seeded(settings, seed))
    return plans


def label_heads(plans: dict) -> set[tuple[str, GmpHead]]:
    """(gmp recipe id, head) of every label file the stage-1 recipes read (one fit_kmeans job per fold each)."""
    heads = set()
    for stages in plans.values():
        if "stage1" in stages:
            heads |= {(stages["gmp"].id, head) for head in gmp_heads_of(stages["stage1"])}
    return heads


def gmp_heads_of(stage1: Stage) -> list[GmpHead]:
    return [GmpHead.parse(name) for name in stage1.recipe["gmp"]["heads"]]


def experiment_seed_lists(config: dict) -> dict[str, list[int]]:
    return {name: experiment_seeds(config, experiment_settings(config, name)) for name in config["experiments"]}


def count_jobs(config: dict, plans: dict, folds: list[int]) -> list[JobCount]:
    """Jobs per rule and output kind, as the workflow enumerates them (`gmptl.workplan`): stages shared by
    experiments and seeds counted once, deploy jobs (fold 0) included."""
    builds = demo_outputs(config["demo"]["enabled"], config["corpus"]["root"], config["backbone"])
    jobs = workflow_jobs(
        plans,
        experiment_seed_lists(config),
        folds,
        deployed=deployed_experiments(config),
        demo_corpus=config["corpus"]["root"] if builds.corpus else None,
        demo_backbone=config["backbone"] if builds.backbone else None,
    )
    counts: dict[tuple[str, str], int] = {}
    for job in jobs:
        counts[(job.rule, job.what)] = counts.get((job.rule, job.what), 0) + 1
    gpu_first = sorted(counts.items(), key=lambda item: not RULES[item[0][0]].gpu)
    return [JobCount(rule, what, n) for (rule, what), n in gpu_first]


def fold_frames(corpus: Corpus, shape: BackboneShape) -> dict[int, int]:
    """Frames of every utterance of each fold (the rows of its features and label files)."""
    return {fold: int(shape.frames(table["samples"].to_numpy()).sum()) for fold, table in corpus.folds.items()}


def model_parameters(stage: Stage, shape: BackboneShape, classes: list[str]) -> int:
    """Parameters of a stage's model: the backbone, the mask embedding and the stage's heads (gmptl.model)."""
    from .stages import stage_spec

    spec, dim = stage_spec(stage.recipe, classes).heads, shape.hidden

    def pooling(kind: str) -> int:
        return dim + 1 if kind == "attentive" else 0

    heads = dim  # mask embedding
    if spec.emotion_pooling:
        n = len(spec.classes)
        heads += pooling(spec.emotion_pooling) + (n * dim if spec.emotion_classifier == "amsoftmax" else n * dim + n)
    if spec.gender_pooling:
        heads += pooling(spec.gender_pooling) + 2 * dim + 2
    heads += sum(dim * k + k for k in spec.gmp_heads.values())
    return shape.params + heads


def estimate_disk(config: dict, plans: dict, corpus: Corpus, shape: BackboneShape) -> list[DiskItem]:
    """Bytes of features, labels and models for every fold."""
    frames = fold_frames(corpus, shape)
    total_frames = sum(frames.values())
    stages = catalog(plans)
    features = [stage for (kind, _), stage in stages.items() if kind == "features"]
    feature_bytes = sum(total_frames * shape.hidden * FEATURE_BYTES * len(s.recipe["layers"]) for s in features)
    heads = label_heads(plans)
    label_bytes = sum(
        total_frames * LABEL_BYTES + len(frames) * head.k * shape.hidden * CENTROID_BYTES for _, head in heads
    )
    classes = config["corpus"]["classes"]
    models = [stage for (kind, _), stage in stages.items() if kind in MODEL_KINDS]
    model_bytes = sum(len(frames) * model_parameters(s, shape, classes) * WEIGHT_BYTES for s in models)
    note = (
        "temporary (runtime.keep_features: false): deleted after its k-means jobs, still peak disk"
        if not config["runtime"]["keep_features"]
        else "kept (runtime.keep_features: true)"
    )
    return [
        DiskItem("features", len(features) * len(frames), feature_bytes, note),
        DiskItem("labels", len(heads) * len(frames), label_bytes),
        DiskItem("models", len(models) * len(frames), model_bytes),
    ]


def make_plan(config: dict, corpus: Corpus, shape: BackboneShape | None = None) -> Plan:
    """Jobs and disk of the configured run on `corpus`."""
    name = config["backbone"]
    shape = shape or backbone_shape(name)
    plans = experiment_plans(config)
    return Plan(
        corpus=corpus,
        backbone=shape,
        backbone_name=name,
        jobs=count_jobs(config, plans, list(corpus.folds)),
        disk=estimate_disk(config, plans, corpus, shape),
    )


# --- text -----------------------------------------------------------------------------------------


def format_plan(plan: Plan) -> str:
    corpus, shape = plan.corpus, plan.backbone
    frames = fold_frames(corpus, shape)
    lines = [
        f"corpus: {corpus.source}",
        f"backbone: {plan.backbone_name}: hidden {shape.hidden}, {shape.layers} layers, "
        f"{shape.params / 1e6:.1f} M parameters ({shape.source})",
        "",
        "audio per fold (hours)",
        f"  {'fold':<6}{'train':>8}{'valid':>8}{'test':>8}{'frames':>12}",
    ]
    for fold in corpus.folds:
        hours = [corpus.hours(fold, split) for split in ("train", "valid", "test")]
        lines.append(f"  {fold:<6}" + "".join(f"{h:>8.2f}" for h in hours) + f"{frames[fold]:>12,}")
    lines += ["", f"  {'rule':<22}{'output':<22}{'runs on':<9}{'jobs':>6}{'GPU h':>8}"]
    for job in plan.jobs:
        where = "GPU" if job.rule in GPU_RULES else "local" if RULES[job.rule].local else "CPU"
        gpu = f"{job.gpu_hours:>8.1f}" if job.rule in GPU_RULES else f"{'-':>8}"
        lines.append(f"  {job.rule:<22}{job.what:<22}{where:<9}{job.jobs:>6}{gpu}")
    gpu_jobs = [job for job in plan.jobs if job.rule in GPU_RULES]
    lines.append(
        f"  {'GPU jobs, requested GPU hours':<53}{sum(j.jobs for j in gpu_jobs):>6}"
        f"{sum(j.gpu_hours for j in gpu_jobs):>8.1f}"
    )
    limits = ", ".join(f"{rule} {rule_minutes(rule)} min" for rule in GPU_RULES)
    lines.append(f"  (requested = the rules' time limits at the first attempt: {limits};")
    lines.append(f"   a retried training job asks for {rule_minutes('train_stage')} × attempt)")
    total = sum(i.bytes for i in plan.disk)
    lines += ["", f"  {'disk':<10}{'files':>7}{'size':>11}"]
    for item in plan.disk:
        lines.append(f"  {item.kind:<10}{item.files:>7}{human_bytes(item.bytes):>11}  {item.note}".rstrip())
    lines.append(f"  {'total':<10}{sum(i.files for i in plan.disk):>7}{human_bytes(total):>11}")
    return "\n".join(lines)
