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
from .gpumem import MemoryEstimate, extraction_memory, fits, shape_from_config, training_memory
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


# Hub ids whose config is known without their files: the published sizes, as transformers configs
# (hubert-base-ls960 is HubertConfig's defaults; the large ones are hidden 1024, 24 layers, 16 heads,
# feed-forward 4096, a layer-norm conv encoder and stable layer norm).
LARGE = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "feat_extract_norm": "layer",
    "do_stable_layer_norm": True,
    "conv_bias": True,
}
KNOWN_CONFIGS = {
    "facebook/hubert-base-ls960": ("hubert", {}),
    "facebook/hubert-large-ll60k": ("hubert", LARGE),
    "microsoft/wavlm-large": ("wavlm", {**LARGE, "conv_bias": False}),
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
class MemoryRow:
    """The estimated peak GPU memory of one kind of job, and whether it fits the GPU (`--gpu-mem`)."""

    job: str  # e.g. "train_stage stage1", "extract_features"
    backbone: str
    setting: str  # the batch it was estimated at
    estimate: MemoryEstimate
    lower: str  # the keys to lower when it does not fit
    fits: bool | None = None  # None: no GPU size given


@dataclass
class Plan:
    corpus: Corpus
    backbone: BackboneShape
    backbone_name: str
    jobs: list[JobCount] = field(default_factory=list)
    disk: list[DiskItem] = field(default_factory=list)
    memory: list[MemoryRow] = field(default_factory=list)
    gpu_gib: float | None = None

    @property
    def misfits(self) -> list[MemoryRow]:
        return [row for row in self.memory if row.fits is False]


# --- inputs ---------------------------------------------------------------------------------------


def backbone_config(name: str):
    """(transformers config, where it was read) of a backbone: its own config when on disk, else the table."""
    from .backbone import load_backbone_config  # transformers loads only here

    try:
        return load_backbone_config(name), f"config of {name}"
    except BackboneError:
        if name not in KNOWN_CONFIGS:
            known = ", ".join(KNOWN_CONFIGS)
            raise BackboneError(
                f"backbone '{name}' is not on disk and not in the table of known backbones ({known}); "
                "cache it or point config key 'backbone' at a save_pretrained folder"
            ) from None
    from transformers import AutoConfig

    model_type, values = KNOWN_CONFIGS[name]
    return AutoConfig.for_model(model_type, **values), "table of known backbones"


def backbone_shape(name: str) -> BackboneShape:
    """Hidden size, layers, parameters and convolution of a backbone (`backbone_config`)."""
    config, source = backbone_config(name)
    return BackboneShape(
        hidden=int(config.hidden_size),
        layers=int(config.num_hidden_layers),
        params=count_parameters(config),
        conv_kernel=tuple(config.conv_kernel),
        conv_stride=tuple(config.conv_stride),
        source=source,
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
        ablation=bool(config.get("grid")),
    )
    counts: dict[tuple[str, str], int] = {}
    for job in jobs:
        counts[(job.rule, job.what)] = counts.get((job.rule, job.what), 0) + 1
    rules, kinds = list(RULES), list(MODEL_KINDS)

    def order(item):
        (rule, what), _ = item
        return (not RULES[rule].gpu, rules.index(rule), kinds.index(what) if what in kinds else 0)

    return [JobCount(rule, what, n) for (rule, what), n in sorted(counts.items(), key=order)]


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


def memory_precision(precision: str) -> str:
    """The autocast precision a GPU job runs (`auto` is bf16 on CUDA)."""
    return "bf16" if precision == "auto" else precision


def _training_row(kind: str, stage: Stage, backbone: str, shape, precision: str) -> MemoryRow:
    from .stages import stage_spec

    recipe, heads = stage.typed, stage_spec(stage.typed).heads
    cfg = recipe.train
    frame_heads = tuple(heads.gmp_heads.values())
    utterance_heads = int(heads.emotion_pooling is not None) + int(heads.gender_pooling is not None)
    estimate = training_memory(
        shape,
        batch_size=cfg.batch_size,
        crop_s=cfg.max_crop_s,
        precision=precision,
        freeze_feature_encoder=cfg.freeze_feature_encoder,
        frame_heads=frame_heads,
        utterance_heads=utterance_heads,
        sample_rate=int(recipe.data.corpus["sample_rate"]),
    )
    lower = f"{kind}.train.batch_size (or train.batch_size), {kind}.train.max_crop_s"
    if precision == "fp32":
        lower += " (or set runtime.precision: bf16)"
    setting = f"batch {cfg.batch_size} × {cfg.max_crop_s:g} s" + (f", k {sum(frame_heads)}" if frame_heads else "")
    return MemoryRow(f"train_stage {kind}", backbone, setting, estimate, lower)


def _extraction_row(stage: Stage, backbone: str, shape, precision: str, batch_seconds: float) -> MemoryRow:
    layers = len(stage.typed.layers)
    estimate = extraction_memory(
        shape,
        batch_seconds=batch_seconds,
        precision=precision,
        kept_layers=layers,
        sample_rate=int(stage.typed.data.corpus["sample_rate"]),
    )
    lower = "runtime.extract_batch_seconds" + (" (or set runtime.precision: bf16)" if precision == "fp32" else "")
    return MemoryRow("extract_features", backbone, f"{batch_seconds:g} s of audio, {layers} layer(s)", estimate, lower)


def estimate_memory(config: dict, plans: dict, gpu_gib: float | None = None) -> list[MemoryRow]:
    """Peak GPU memory of every distinct training and extraction job (`gmptl.gpumem`), against `gpu_gib`."""
    precision = memory_precision(config["runtime"]["precision"])
    shapes: dict[str, object] = {}
    rows: dict[tuple, MemoryRow] = {}
    for (name, _), stages in plans.items():
        backbone = experiment_settings(config, name)["backbone"]
        if backbone not in shapes:
            shapes[backbone] = shape_from_config(backbone_config(backbone)[0])
        for kind, stage in stages.items():
            if kind in MODEL_KINDS:
                row = _training_row(kind, stage, backbone, shapes[backbone], precision)
            elif kind == "features":
                batch_seconds = config["runtime"]["extract_batch_seconds"]
                row = _extraction_row(stage, backbone, shapes[backbone], precision, batch_seconds)
            else:
                continue
            rows.setdefault((row.job, row.backbone, row.setting), row)
    jobs = [f"train_stage {kind}" for kind in MODEL_KINDS] + ["extract_features"]
    rows = dict(sorted(rows.items(), key=lambda item: jobs.index(item[0][0])))
    for row in rows.values():
        row.fits = None if gpu_gib is None else fits(row.estimate, gpu_gib)
    return list(rows.values())


def make_plan(config: dict, corpus: Corpus, shape: BackboneShape | None = None, gpu_gib: float | None = None) -> Plan:
    """Jobs, disk and GPU memory of the configured run on `corpus` (memory checked against `gpu_gib` when given)."""
    name = config["backbone"]
    shape = shape or backbone_shape(name)
    plans = experiment_plans(config)
    return Plan(
        corpus=corpus,
        backbone=shape,
        backbone_name=name,
        jobs=count_jobs(config, plans, list(corpus.folds)),
        disk=estimate_disk(config, plans, corpus, shape),
        memory=estimate_memory(config, plans, gpu_gib),
        gpu_gib=gpu_gib,
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
    limits = ", ".join(f"{rule} {rule_minutes(rule)}" for rule in GPU_RULES)
    lines.append("  (requested = the rules' time limits in minutes at the first attempt:")
    lines.append(f"   {limits}; a retried training job asks for {rule_minutes('train_stage')} × attempt)")
    total = sum(i.bytes for i in plan.disk)
    lines += ["", f"  {'disk':<10}{'files':>7}{'size':>11}"]
    for item in plan.disk:
        lines.append(f"  {item.kind:<10}{item.files:>7}{human_bytes(item.bytes):>11}  {item.note}".rstrip())
    lines.append(f"  {'total':<10}{sum(i.files for i in plan.disk):>7}{human_bytes(total):>11}")
    return "\n".join(lines + format_memory(plan))


def format_memory(plan: Plan) -> list[str]:
    """The GPU-memory table: one row per kind of GPU job, with its verdict when a GPU size was given."""
    if not plan.memory:
        return []
    against = f", against {plan.gpu_gib:g} GiB (+15 % for fragmentation)" if plan.gpu_gib is not None else ""
    lines = ["", f"  peak GPU memory per job (estimate, gmptl.gpumem{against})"]
    lines.append(f"  {'job':<24}{'backbone':<30}{'at':<28}{'GiB':>7}  fits")
    for row in plan.memory:
        verdict = "-" if row.fits is None else "yes" if row.fits else f"NO: lower {row.lower}"
        gib = row.estimate.total / 2**30
        lines.append(f"  {row.job:<24}{row.backbone[-29:]:<30}{row.setting:<28}{gib:>7.1f}  {verdict}")
    return lines
