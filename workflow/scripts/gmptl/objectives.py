"""What a stage learns from one batch: its input masks, the weighted sum of its losses, frame hits of its GMP heads.

A stage (`StageSpec`) weighs three objectives: the utterance emotion (cross-entropy, with the
AM-Softmax margin when the head has one, optionally class-weighted), the speaker gender, and per GMP
head the frame cross-entropy (stage 1; on span-masked frames only when `loss_on` is `masked`).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from .data import IGNORE, Batch, Utterances, class_weights, time_mask
from .errors import TrainingError
from .model import GmptlModel, with_margin
from .settings import SpecAugment, TrainSettings
from .stages import StageSpec

log = logging.getLogger(__name__)


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
    """The weighted sum of this stage's losses on one batch, and the model's outputs (with its `time_mask` and
    `losses`: each objective's own loss by name, `emotion`, `gender`, a GMP head's `L<layer>_k<k>`).

    `emotion_weights`: per-class weights of the emotion cross-entropy; `augment`: SpecAugment of an
    utterance stage (training only)."""
    waves, lengths = batch.waves.to(device), batch.lengths.to(device)
    emotion, gender = batch.emotion.to(device), batch.gender.to(device)
    mask, channels = input_masks(model, spec, lengths, rng, augment)
    out = model(waves, lengths, time_mask=mask, channel_mask=channels)
    out["time_mask"] = mask
    out["losses"] = losses = {}  # each objective's own (unweighted) loss
    loss = torch.zeros((), device=device)
    if spec.emotion_weight > 0:
        logits = with_margin(out["emotion"], emotion, model.emotion_margin)
        losses["emotion"] = F.cross_entropy(logits, emotion, weight=emotion_weights)
        loss = loss + spec.emotion_weight * losses["emotion"]
    if spec.gender_weight > 0:
        losses["gender"] = F.cross_entropy(out["gender"], gender)
        loss = loss + spec.gender_weight * losses["gender"]
    for name, weight in spec.gmp_weights.items():
        frames = _frame_loss(name, out, batch, device, mask if spec.loss_on == "masked" else None)
        if frames is not None:
            losses[name] = frames
            loss = loss + weight * frames
    return loss, out


def _frame_loss(name: str, out: dict, batch: Batch, device: torch.device, where: torch.Tensor | None):
    """Frame cross-entropy of GMP head `name` on valid frames (and `where`, when given); None when none counts."""
    logits = out[name]
    targets = batch.frame_labels[name].to(device)[:, : logits.shape[1]]
    if targets.shape[1] < logits.shape[1]:
        raise TrainingError(f"GMP labels of head {name} are shorter than the model's frames")
    targets = targets.masked_fill(~out["frame_mask"], IGNORE)
    if where is not None:
        targets = targets.masked_fill(~where, IGNORE)
    if not (targets != IGNORE).any():
        return None
    return F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE)


def frame_hits(logits: torch.Tensor, targets: torch.Tensor, frame_mask: torch.Tensor, where=None) -> tuple[int, int]:
    """(correct, counted) frame predictions of one GMP head over valid frames (and `where`, when given)."""
    targets = targets[:, : logits.shape[1]]
    counted = frame_mask & (targets != IGNORE)
    if where is not None:
        counted = counted & where[:, : logits.shape[1]]
    correct = (logits.argmax(-1) == targets) & counted
    return int(correct.sum()), int(counted.sum())


def emotion_loss_weights(cfg: TrainSettings, spec: StageSpec, data: Utterances, classes, device) -> torch.Tensor | None:
    """The emotion cross-entropy's class weights (`train.class_weights`), None when unweighted."""
    if cfg.class_weights == "none" or spec.emotion_weight <= 0:
        return None
    weights = class_weights(data.emotion, len(classes))
    log.info("%s: emotion loss weights %s", spec.name, dict(zip(classes, np.round(weights, 3).tolist(), strict=True)))
    return torch.tensor(weights, dtype=torch.float32, device=device)
