"""One validation round: the loss and scores of whole validation utterances, as plain Python numbers.

A round's row goes into history.tsv and into the resume state, which a weights-only load must read:
every value here is a Python float (never a NumPy scalar).
"""

from __future__ import annotations

import numpy as np
import torch

from .data import Utterances, majority_baseline
from .inference import in_data_order, score_rows, whole_batches
from .metrics import classification_metrics
from .model import GmptlModel
from .objectives import forward_batch, frame_hits
from .runtime import autocast
from .settings import AudioSettings
from .stages import StageSpec


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
) -> dict[str, float]:
    """One pass over whole validation utterances: the loss, WAR/UAR (emotion stages) and, per GMP head, the
    frame accuracy on all frames (`valid_acc_<head>`, unmasked input) and on masked frames (`valid_acc_masked_<head>`).

    The masks are drawn from a fixed seed, so every validation sees the same ones."""
    model.eval()
    rng = np.random.default_rng([seed, 999_983])
    total, rows = 0.0, []
    hits = {name: [0, 0, 0, 0] for name in spec.gmp_weights}  # masked correct/counted, all correct/counted
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
            masked = (0, 0)
            if out["time_mask"] is not None:
                masked = frame_hits(out[name], targets, out["frame_mask"], out["time_mask"])
            every = frame_hits(clean[name], targets, clean["frame_mask"])
            counts[:] = [old + new for old, new in zip(counts, (*masked, *every), strict=True)]
    result = {"valid_loss": total / max(len(data), 1)}
    if rows:
        scores = in_data_order(rows, data)
        metrics = classification_metrics(scores["true"], scores["predicted"], classes)
        result.update({"valid_war": float(metrics["war"]), "valid_uar": float(metrics["uar"])})
    for name, (masked_correct, masked, correct, counted) in hits.items():
        result[f"valid_acc_{name}"] = share(correct, counted)
        if spec.mask_prob > 0:
            result[f"valid_acc_masked_{name}"] = share(masked_correct, masked)
    return result


def share(part: int, whole: int) -> float:
    """part / whole as a Python float; NaN when `whole` is 0."""
    return float(part) / float(whole) if whole else float("nan")


def majority_columns(spec: StageSpec, train: Utterances, valid: Utterances | None) -> dict[str, float]:
    """`majority_<head>`: the validation frame accuracy of always predicting the head's most frequent training label."""
    if valid is None:
        return {}
    return {
        f"majority_{name}": float(majority_baseline(train.frame_labels[name], valid.frame_labels[name])[1])
        for name in spec.gmp_weights
    }
