"""What each training/evaluation rule does, as plain functions of paths and settings."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .backbone import (
    TINY_MARKER,
    SpeechEncoder,
    backbone_digest,
    check_layers,
    input_normalization,
    is_tiny_demo_model,
    load_backbone,
)
from .checkpoint import clear_state
from .corpus import read_manifest, require_gender
from .data import Utterances, attach_frame_labels, require_classes, split_utterances
from .errors import TrainingError
from .features import extract_features, utterance_samples
from .fileio import atomic_path, code_version, file_digest, write_tsv
from .folds import fold_table
from .gmp import fit_gmp_labels, read_gmp_labels
from .inference import predict
from .locks import exclusive
from .metrics import classification_metrics
from .model import build_model
from .model_folder import load_model, save_model
from .recipes import FeaturesRecipe, GmpRecipe, TrainingRecipe, from_json
from .runtime import resolve_device, seed_everything
from .settings import AudioSettings, GmpHead, RuntimeSettings
from .stages import stage_spec
from .train import train_stage

log = logging.getLogger(__name__)


def load_fold(manifest_path: str, folds_path: str, fold: int) -> pd.DataFrame:
    return fold_table(pd.read_csv(folds_path, sep="\t"), read_manifest(manifest_path), fold)


def check_frame_counts(data: Utterances, encoder, samples: pd.Series, source: str) -> None:
    """GMP labels must have exactly as many frames as the model makes of each utterance (`samples`: by utt_id)."""
    if not data.frame_labels or not len(data):
        return
    counts_of = np.array(samples.reindex(list(data.utt_ids)), dtype=np.int64)
    frames = encoder.frame_lengths(torch.from_numpy(counts_of)).numpy()
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
        check_label_file(path, attrs, labels, GmpHead.parse(name), fold)
        for data in datasets:
            attach_frame_labels(data, name, alignment, labels, path)


def check_label_file(path: str, attrs: dict, labels: np.ndarray, head: GmpHead, fold: int) -> None:
    """A label file must be of the (layer, k, fold) its consumer expects, with labels in 0..k-1."""
    expected = {"layer": head.layer, "k": head.k, "fold": fold}
    for key, value in expected.items():
        if key in attrs and int(attrs[key]) != value:
            raise TrainingError(
                f"label file '{path}' holds {key} {attrs[key]}, but {head.name} of fold {fold} needs {key} {value}"
            )
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= head.k):
        raise TrainingError(
            f"label file '{path}' holds labels {int(labels.min())}..{int(labels.max())}, outside 0..{head.k - 1} "
            f"of {head.name}; delete it and rerun its k-means job"
        )


def warn_if_demo_model(backbone: str, runtime: RuntimeSettings) -> None:
    """A run that is not the demo says loudly when it loads gmptl's tiny random demo backbone."""
    if is_tiny_demo_model(backbone) and not runtime.demo:
        log.warning(
            "!!! backbone '%s' is (or descends from) gmptl's tiny RANDOMLY INITIALISED demo model (%s), "
            "not a pretrained model: results of this run say nothing about real data; "
            "set `backbone` to a pretrained model !!!",
            backbone,
            TINY_MARKER,
        )


def run_training(
    recipe: TrainingRecipe | dict,
    *,
    fold: int,
    manifest_path: str,
    folds_path: str,
    init_model: str | None,
    gmp_paths: dict[str, str],
    out_dir: str,
    state_dir: str,
    runtime: RuntimeSettings,
    events_dir: str | None = None,
) -> None:
    """Train one stage (a recipe of kind mtl | stage1 | stage2) of one fold and write its model folder.

    `init_model` is the model folder the recipe starts from (None: its pretrained backbone);
    `gmp_paths` maps each GMP head of a stage-1 recipe to its label file; `events_dir` receives the job's
    TensorBoard event files (when `runtime.tensorboard` is on).
    """
    with exclusive(out_dir):
        _train_recipe(
            from_json(recipe),
            fold,
            manifest_path,
            folds_path,
            init_model,
            gmp_paths,
            out_dir,
            state_dir,
            runtime,
            events_dir,
        )


