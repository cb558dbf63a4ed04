"""One training loop for every stage, with per-epoch validation, best-checkpoint selection and resume.

Resume: after every epoch the full state (model, optimiser, scheduler, RNG, epoch, best so far,
history) is written atomically to `state_dir/state.pt` with a fingerprint of the inputs, parameters
and library code (`gmptl.checkpoint`). A rerun with the same fingerprint continues after the last
finished epoch; with another fingerprint it starts fresh and says which part changed. Batches,
crops and masks are drawn from generators seeded by (seed, epoch, step), and torch's RNG is
restored, so a resumed run ends with the same weights as an uninterrupted one (on the same device).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .checkpoint import load_state, save_state
from .data import IGNORE, Utterances, balanced_weights, epoch_batches, load_batch, time_mask
from .errors import TrainingError
from .inference import in_data_order, score_rows, whole_batches
from .metrics import classification_metrics
from .model import GmptlModel, with_margin
from .runtime import autocast
from .settings import AudioSettings, TrainSettings
from .stages import StageSpec

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    history: pd.DataFrame
    best_epoch: int
    best: dict


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


def forward_batch(
    model: GmptlModel, spec: StageSpec, batch, device: torch.device, rng: np.random.Generator
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted sum of this stage's losses on one batch, and the model's outputs."""
    waves, lengths = batch.waves.to(device), batch.lengths.to(device)
    emotion, gender = batch.emotion.to(device), batch.gender.to(device)
    mask = None
    if spec.gmp_weights and spec.mask_prob > 0:
        frames = model.encoder.frame_lengths(lengths)
        valid = torch.arange(int(frames.max()), device=device)[None] < frames[:, None]
        mask = time_mask(valid, spec.mask_prob, spec.mask_length, rng)
    out = model(waves, lengths, time_mask=mask)
    loss = torch.zeros((), device=device)
    if spec.emotion_weight > 0:
        logits = with_margin(out["emotion"], emotion, model.emotion_margin)
        loss = loss + spec.emotion_weight * F.cross_entropy(logits, emotion)
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


@torch.no_grad()
def validate(model, spec, data, classes, device, audio, batch_seconds, precision, seed) -> dict:
    """Validation loss (and WAR/UAR when the stage trains emotion) in one pass over whole utterances."""
    model.eval()
    rng = np.random.default_rng([seed, 999_983])
    total, rows = 0.0, []
    for index, batch in whole_batches(data, audio, batch_seconds):
        with autocast(device, precision):
            loss, out = forward_batch(model, spec, batch, device, rng)
        total += float(loss) * len(index)
        if spec.emotion_weight > 0:
            rows += score_rows(data, index, out["emotion"], classes)
    result = {"valid_loss": total / max(len(data), 1)}
    if rows:
        scores = in_data_order(rows, data)
        metrics = classification_metrics(scores["true"], scores["predicted"], classes)
        result.update({"valid_war": float(metrics["war"]), "valid_uar": float(metrics["uar"])})
    return result


def _improved(spec: StageSpec, current: dict, best: dict | None) -> bool:
    if best is None:
        return True
    if spec.selects_by_uar:
        return current["valid_uar"] > best["valid_uar"]
    return current["valid_loss"] < best["valid_loss"]


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
    precision: str = "auto",
    eval_batch_seconds: float = 120.0,
) -> TrainResult:
    """Train `model` for `cfg.epochs` epochs; load the best (or last) weights into it at the end."""
    state_dir = Path(state_dir)
    model.to(device)
    if cfg.freeze_feature_encoder:
        model.encoder.freeze_feature_encoder()
    optimizer = make_optimizer(model, cfg)
    steps_per_epoch = math.ceil(math.ceil(len(train_data) / cfg.batch_size) / cfg.grad_accum)
    scheduler = make_scheduler(optimizer, steps_per_epoch * cfg.epochs, cfg.warmup_fraction)
    weights = balanced_weights(train_data.emotion) if cfg.balanced_sampling else None
    max_samples = int(cfg.max_crop_s * audio.sample_rate)
    hop = model.encoder.frame_hop
    history, best, best_epoch, best_weights, start_epoch = [], None, 0, None, 1
    state = load_state(state_dir, fingerprint)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        history, best, best_epoch, best_weights = (
            state["history"],
            state["best"],
            state["best_epoch"],
            state["best_weights"],
        )
        start_epoch = state["epoch"] + 1
        log.info("resuming %s from %s after epoch %d", spec.name, state_dir, state["epoch"])
    for epoch in range(start_epoch, cfg.epochs + 1):
        began = time.time()
        model.train()
        rng = np.random.default_rng([seed, epoch])
        batches = epoch_batches(train_data.durations, cfg.batch_size, rng, weights)
        total = 0.0
        optimizer.zero_grad(set_to_none=True)
        for step, index in enumerate(batches, start=1):
            batch = load_batch(train_data, index, audio, max_samples=max_samples, hop=hop, rng=rng)
            with autocast(device, precision):
                loss, _ = forward_batch(model, spec, batch, device, rng)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"{spec.name}: the loss became {float(loss.detach())} at epoch {epoch}, step {step}; "
                    "lower train.lr (or check the audio for silence/clipping)"
                )
            (loss / cfg.grad_accum).backward()
            total += float(loss.detach()) * len(index)
            if step % cfg.grad_accum == 0 or step == len(batches):
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
        row = {"epoch": epoch, "train_loss": total / len(train_data), "lr": float(scheduler.get_last_lr()[0])}
        if valid_data is not None and len(valid_data):
            row.update(validate(model, spec, valid_data, classes, device, audio, eval_batch_seconds, precision, seed))
        row["seconds"] = round(time.time() - began, 2)
        history.append(row)
        if valid_data is None or not len(valid_data) or _improved(spec, row, best):
            best, best_epoch = row, epoch
            best_weights = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        log.info(
            "%s epoch %d/%d %s | best epoch %d",
            spec.name,
            epoch,
            cfg.epochs,
            " ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch"),
            best_epoch,
        )
        save_state(
            state_dir,
            {
                "fingerprint": fingerprint,
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
                "history": history,
                "best": best,
                "best_epoch": best_epoch,
                "best_weights": best_weights,
            },
        )
    model.load_state_dict(best_weights)
    return TrainResult(pd.DataFrame(history), best_epoch, best)
