"""One training loop for every stage: by updates or epochs, periodic validation, best-checkpoint selection, resume.

Length (`TrainSettings`): `steps` optimiser updates (passes over the training split repeat, each
reshuffled) or `epochs` passes. Validation every `valid_every_steps` updates, else at the end of each
pass, and after the last update; each validation is one row ("epoch") of the history, and the best
row's weights are kept (validation UAR for emotion stages, validation loss for stage 1).

Resume: the full state (model, optimiser, scheduler, gradient scaler, torch RNG, update counter, the
running training loss, history, best so far) is written atomically to `state_dir/state.pt` after every
validation and, between validations, at least every `runtime.checkpoint_minutes` (at an update
boundary), with a fingerprint of the inputs, parameters and library code (`gmptl.checkpoint`). A rerun
with the same fingerprint continues at the saved update; with another fingerprint it starts fresh and
says which part changed. Which utterances, crops and masks an update sees is a pure function of
(seed, update) (`gmptl.loader`), so a resumed run ends with the same weights as an uninterrupted one
(on the same device), whatever the number of loader threads.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .checkpoint import load_state, save_state
from .data import IGNORE, Batch, Utterances, balanced_weights, class_weights, load_batch, majority_baseline, time_mask
from .errors import TrainingError
from .inference import in_data_order, score_rows, whole_batches
from .loader import MicroBatch, Schedule, crop_rng, mask_rng, prefetched
from .metrics import classification_metrics
from .model import GmptlModel, with_margin
from .progress import Progress
from .runtime import autocast
from .settings import AudioSettings, RuntimeSettings, SpecAugment, TrainSettings
from .stages import StageSpec

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    history: pd.DataFrame
    best_epoch: int
    best: dict
    best_step: int = 0


@dataclass
class LoopState:
    """What changes while training and is saved for resuming (besides model, optimiser, scheduler, RNG)."""

    step: int = 0  # optimiser updates done
    history: list[dict] = field(default_factory=list)
    best: dict | None = None
    best_epoch: int = 0
    best_step: int = 0
    best_weights: dict | None = None
    loss_sum: float = 0.0  # training loss × utterances since the last validation
    loss_count: int = 0


def make_optimizer(model: GmptlModel, cfg: TrainSettings) -> torch.optim.Optimizer:
    """AdamW with one learning rate for the backbone and one for the heads."""
    groups = [
        {"params": [p for p in model.backbone_parameters() if p.requires_grad], "lr": cfg.lr},
        {"params": [p for p in model.head_parameters() if p.requires_grad], "lr": cfg.head_lr},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=cfg.weight_decay)


def make_scheduler(optimizer, total_steps: int, warmup_fraction: float):
    """Linear warm-up to the peak rate, then linear decay to zero."""
    warmup = max(1, int(round(warmup_fraction * total_steps)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def input_masks(
    model: GmptlModel, spec: StageSpec, lengths: torch.Tensor, rng: np.random.Generator, augment: SpecAugment | None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(time mask (B, T), channel mask (B, D)) of one batch: stage 1's span masking, or SpecAugment when given."""
    frames = model.encoder.frame_lengths(lengths)
    valid = torch.arange(int(frames.max()), device=lengths.device)[None] < frames[:, None]
    if spec.gmp_weights:
        return (time_mask(valid, spec.mask_prob, spec.mask_length, rng) if spec.mask_prob > 0 else None), None
    if augment is None:
        return None, None
    times = channels = None
    if augment.time_mask_prob > 0:
        length = augment.time_mask_length
        times = time_mask(valid, augment.time_mask_prob / length, length, rng)
    if augment.channel_mask_prob > 0:
        length = augment.channel_mask_length
        every = torch.ones(len(lengths), model.encoder.hidden_size, dtype=torch.bool, device=lengths.device)
        channels = time_mask(every, augment.channel_mask_prob / length, length, rng)
    return times, channels


