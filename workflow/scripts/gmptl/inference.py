"""Scoring whole utterances with a trained model: length-batched, in data order (evaluation and prediction)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .batching import length_batches
from .data import Utterances, load_batch
from .model import GmptlModel
from .runtime import autocast
from .settings import AudioSettings


def whole_batches(data: Utterances, audio: AudioSettings, batch_seconds: float):
    """(indices, batch) of whole, uncropped utterances, longest first (for scoring)."""
    for index in length_batches(data.durations, batch_seconds):
        yield index, load_batch(data, index, audio)


def score_rows(data: Utterances, index: np.ndarray, scores: torch.Tensor, classes: list[str]) -> list[dict]:
    """utt_id, true, predicted and score_<class> (softmax of the emotion scores) per utterance."""
    probs = torch.softmax(scores.float(), dim=1).cpu().numpy()
    return [
        {
            "utt_id": data.utt_ids[i],
            "true": classes[data.emotion[i]],
            "predicted": classes[int(probs[row].argmax())],
            **{f"score_{c}": float(probs[row, j]) for j, c in enumerate(classes)},
        }
        for row, i in enumerate(index)
    ]


def in_data_order(rows: list[dict], data: Utterances) -> pd.DataFrame:
    order = {u: i for i, u in enumerate(data.utt_ids)}
    return pd.DataFrame(rows).sort_values("utt_id", key=lambda s: s.map(order)).reset_index(drop=True)


@torch.no_grad()
def predict(
    model: GmptlModel,
    data: Utterances,
    classes: list[str],
    device,
    audio: AudioSettings,
    batch_seconds: float,
    precision: str = "auto",
) -> pd.DataFrame:
    """utt_id, true, predicted and score_<class> (softmax) for every utterance of `data`, whole-length."""
    model.eval().to(device)
    rows = []
    for index, batch in whole_batches(data, audio, batch_seconds):
        with autocast(device, precision):
            scores = model(batch.waves.to(device), batch.lengths.to(device))["emotion"]
        rows += score_rows(data, index, scores, classes)
    return in_data_order(rows, data)
