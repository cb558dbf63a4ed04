"""What each training/evaluation rule does, as plain functions of paths and settings."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .data import AudioSettings, Utterances, attach_frame_labels, require_classes, split_utterances
from .errors import TrainingError
from .features import expected_samples
from .fileio import atomic_path, code_version, file_digest, stable_hash, write_tsv
from .folds import fold_table
from .gmp import read_gmp_labels
from .metrics import classification_metrics
from .model import build_model, load_model, save_model
from .runtime import resolve_device, seed_everything
from .stages import stage_spec
from .train import clear_state, predict, train_stage

log = logging.getLogger(__name__)


def load_fold(manifest_path: str, folds_path: str, fold: int) -> pd.DataFrame:
    return fold_table(pd.read_csv(folds_path, sep="\t"), pd.read_csv(manifest_path, sep="\t"), fold)


def check_frame_counts(data: Utterances, encoder, sample_rate: int, source: str) -> None:
    """GMP labels must have exactly as many frames as the model makes of each utterance."""
    if not data.frame_labels or not len(data):
        return
    frames = encoder.frame_lengths(torch.from_numpy(expected_samples(data.paths, sample_rate))).numpy()
    for name, labels in data.frame_labels.items():
        counts = np.asarray([len(x) for x in labels])
        bad = np.flatnonzero(counts != frames)
        if len(bad):
            i = bad[0]
            raise TrainingError(
                f"GMP labels '{source}' ({name}) have {counts[i]} frames for '{data.utt_ids[i]}' but the model makes "
                f"{frames[i]} of it ({len(bad)} utterance(s) differ); rebuild the features and labels"
            )


def attach_gmp(datasets: list[Utterances], gmp_paths: dict[str, str], fold: int) -> None:
    for name, path in gmp_paths.items():
        alignment, labels, attrs = read_gmp_labels(path)
        if "fold" in attrs and int(attrs["fold"]) != fold:
            raise TrainingError(f"label file '{path}' belongs to fold {attrs['fold']}, not fold {fold}")
        for data in datasets:
            attach_frame_labels(data, name, alignment, labels, path)


def run_training(
    stage: str,
    *,
    manifest_path: str,
    folds_path: str,
    fold: int,
    settings: dict,
    corpus: dict,
    runtime: dict,
    init_model: str | None,
    gmp_paths: dict[str, str],
    out_dir: str,
    state_dir: str,
) -> None:
    """Train one stage of one fold and write its model folder (history.tsv included)."""
    classes = corpus["classes"]
    spec = stage_spec(stage, settings, classes)
    cfg = settings[stage]["train"]
    device = resolve_device(runtime["device"])
    seed_everything(settings["seed"] + fold)
    table = load_fold(manifest_path, folds_path, fold)
    train, valid = split_utterances(table, "train", classes), split_utterances(table, "valid", classes)
    if spec.emotion_weight > 0:
        require_classes(train, classes, "train", fold)
    if spec.gender_weight > 0 and len(set(train.gender.tolist())) < 2:
        raise TrainingError(f"fold {fold}: the train split holds one gender only; the gender head cannot learn")
    attach_gmp([train, valid], gmp_paths, fold)
    source = f"{init_model}/backbone" if init_model else settings["backbone"]
    model = build_model(source, spec.heads)
    for data in (train, valid):
        check_frame_counts(data, model.encoder, corpus["sample_rate"], ", ".join(gmp_paths.values()))
    inputs = [manifest_path, folds_path, *gmp_paths.values()] + ([f"{init_model}/model.json"] if init_model else [])
    fingerprint = stable_hash(
        {
            "stage": stage,
            "spec": asdict(spec),
            "train": cfg,
            "seed": settings["seed"],
            "fold": fold,
            "backbone": source,
            "inputs": [file_digest(p) for p in inputs],
            "code": code_version(),
        }
    )
    log.info(
        "%s fold %d: %d train / %d valid utterances, init %s, device %s",
        stage,
        fold,
        len(train),
        len(valid),
        source,
        device,
    )
    result = train_stage(
        model,
        spec,
        train,
        valid if len(valid) else None,
        cfg,
        classes=classes,
        device=device,
        audio=AudioSettings.from_corpus(corpus),
        seed=settings["seed"] + fold,
        state_dir=state_dir,
        fingerprint=fingerprint,
        precision=runtime["precision"],
    )
    metadata = {
        "stage": stage,
        "fold": fold,
        "init": source,
        "best_epoch": result.best_epoch,
        "best": result.best,
        "fingerprint": fingerprint,
        "config_hash": stable_hash(settings),
        "seed": settings["seed"],
        "code_version": code_version(),
        "selection": "valid_uar" if spec.selects_by_uar else "valid_loss",
    }
    with atomic_path(out_dir) as tmp:
        save_model(model.cpu(), tmp, metadata)
        result.history.to_csv(Path(tmp) / "history.tsv", sep="\t", index=False)
    clear_state(state_dir)


def run_evaluation(
    *,
    manifest_path: str,
    folds_path: str,
    fold: int,
    model_dir: str,
    corpus: dict,
    runtime: dict,
    batch_seconds: float,
    predictions_path: str,
    metrics_path: str,
) -> dict:
    """Score the fold's test session with its stage-2 model: predictions.tsv and a one-row metrics.tsv."""
    classes = corpus["classes"]
    table = load_fold(manifest_path, folds_path, fold)
    test = split_utterances(table, "test", classes)
    if not len(test):
        raise TrainingError(f"fold {fold} has no test utterances")
    model, _ = load_model(model_dir)
    device = resolve_device(runtime["device"])
    scores = predict(
        model,
        test,
        classes,
        device,
        AudioSettings.from_corpus(corpus),
        batch_seconds,
        runtime["precision"],
    )
    metrics = {"fold": fold, **classification_metrics(scores["true"], scores["predicted"], classes)}
    write_tsv(scores, predictions_path, float_format="%.6f")
    write_tsv(pd.DataFrame([metrics]), metrics_path, float_format="%.6f")
    log.info("fold %d: %s", fold, {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})
    return metrics
