"""Training and evaluation data: utterance tables, GMP frame labels, length-bucketed batches, crops."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from .audio import load_audio
from .errors import TrainingError
from .frames import Alignment
from .settings import AudioSettings

IGNORE = -100  # frame label of frames without a target (padding, unmasked frames)


@dataclass
class Utterances:
    """The utterances of one split with their targets."""

    utt_ids: list[str]
    paths: list[str]
    emotion: np.ndarray  # class index per utterance
    gender: np.ndarray  # 0 = F, 1 = M
    durations: np.ndarray  # seconds, from the manifest
    frame_labels: dict[str, list[np.ndarray]] = field(default_factory=dict)  # head -> per-utterance labels

    def __len__(self) -> int:
        return len(self.utt_ids)


def split_utterances(table: pd.DataFrame, split: str, classes: list[str]) -> Utterances:
    """Rows of a fold table (manifest + split) in `split`, as `Utterances`."""
    rows = table[table["split"] == split]
    unknown = sorted(set(rows["emotion"]) - set(classes))
    if unknown:
        raise TrainingError(f"split '{split}' holds emotion label(s) {unknown} that are not in corpus.classes")
    return Utterances(
        utt_ids=rows["utt_id"].tolist(),
        paths=rows["path"].tolist(),
        emotion=rows["emotion"].map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64),
        gender=(rows["gender"] == "M").to_numpy(np.int64),
        durations=rows["duration_s"].to_numpy(np.float64),
    )


def attach_frame_labels(data: Utterances, name: str, alignment: Alignment, labels: np.ndarray, source: str) -> None:
    """Add one GMP head's per-utterance frame labels to `data` (every utterance must be in the file)."""
    where = {utt: i for i, utt in enumerate(alignment.utt_ids)}
    missing = [u for u in data.utt_ids if u not in where]
    if missing:
        raise TrainingError(f"label file '{source}' has no frames for {len(missing)} utterance(s), e.g. {missing[:3]}")
    data.frame_labels[name] = [
        labels[alignment.offsets[where[u]] : alignment.offsets[where[u]] + alignment.lengths[where[u]]].astype(np.int64)
        for u in data.utt_ids
    ]


def require_classes(data: Utterances, classes: list[str], what: str, fold: int) -> None:
    """Every emotion class occurs in the training split (else the classifier cannot learn it)."""
    present = set(data.emotion.tolist())
    absent = [c for i, c in enumerate(classes) if i not in present]
    if absent:
        raise TrainingError(
            f"fold {fold}: class(es) {absent} have no utterance in the {what} split; check corpus.label_map / folds"
        )


def epoch_batches(
    durations: np.ndarray, batch_size: int, rng: np.random.Generator, weights: np.ndarray | None = None
) -> list[np.ndarray]:
    """Length-bucketed batches for one epoch: shuffle (or weighted draw), sort within buckets, shuffle batches."""
    n = len(durations)
    order = rng.choice(n, size=n, replace=True, p=weights) if weights is not None else rng.permutation(n)
    bucket = batch_size * 32
    batches = []
    for start in range(0, n, bucket):
        chunk = order[start : start + bucket]
        chunk = chunk[np.argsort(durations[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Sampling weights that give every class the same expected share."""
    counts = np.bincount(labels)
    weights = 1.0 / counts[labels]
    return weights / weights.sum()


def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Cross-entropy weights n / (classes × n_c) of the classes present (scikit-learn's 'balanced'); absent ones 0."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(n_classes)
    weights[present] = len(labels) / (present.sum() * counts[present])
    return weights


def majority_baseline(train: list[np.ndarray], valid: list[np.ndarray]) -> tuple[int, float]:
    """The most frequent frame label of `train` and the share of `valid` frames that carry it."""
    train_labels = np.concatenate(train) if train else np.zeros(0, np.int64)
    valid_labels = np.concatenate(valid) if valid else np.zeros(0, np.int64)
    if not len(train_labels):
        return -1, float("nan")
    majority = int(np.bincount(train_labels).argmax())
    return majority, float(np.mean(valid_labels == majority)) if len(valid_labels) else float("nan")


@dataclass
class Batch:
    waves: torch.Tensor  # (B, S)
    lengths: torch.Tensor  # (B,)
    emotion: torch.Tensor  # (B,)
    gender: torch.Tensor  # (B,)
    frame_labels: dict[str, torch.Tensor]  # head -> (B, T) with IGNORE beyond each utterance


def load_batch(
    data: Utterances,
    index: np.ndarray,
    audio: AudioSettings,
    *,
    max_samples: int | None = None,
    hop: int = 1,
    rng: np.random.Generator | None = None,
    read: Callable[[int], np.ndarray] | None = None,
) -> Batch:
    """Decode and pad the utterances at `index`; with `max_samples` and `rng`, crop longer ones
    at a random start aligned to the frame `hop` (their frame labels are shifted to match).

    `read(i)` gives utterance i's samples (default: decode and resample `data.paths[i]`)."""
    waves, labels = [], {name: [] for name in data.frame_labels}
    for i in index:
        if read is not None:
            wave = read(int(i))
        else:
            wave = load_audio(data.paths[i], audio.sample_rate, audio.on_format_mismatch)
        start_frame = 0
        if max_samples is not None and len(wave) > max_samples and rng is not None:
            start_frame = int(rng.integers(0, (len(wave) - max_samples) // hop + 1))
            wave = wave[start_frame * hop : start_frame * hop + max_samples]
        waves.append(torch.from_numpy(wave))
        for name in labels:
            labels[name].append(torch.from_numpy(data.frame_labels[name][i][start_frame:]))
    lengths = torch.tensor([len(w) for w in waves])
    padded = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    frame_labels = {
        name: torch.nn.utils.rnn.pad_sequence(items, batch_first=True, padding_value=IGNORE)
        for name, items in labels.items()
    }
    return Batch(
        padded, lengths, torch.from_numpy(data.emotion[index]), torch.from_numpy(data.gender[index]), frame_labels
    )


def time_mask(frame_mask: torch.Tensor, prob: float, span: int, rng: np.random.Generator) -> torch.Tensor:
    """HuBERT-style span masking: each valid frame starts a span of `span` frames with probability `prob`."""
    starts = torch.from_numpy(rng.random(tuple(frame_mask.shape)) < prob).to(frame_mask.device) & frame_mask
    if span > 1:
        kernel = torch.ones(1, 1, span, device=frame_mask.device)
        spread = torch.nn.functional.conv1d(starts[:, None].float(), kernel, padding=span - 1)[:, 0, : starts.shape[1]]
        starts = spread > 0
    return starts & frame_mask
