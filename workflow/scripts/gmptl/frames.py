"""HDF5 files of frame-level data: features (per layer) and GMP labels, aligned by utterance.

Both kinds share the alignment datasets:
    utt_ids  (N,)  str     utterance ids, manifest order
    split    (N,)  str     train | valid | test of this fold
    offsets  (N,)  int64   first frame of each utterance in the frame datasets
    lengths  (N,)  int64   frames of each utterance
Feature files add one contiguous float16 dataset `layer_<L>` (total_frames, D) per layer;
label files add `labels` (total_frames,) int32 and `centroids` (k, D) float32.
Provenance lives in the root attributes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .errors import FeatureError

ALIGNMENT = ("utt_ids", "split", "offsets", "lengths")


@dataclass
class Alignment:
    """Which frames belong to which utterance."""

    utt_ids: np.ndarray
    split: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray

    @classmethod
    def from_lengths(cls, utt_ids, split, lengths) -> Alignment:
        lengths = np.asarray(lengths, dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        return cls(np.asarray(utt_ids, dtype=object), np.asarray(split, dtype=object), offsets, lengths)

    @property
    def total_frames(self) -> int:
        return int(self.lengths.sum())

    def frame_indices(self, rows: np.ndarray) -> np.ndarray:
        """Frame indices of the utterances at `rows`, concatenated."""
        if len(rows) == 0:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.arange(self.offsets[r], self.offsets[r] + self.lengths[r]) for r in rows])

    def write(self, handle: h5py.File) -> None:
        strings = h5py.string_dtype()
        handle.create_dataset("utt_ids", data=self.utt_ids.astype(str).astype(object), dtype=strings)
        handle.create_dataset("split", data=self.split.astype(str).astype(object), dtype=strings)
        handle.create_dataset("offsets", data=self.offsets)
        handle.create_dataset("lengths", data=self.lengths)


def open_h5(path: str | os.PathLike, required: tuple[str, ...] = ALIGNMENT) -> h5py.File:
    """Open an HDF5 file read-only; a missing, corrupt or incomplete file is a `FeatureError`."""
    if not Path(path).is_file():
        raise FeatureError(f"HDF5 file '{path}' does not exist; rerun the rule that writes it")
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise FeatureError(f"HDF5 file '{path}' is corrupt or not HDF5 ({err}); delete it and rerun") from err
    missing = [name for name in required if name not in handle]
    if missing:
        handle.close()
        raise FeatureError(f"HDF5 file '{path}' lacks dataset(s) {missing}; delete it and rerun")
    return handle


def read_alignment(handle: h5py.File) -> Alignment:
    """The alignment datasets of an open frame file, checked for consistency."""
    alignment = Alignment(
        utt_ids=handle["utt_ids"].asstr()[:],
        split=handle["split"].asstr()[:],
        offsets=handle["offsets"][:].astype(np.int64),
        lengths=handle["lengths"][:].astype(np.int64),
    )
    expected = np.concatenate([[0], np.cumsum(alignment.lengths)[:-1]])
    if len(alignment.offsets) and not np.array_equal(alignment.offsets, expected):
        raise FeatureError(f"HDF5 file '{handle.filename}': offsets do not follow lengths; delete it and rerun")
    return alignment


def layer_dataset(handle: h5py.File, layer: int) -> h5py.Dataset:
    """The `layer_<L>` dataset of a feature file."""
    name = f"layer_{layer}"
    if name not in handle:
        have = sorted(k for k in handle if k.startswith("layer_"))
        raise FeatureError(f"feature file '{handle.filename}' has no layer {layer} (has {have}); rerun extraction")
    return handle[name]


def read_attrs(handle: h5py.File) -> dict:
    return {key: (value.tolist() if hasattr(value, "tolist") else value) for key, value in handle.attrs.items()}
