"""Checks that run before any training: what can be known from the config, manifest, folds and backbone
configs is checked up front, so a bad setting fails in seconds instead of after hours of GPU time.

The config-only checks (`check_config`: layers and training crops against each backbone's config, when that
config is on disk) run once when the workflow starts. Every training job runs the data checks first, for
the experiments whose plans hold its stage (they take well under a second), so the first job of a run stops
on a setting that would fail only after multi-task training and extraction.

- every GMP layer exists in the backbone (`gmp.layers` against its `num_hidden_layers`);
- every k is at most the training frames each fold offers k-means (`gmp.k` against the frames the
  manifest implies, after `kmeans.fit_fraction` and `kmeans.max_fit_frames`);
- no utterance is shorter than the backbone's receptive field (it would make no frame at all): this is an
  error naming the utterances (remove them from the corpus or its label files); nothing is dropped silently;
- every stage's training crop (`train.max_crop_s`) spans at least the receptive field.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from .config import experiment_settings
from .corpus import manifest_samples
from .errors import ConfigError, CorpusError
from .recipes import MODEL_KINDS, experiment_seeds, experiment_stages, seeded

log = logging.getLogger(__name__)


def preflight_checks(config: dict, experiments: dict[str, dict]) -> list[dict]:
    """One check per (experiment, backbone): the layers and k it clusters, how k-means samples frames, and the
    shortest training crop of its stages."""
    checks = []
    for name, settings in experiments.items():
        stages = experiment_stages(config, seeded(settings, experiment_seeds(config, settings)[0]))
        crops = {kind: stage.typed.train.max_crop_s for kind, stage in stages.items() if kind in MODEL_KINDS}
        check = {"experiment": name, "backbone": settings["backbone"], "layers": [], "k": [], "crops": crops}
        if "gmp" in stages:
            kmeans = stages["gmp"].recipe["kmeans"]
            check.update(
                layers=sorted(settings["gmp"]["layers"]),
                k=sorted(settings["gmp"]["k"]),
                fit_fraction=kmeans["fit_fraction"],
                max_fit_frames=kmeans["max_fit_frames"],
            )
        checks.append(check)
    return checks


def experiments_using(config: dict, stage: tuple[str, str] | None) -> dict[str, dict]:
    """The settings of the experiments whose plans (any seed) hold `stage` = (kind, id); every one for None."""
    chosen = {}
    for name in config["experiments"]:
        settings = experiment_settings(config, name)
        for seed in experiment_seeds(config, settings):
            stages = experiment_stages(config, seeded(settings, seed))
            if stage is None or any((s.kind, s.id) == tuple(stage) for s in stages.values()):
                chosen[name] = settings
                break
    return chosen


def check_before_training(
    config: dict, manifest: pd.DataFrame, folds: pd.DataFrame, stage: tuple[str, str] | None = None
) -> list[str]:
    """Run the checks of the experiments that use `stage` (kind, id; None: every experiment); raise on the first
    problem."""
    experiments = experiments_using(config, stage)
    report = run_preflight(manifest, folds, preflight_checks(config, experiments), config["corpus"]["sample_rate"])
    log.info("checks before training passed: %s", "; ".join(report))
    return report


def check_config(config: dict) -> None:
    """What the config alone can tell, before any job: every experiment's layers and training crops against its
    backbone's config, for backbones whose config is on disk (the demo's tiny backbone is built by a rule; its
    jobs check it)."""
    experiments = {name: experiment_settings(config, name) for name in config["experiments"]}
    checks = preflight_checks(config, experiments)
    rate = config["corpus"]["sample_rate"]
    for backbone in sorted({check["backbone"] for check in checks}):
        backbone_config = config_on_disk(backbone)
        if backbone_config is None:
            continue
        for check in (c for c in checks if c["backbone"] == backbone):
            _check_layers(check, int(backbone_config.num_hidden_layers), backbone)
            _check_crops(check, backbone_config, backbone, rate)


def config_on_disk(name: str) -> SimpleNamespace | None:
    """The sizes a backbone's config.json gives (layers, convolution), read as JSON without loading transformers
    (this runs whenever the Snakefile is parsed): from a local folder, or from the Hugging Face cache; None when
    neither has it (e.g. the demo's tiny backbone before its rule ran)."""
    path = Path(name) / "config.json"
    if not path.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name, "config.json")
        except Exception:  # noqa: BLE001 - a name that is no hub id (e.g. a missing folder) is simply not on disk
            return None
        if not isinstance(cached, str):
            return None
        path = Path(cached)
    try:
        values = json.loads(path.read_text())
        return SimpleNamespace(
            num_hidden_layers=int(values["num_hidden_layers"]),
            conv_kernel=list(values["conv_kernel"]),
            conv_stride=list(values["conv_stride"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None  # an unreadable config is reported by the job that loads the backbone


def receptive_field(kernels: list[int], strides: list[int]) -> int:
    """Samples the convolutional feature encoder needs for one frame."""
    field, jump = 1, 1
    for kernel, stride in zip(kernels, strides, strict=True):
        field += (kernel - 1) * jump
        jump *= stride
    return field


def _check_crops(check: dict, backbone_config, backbone: str, sample_rate: int) -> None:
    need = receptive_field(list(backbone_config.conv_kernel), list(backbone_config.conv_stride))
    for kind, crop in check.get("crops", {}).items():
        if int(crop * sample_rate) < need:
            raise ConfigError(
                f"config key '{kind}.train.max_crop_s' (experiment '{check['experiment']}', from train.max_crop_s "
                f"unless set there): a crop of {crop:g} s is shorter than the "
                f"receptive field of backbone '{backbone}' ({need} samples = {need / sample_rate:.3f} s at "
                f"{sample_rate} Hz), so a cropped utterance makes no frame; raise it to at least "
                f"{need / sample_rate:.3f} s"
            )


def frames_of(samples: np.ndarray, kernels: list[int], strides: list[int]) -> np.ndarray:
    """Frames a convolutional feature encoder makes of `samples` (no padding: floor((L - k) / s) + 1 per layer)."""
    frames = np.asarray(samples, dtype=np.int64)
    for kernel, stride in zip(kernels, strides, strict=True):
        frames = np.where(frames >= kernel, (frames - kernel) // stride + 1, 0)
    return frames


def run_preflight(manifest: pd.DataFrame, folds: pd.DataFrame, checks: list[dict], sample_rate: int) -> list[str]:
    """Run `checks` against the manifest and folds; raise on the first problem, else return a report."""
    samples = manifest_samples(manifest, sample_rate)
    report = [f"{len(manifest)} utterances, {len(folds['fold'].unique())} folds"]
    from .backbone import load_backbone_config  # torch and transformers load only here

    for backbone in sorted({check["backbone"] for check in checks}):
        config = load_backbone_config(backbone)
        layers = int(config.num_hidden_layers)
        frames = frames_of(samples, list(config.conv_kernel), list(config.conv_stride))
        _check_lengths(manifest, frames, backbone, sample_rate)
        report.append(f"backbone '{backbone}': {layers} layers; every utterance makes at least one frame")
        for check in (c for c in checks if c["backbone"] == backbone):
            _check_layers(check, layers, backbone)
            _check_crops(check, config, backbone, sample_rate)
            if check["k"]:
                report.append(_check_k(check, manifest, folds, frames))
    return report


def _check_lengths(manifest: pd.DataFrame, frames: np.ndarray, backbone: str, sample_rate: int) -> None:
    short = manifest.loc[frames < 1, "utt_id"].tolist()
    if short:
        raise CorpusError(
            f"{len(short)} utterance(s) are shorter than the receptive field of backbone '{backbone}' "
            f"(they make no frame at {sample_rate} Hz), e.g. {short[:5]}; remove them from the corpus "
            "(or its label files / table) and rerun"
        )


def _check_layers(check: dict, layers: int, backbone: str) -> None:
    bad = [layer for layer in check["layers"] if not 1 <= layer <= layers]
    if bad:
        raise ConfigError(
            f"config key 'gmp.layers' (experiment '{check['experiment']}') asks for layer(s) {bad}, but "
            f"backbone '{backbone}' has {layers} transformer layers (valid: 1..{layers})"
        )


def _check_k(check: dict, manifest: pd.DataFrame, folds: pd.DataFrame, frames: np.ndarray) -> str:
    frames_by_utt = pd.Series(frames, index=manifest["utt_id"].to_numpy())
    train = folds[folds["split"] == "train"]
    per_fold = train.groupby("fold")["utt_id"].apply(lambda ids: int(frames_by_utt.reindex(ids).fillna(0).sum()))
    fit = (per_fold * check["fit_fraction"]).clip(upper=check["max_fit_frames"]).astype(int)
    fold, fewest = int(fit.idxmin()), int(fit.min())
    largest = max(check["k"])
    if largest > fewest:
        raise ConfigError(
            f"config key 'gmp.k' (experiment '{check['experiment']}') asks for k = {largest}, but fold {fold} "
            f"offers k-means only about {fewest} training frames (after kmeans.fit_fraction / kmeans.max_fit_frames); "
            "lower gmp.k or fit on more frames"
        )
    return f"experiment '{check['experiment']}': k up to {largest} ≤ {fewest} training frames (fold {fold}, fewest)"
