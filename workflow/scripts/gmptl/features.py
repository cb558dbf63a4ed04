"""Frame features of intermediate backbone layers → one HDF5 file per fold (layout in `frames`).

Utterances are batched by length (longest first) up to `batch_seconds` of padded audio, so memory
is bounded by the batch budget or, for an utterance longer than the budget, by that utterance.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .audio import audio_info, load_audio, resampled_frames
from .backbone import SpeechEncoder
from .batching import length_batches
from .corpus import manifest_samples
from .errors import FeatureError
from .fileio import atomic_path
from .frames import Alignment
from .runtime import autocast

log = logging.getLogger(__name__)


def pad_batch(waves: list[np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad waveforms with zeros into (B, S) plus their lengths (B,)."""
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
    batch = torch.zeros(len(waves), int(lengths.max()))
    for i, wave in enumerate(waves):
        batch[i, : len(wave)] = torch.from_numpy(wave)
    return batch.to(device), lengths.to(device)


def expected_samples(paths: list[str], sample_rate: int) -> np.ndarray:
    """Samples of each file at `sample_rate`, from the headers."""
    counts = []
    for path in paths:
        info = audio_info(path)
        counts.append(resampled_frames(info.frames, info.sample_rate, sample_rate))
    return np.asarray(counts, dtype=np.int64)


def utterance_samples(table: pd.DataFrame, sample_rate: int) -> np.ndarray:
    """Samples of each utterance at `sample_rate`: the manifest's `samples` column, else from the headers."""
    if "samples" in table:
        return manifest_samples(table, sample_rate)
    return expected_samples(table["path"].tolist(), sample_rate)


@torch.no_grad()
def extract_features(
    encoder: SpeechEncoder,
    table: pd.DataFrame,
    layers: list[int],
    out_path: str | Path,
    *,
    sample_rate: int,
    on_format_mismatch: str,
    batch_seconds: float,
    device: torch.device,
    precision: str = "auto",
    attrs: dict | None = None,
) -> None:
    """Hidden states of `layers` for every utterance of `table` (utt_id, path, split) into `out_path`."""
    encoder.eval().to(device)
    samples = utterance_samples(table, sample_rate)
    frames = encoder.frame_lengths(torch.from_numpy(samples)).numpy()
    if (frames < 1).any():
        short = table["utt_id"][frames < 1].tolist()[:5]
        raise FeatureError(f"utterance(s) {short} are too short for the backbone (under one frame)")
    alignment = Alignment.from_lengths(table["utt_id"], table["split"], frames)
    batches = length_batches(samples, int(batch_seconds * sample_rate))
    progress = tqdm(total=len(table), unit="utt", disable=not sys.stderr.isatty(), desc="features")
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as handle:
        alignment.write(handle)
        outputs = {
            layer: handle.create_dataset(f"layer_{layer}", (alignment.total_frames, encoder.hidden_size), "float16")
            for layer in layers
        }
        for batch in batches:
            waves = [load_audio(table["path"].iloc[i], sample_rate, on_format_mismatch) for i in batch]
            _check_lengths(table, batch, waves, samples)
            padded, lengths = pad_batch(waves, device)
            with autocast(device, precision):
                hidden, _, _ = encoder(padded, lengths, layers)
            stored = {layer: hidden[layer].to(torch.float16).cpu().numpy() for layer in layers}  # the file's dtype
            for row, index in enumerate(batch):
                start, n = alignment.offsets[index], alignment.lengths[index]
                for layer in layers:
                    outputs[layer][start : start + n] = stored[layer][row, :n]
            progress.update(len(batch))
        handle.attrs.update(attrs or {})
        handle.attrs["layers"] = np.asarray(layers)
        handle.attrs["sample_rate"] = sample_rate
        handle.attrs["frame_rate"] = sample_rate / encoder.frame_hop
    progress.close()
    log.info("wrote %d frames of %d utterances, layers %s, to %s", alignment.total_frames, len(table), layers, out_path)


def _check_lengths(table: pd.DataFrame, batch: list[int], waves: list[np.ndarray], samples: np.ndarray) -> None:
    for i, wave in zip(batch, waves, strict=False):
        if len(wave) != samples[i]:
            raise FeatureError(
                f"audio file '{table['path'].iloc[i]}' decodes to {len(wave)} samples but its header says "
                f"{samples[i]}; the file is damaged, re-copy it"
            )