def forward_batch(
    model: GmptlModel,
    spec: StageSpec,
    batch: Batch,
    device: torch.device,
    rng: np.random.Generator,
    *,
    emotion_weights: torch.Tensor | None = None,
    augment: SpecAugment | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted sum of this stage's losses on one batch, and the model's outputs (with its `time_mask`).

    `emotion_weights`: per-class weights of the emotion cross-entropy; `augment`: SpecAugment of an
    utterance stage (training only)."""
    waves, lengths = batch.waves.to(device), batch.lengths.to(device)
    emotion, gender = batch.emotion.to(device), batch.gender.to(device)
    mask, channels = input_masks(model, spec, lengths, rng, augment)
    out = model(waves, lengths, time_mask=mask, channel_mask=channels)
    out["time_mask"] = mask
    loss = torch.zeros((), device=device)
    if spec.emotion_weight > 0:
        logits = with_margin(out["emotion"], emotion, model.emotion_margin)
        loss = loss + spec.emotion_weight * F.cross_entropy(logits, emotion, weight=emotion_weights)
    if spec.gender_weight > 0:
        loss = loss + spec.gender_weight * F.cross_entropy(out["gender"], gender)
    for name, weight in spec.gmp_weights.items():
        logits = out[name]
        targets = batch.frame_labels[name].to(device)[:, : logits.shape[1]]
        if targets.shape[1] < logits.shape[1]:
            raise TrainingError(f"GMP labels of head {name} are shorter than the model's frames")
        targets = targets.masked_fill(~out["frame_mask"], IGNORE)
        if spec.loss_on == "masked" and mask is not None:
            targets = targets.masked_fill(~mask, IGNORE)
        if (targets != IGNORE).any():
            loss = loss + weight * F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE)
    return loss, out


def frame_hits(logits: torch.Tensor, targets: torch.Tensor, frame_mask: torch.Tensor, where=None) -> tuple[int, int]:
    """(correct, counted) frame predictions of one GMP head over valid frames (and `where`, when given)."""
    targets = targets[:, : logits.shape[1]]
    counted = frame_mask & (targets != IGNORE)
    if where is not None:
        counted = counted & where[:, : logits.shape[1]]
    correct = (logits.argmax(-1) == targets) & counted
    return int(correct.sum()), int(counted.sum())


@torch.no_grad()
def validate(
    model: GmptlModel,
    spec: StageSpec,
    data: Utterances,
    classes: list[str],
    device: torch.device,
    audio: AudioSettings,
    batch_seconds: float,
    precision: str,
    seed: int,
    emotion_weights: torch.Tensor | None = None,
) -> dict:
    """One pass over whole validation utterances: the loss, WAR/UAR (emotion stages) and, per GMP head, the
    frame accuracy on all frames (`valid_acc_<head>`, unmasked input) and on masked frames (`valid_acc_masked_<head>`).

    The masks are drawn from a fixed seed, so every validation sees the same ones."""
    model.eval()
    rng = np.random.default_rng([seed, 999_983])
    total, rows = 0.0, []
    hits = {name: np.zeros(4, np.int64) for name in spec.gmp_weights}  # masked correct/counted, all correct/counted
    for index, batch in whole_batches(data, audio, batch_seconds):
        with autocast(device, precision):
            loss, out = forward_batch(model, spec, batch, device, rng, emotion_weights=emotion_weights)
            clean = out
            if hits and out["time_mask"] is not None:
                clean = model(batch.waves.to(device), batch.lengths.to(device))
        total += float(loss) * len(index)
        if spec.emotion_weight > 0:
            rows += score_rows(data, index, out["emotion"], classes)
        for name, counts in hits.items():
            targets = batch.frame_labels[name].to(device)
            if out["time_mask"] is not None:
                counts[:2] += frame_hits(out[name], targets, out["frame_mask"], out["time_mask"])
            counts[2:] += frame_hits(clean[name], targets, clean["frame_mask"])
    result = {"valid_loss": total / max(len(data), 1)}
    if rows:
        scores = in_data_order(rows, data)
        metrics = classification_metrics(scores["true"], scores["predicted"], classes)
        result.update({"valid_war": float(metrics["war"]), "valid_uar": float(metrics["uar"])})
    for name, (masked_correct, masked, correct, counted) in hits.items():
        result[f"valid_acc_{name}"] = correct / counted if counted else float("nan")
        if spec.mask_prob > 0:
            result[f"valid_acc_masked_{name}"] = masked_correct / masked if masked else float("nan")
    return result


def _improved(spec: StageSpec, current: dict, best: dict | None) -> bool:
    if best is None:
        return True
    if spec.selects_by_uar:
        return current["valid_uar"] > best["valid_uar"]
    return current["valid_loss"] < best["valid_loss"]


def emotion_loss_weights(cfg: TrainSettings, spec: StageSpec, data: Utterances, classes, device) -> torch.Tensor | None:
    """The emotion cross-entropy's class weights (`train.class_weights`), None when unweighted."""
    if cfg.class_weights == "none" or spec.emotion_weight <= 0:
        return None
    weights = class_weights(data.emotion, len(classes))
    log.info("%s: emotion loss weights %s", spec.name, dict(zip(classes, np.round(weights, 3).tolist(), strict=True)))
    return torch.tensor(weights, dtype=torch.float32, device=device)


def majority_columns(spec: StageSpec, train: Utterances, valid: Utterances | None) -> dict[str, float]:
    """`majority_<head>`: the validation frame accuracy of always predicting the head's most frequent training label."""
    if valid is None:
        return {}
    return {
        f"majority_{name}": majority_baseline(train.frame_labels[name], valid.frame_labels[name])[1]
        for name in spec.gmp_weights
    }


def _snapshot(model: GmptlModel) -> dict:
    return copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})