def _train_recipe(
    recipe, fold, manifest_path, folds_path, init_model, gmp_paths, out_dir, state_dir, runtime, events_dir
) -> None:
    corpus = recipe.data.corpus
    classes = recipe.data.classes
    spec = stage_spec(recipe, classes)
    cfg = recipe.train
    seed = recipe.seed + fold
    device = resolve_device(runtime.device)
    seed_everything(seed)
    table = load_fold(manifest_path, folds_path, fold)
    train, valid = split_utterances(table, "train", classes), split_utterances(table, "valid", classes)
    if spec.emotion_weight > 0:
        require_classes(train, classes, "train", fold)
    require_gender(table, spec.gender_weight, f"{spec.name}.gender_weight")
    if spec.gender_weight > 0 and len(set(train.gender.tolist())) < 2:
        raise TrainingError(f"fold {fold}: the train split holds one gender only; the gender head cannot learn")
    attach_gmp([train, valid], gmp_paths, fold)
    source = f"{init_model}/backbone" if init_model else recipe.init.backbone
    warn_if_demo_model(source, runtime)
    model = build_model(source, spec.heads)
    samples = pd.Series(utterance_samples(table, corpus["sample_rate"]), index=table["utt_id"].to_numpy())
    for data in (train, valid):
        check_frame_counts(data, model.encoder, samples, ", ".join(gmp_paths.values()))
    inputs = [manifest_path, folds_path, *gmp_paths.values()] + ([f"{init_model}/model.json"] if init_model else [])
    fingerprint = {
        "recipe": recipe.to_json(),
        "fold": fold,
        "inputs": {path: file_digest(path) for path in inputs},
        "device": device.type,
        "code": code_version(),
    }
    log.info("%s fold %d: %d train / %d valid utterances, init %s", spec.name, fold, len(train), len(valid), source)
    result = train_stage(
        model,
        spec,
        train,
        valid if len(valid) else None,
        cfg,
        classes=classes,
        device=device,
        audio=AudioSettings.from_corpus(corpus),
        seed=seed,
        state_dir=state_dir,
        fingerprint=fingerprint,
        runtime=runtime,
        label=f"{spec.name} fold {fold}",
        events_dir=events_dir,
    )
    metadata = {
        "stage": spec.name,
        "fold": fold,
        "init": source,
        "backbone_source": {
            "path": source,
            "digest": backbone_digest(source),
            "tiny_demo_model": is_tiny_demo_model(source),
        },
        "best_round": result.best_round,
        "best_step": result.best_step,
        "best": result.best,
        "selection": spec.selection,
        "seed": recipe.seed,
        "device": device.type,
        "precision": runtime.precision,
        "code_version": code_version(),
        "recipe": recipe.to_json(),
    }
    with atomic_path(out_dir) as tmp:
        save_model(model.cpu(), tmp, metadata, sample_rate=int(corpus["sample_rate"]))
        result.history.to_csv(Path(tmp) / "history.tsv", sep="\t", index=False)
    clear_state(state_dir)


def run_extraction(
    recipe: FeaturesRecipe | dict,
    *,
    recipe_id: str,
    fold: int,
    manifest_path: str,
    folds_path: str,
    model_dir: str,
    out_path: str,
    runtime: RuntimeSettings,
) -> None:
    """Hidden states of the recipe's layers, read from the fold's multi-task model (`model_dir`), for every
    utterance of the fold."""
    recipe = from_json(recipe)
    corpus = recipe.data.corpus
    device = resolve_device(runtime.device)
    table = load_fold(manifest_path, folds_path, fold)
    layers = list(recipe.layers)
    backbone = f"{model_dir}/backbone"
    warn_if_demo_model(backbone, runtime)
    model = load_backbone(backbone)
    check_layers(model, layers, backbone)
    del model.encoder.layers[max(layers) :]  # later layers are never read
    encoder = SpeechEncoder(model, input_normalization(backbone))
    attrs = {"backbone": backbone, "fold": fold, "recipe_id": recipe_id}
    attrs["code_version"] = code_version()
    log.info("fold %d: %d utterances on %s, layers %s", fold, len(table), device, layers)
    with exclusive(out_path):
        extract_features(
            encoder,
            table,
            layers,
            out_path,
            sample_rate=corpus["sample_rate"],
            on_format_mismatch=corpus["on_format_mismatch"],
            batch_seconds=runtime.extract_batch_seconds,
            device=device,
            precision=runtime.precision,
            attrs=attrs,
        )


def run_kmeans(
    recipe: GmpRecipe | dict,
    *,
    recipe_id: str,
    features_path: str,
    head: GmpHead,
    out_path: str,
    runtime: RuntimeSettings,
) -> dict:
    """Fit one GMP scale (layer, k) on a fold's training frames; write centroids and every frame's label."""
    recipe = from_json(recipe)
    with exclusive(out_path):
        return fit_gmp_labels(
            features_path,
            head.layer,
            head.k,
            out_path,
            settings=recipe.kmeans,
            seed=recipe.seed,
            device=resolve_device(runtime.device),
            chunk=runtime.kmeans_chunk_frames,
            attrs={"recipe_id": recipe_id, "code_version": code_version()},
        )


def run_evaluation(
    *,
    manifest_path: str,
    folds_path: str,
    fold: int,
    model_dir: str,
    runtime: RuntimeSettings,
    predictions_path: str,
    metrics_path: str,
) -> dict:
    """Score the fold's test split with its stage-2 model: predictions.tsv and a one-row metrics.tsv."""
    model, meta = load_model(model_dir)
    classes = list(model.spec.classes)
    corpus = meta["recipe"]["data"]["corpus"]
    table = load_fold(manifest_path, folds_path, fold)
    test = split_utterances(table, "test", classes)
    if not len(test):
        raise TrainingError(f"fold {fold} has no test utterances")
    device = resolve_device(runtime.device)
    scores = predict(
        model, test, classes, device, AudioSettings.from_corpus(corpus), runtime.eval_batch_seconds, runtime.precision
    )
    metrics = {"fold": fold, **classification_metrics(scores["true"], scores["predicted"], classes)}
    write_tsv(scores, predictions_path, float_format="%.6f")
    write_tsv(pd.DataFrame([metrics]), metrics_path, float_format="%.6f")
    log.info("fold %d: %s", fold, {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})
    return metrics