def _restore(state: dict, model, optimizer, scheduler, scaler, device) -> LoopState:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"])
    if device.type == "cuda" and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return LoopState(**{name: state[name] for name in LoopState.__dataclass_fields__})


def _save(state_dir, fingerprint, loop: LoopState, model, optimizer, scheduler, scaler, device) -> None:
    save_state(
        state_dir,
        {
            "fingerprint": fingerprint,
            "epoch": len(loop.history),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
            **vars(loop),
        },
    )


def _update(model, optimizer, scheduler, scaler, cfg: TrainSettings) -> None:
    """One optimiser update from the accumulated gradients (unscaled first when a gradient scaler is on)."""
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.max_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def train_stage(
    model: GmptlModel,
    spec: StageSpec,
    train_data: Utterances,
    valid_data: Utterances | None,
    cfg: TrainSettings,
    *,
    classes: list[str],
    device: torch.device,
    audio: AudioSettings,
    seed: int,
    state_dir: str | Path,
    fingerprint: dict,
    runtime: RuntimeSettings | None = None,
    label: str | None = None,
    clock: Callable[[], float] = time.monotonic,
    read: Callable[[int], np.ndarray] | None = None,
) -> TrainResult:
    """Train `model` for `cfg.steps` updates (or `cfg.epochs` passes); load the best (or last) weights into it.

    `runtime` gives precision, evaluation batch size, checkpoint and log intervals and loader threads;
    `label` names the job in progress lines; `clock` (seconds) times checkpoints and progress;
    `read(i)` gives training utterance i's samples (default: decoded from its file by the loader threads).
    """
    runtime = runtime or RuntimeSettings()
    if not len(train_data):
        raise TrainingError(f"{spec.name}: the training split holds no utterances")
    state_dir, label = Path(state_dir), label or spec.name
    model.to(device)
    if cfg.freeze_feature_encoder:
        model.encoder.freeze_feature_encoder()
    optimizer = make_optimizer(model, cfg)
    weights = balanced_weights(train_data.emotion) if cfg.balanced_sampling else None
    schedule = Schedule(train_data.durations, cfg.batch_size, cfg.grad_accum, seed, weights)
    total = cfg.steps or cfg.epochs * schedule.updates_per_pass
    every = cfg.valid_every_steps or schedule.updates_per_pass
    rounds = math.ceil(total / every)
    scheduler = make_scheduler(optimizer, total, cfg.warmup_fraction)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and runtime.precision == "fp16")
    emotion_weights = emotion_loss_weights(cfg, spec, train_data, classes, device)
    augment = cfg.augment if not spec.gmp_weights else None
    baselines = majority_columns(spec, train_data, valid_data)
    max_samples, hop = int(cfg.max_crop_s * audio.sample_rate), model.encoder.frame_hop
    loop = LoopState()
    state = load_state(state_dir, fingerprint)
    if state is not None:
        loop = _restore(state, model, optimizer, scheduler, scaler, device)
        log.info(
            "resuming %s from %s at step %d/%d (after epoch %d)", spec.name, state_dir, loop.step, total, state["epoch"]
        )
    log.info(
        "%s: %d updates of %d × %d utterances (%.1f passes over %d), validation every %d updates%s",
        label,
        total,
        cfg.grad_accum,
        cfg.batch_size,
        total / schedule.updates_per_pass,
        len(train_data),
        every,
        f"; majority baselines {baselines}" if baselines else "",
    )

    def load(micro: MicroBatch) -> Batch:
        rng = crop_rng(seed, micro.pass_, micro.batch)
        return load_batch(train_data, micro.index, audio, max_samples=max_samples, hop=hop, rng=rng, read=read)

    progress = Progress(label, total, done=loop.step, every_s=runtime.log_every_s, clock=clock)
    last_save = round_began = clock()
    audio_s = 0.0
    model.train()
    optimizer.zero_grad(set_to_none=True)
    batches = prefetched(schedule.micro_batches(loop.step, total), load, runtime.loader_workers)
    for micro, batch in batches:
        with autocast(device, runtime.precision):
            loss, _ = forward_batch(
                model,
                spec,
                batch,
                device,
                mask_rng(seed, micro.pass_, micro.batch),
                emotion_weights=emotion_weights,
                augment=augment,
            )
        if not torch.isfinite(loss):
            batches.close()
            raise TrainingError(
                f"{spec.name}: the loss became {float(loss.detach())} at step {loop.step + 1} (pass {micro.pass_}); "
                "lower train.lr (or check the audio for silence/clipping)"
            )
        scaler.scale(loss / micro.in_update).backward()
        loop.loss_sum += float(loss.detach()) * len(micro.index)
        loop.loss_count += len(micro.index)
        audio_s += float(batch.lengths.sum()) / audio.sample_rate
        if not micro.last:
            continue
        _update(model, optimizer, scheduler, scaler, cfg)
        loop.step += 1
        progress.advance(1, audio_s=audio_s, loss=loop.loss_sum / loop.loss_count, **{"pass": micro.pass_})
        audio_s = 0.0
        if loop.step % every == 0 or loop.step == total:
            row = {
                "epoch": len(loop.history) + 1,
                "step": loop.step,
                "passes": round(loop.step / schedule.updates_per_pass, 3),
                "train_loss": loop.loss_sum / loop.loss_count,
                "lr": float(scheduler.get_last_lr()[0]),
            }
            if valid_data is not None and len(valid_data):
                row.update(
                    validate(
                        model,
                        spec,
                        valid_data,
                        classes,
                        device,
                        audio,
                        runtime.eval_batch_seconds,
                        runtime.precision,
                        seed,
                        emotion_weights,
                    )
                )
                model.train()
            row.update(baselines)
            row["seconds"] = round(clock() - round_began, 2)
            loop.history.append(row)
            loop.loss_sum, loop.loss_count = 0.0, 0
            if valid_data is None or not len(valid_data) or _improved(spec, row, loop.best):
                loop.best, loop.best_epoch, loop.best_step = row, row["epoch"], row["step"]
                loop.best_weights = _snapshot(model)
            progress.report(
                epoch=f"{row['epoch']}/{rounds}",
                **{k: v for k, v in row.items() if k not in ("epoch", "step", "passes")},
                best_epoch=loop.best_epoch,
            )
            _save(state_dir, fingerprint, loop, model, optimizer, scheduler, scaler, device)
            last_save = round_began = clock()
        elif clock() - last_save >= runtime.checkpoint_minutes * 60:
            _save(state_dir, fingerprint, loop, model, optimizer, scheduler, scaler, device)
            last_save = clock()
    progress.close()
    model.load_state_dict(loop.best_weights)
    return TrainResult(pd.DataFrame(loop.history), loop.best_epoch, loop.best, loop.best_step)
