"""GMP labels: k-means of one layer's frames fitted on a fold's training split, applied to all frames."""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np
import torch

from .errors import FeatureError, KMeansError
from .fileio import atomic_path
from .frames import Alignment, layer_dataset, open_h5, read_alignment
from .kmeans import fit_kmeans, nearest, usage_entropy
from .settings import KMeansSettings

log = logging.getLogger(__name__)


def sample_fit_frames(
    dataset: h5py.Dataset, alignment: Alignment, fraction: float, max_frames: int, seed: int
) -> np.ndarray:
    """Frames of the training split only: a seeded fraction of utterances, then at most `max_frames`."""
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(alignment.split == "train")
    if len(rows) == 0:
        raise KMeansError(f"feature file '{dataset.file.filename}' has no training utterances to fit k-means on")
    if fraction < 1.0:
        rows = np.sort(rng.choice(rows, size=max(1, int(round(fraction * len(rows)))), replace=False))
    index = alignment.frame_indices(rows)
    if len(index) > max_frames:
        index = np.sort(rng.choice(index, size=max_frames, replace=False))
    return read_rows(dataset, index)


def read_rows(dataset: h5py.Dataset, index: np.ndarray, block: int = 65536) -> np.ndarray:
    """Rows `index` (sorted) of an (N, D) dataset as float32, read in contiguous runs."""
    out = np.empty((len(index), dataset.shape[1]), dtype=np.float32)
    for start in range(0, len(index), block):
        part = index[start : start + block]
        lo, hi = int(part[0]), int(part[-1]) + 1
        out[start : start + len(part)] = dataset[lo:hi][part - lo]
    return out


def assign_all(dataset: h5py.Dataset, centroids: torch.Tensor, device, block: int = 262144) -> np.ndarray:
    """Nearest-centroid label of every frame of `dataset`, streamed in blocks."""
    labels = np.empty(dataset.shape[0], dtype=np.int32)
    for start in range(0, dataset.shape[0], block):
        frames = torch.from_numpy(dataset[start : start + block].astype(np.float32)).to(device)
        if not torch.isfinite(frames).all():
            raise FeatureError(f"feature file '{dataset.file.filename}' holds NaN/inf frames in {dataset.name}")
        labels[start : start + block] = nearest(frames, centroids)[0].cpu().numpy()
    return labels


def fit_gmp_labels(
    features_path: str | Path,
    layer: int,
    k: int,
    out_path: str | Path,
    *,
    settings: KMeansSettings,
    seed: int,
    device: torch.device,
    chunk: int = 32768,
    attrs: dict | None = None,
) -> dict:
    """Fit k-means for (layer, k) on the fold's training frames; write centroids and all frame labels."""
    with open_h5(features_path) as handle:
        alignment = read_alignment(handle)
        dataset = layer_dataset(handle, layer)
        fit = sample_fit_frames(dataset, alignment, settings.fit_fraction, settings.max_fit_frames, seed)
        if not np.isfinite(fit).all():
            raise KMeansError(f"feature file '{features_path}' holds NaN/inf frames in layer {layer}; re-extract it")
        if k > len(fit):
            raise KMeansError(
                f"k = {k} is larger than the {len(fit)} training frames of '{features_path}' (layer {layer}); "
                "lower gmp.k or raise kmeans.max_fit_frames / kmeans.fit_fraction"
            )
        result = fit_kmeans(
            fit,
            k,
            seed=seed,
            max_iter=settings.max_iter,
            tol=settings.tol,
            n_init=settings.n_init,
            init_frames=settings.init_frames,
            chunk=chunk,
            device=device,
        )
        labels = assign_all(dataset, torch.from_numpy(result.centroids).to(device), device)
        source_attrs = dict(handle.attrs)
    summary = {
        "layer": layer,
        "k": k,
        "seed": seed,
        "inertia": result.inertia,
        "iterations": result.iterations,
        "converged": result.converged,
        "n_fit_frames": len(fit),
        "usage_entropy_bits": usage_entropy(labels, k),
        "max_entropy_bits": float(np.log2(k)),
    }
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as out:
        alignment.write(out)
        out.create_dataset("labels", data=labels)
        out.create_dataset("centroids", data=result.centroids)
        for key in ("backbone", "fold", "frame_rate", "code_version"):
            if key in source_attrs:
                out.attrs[key] = source_attrs[key]
        out.attrs.update({**summary, **(attrs or {})})
    log.info(
        "layer %d k %d: %s", layer, k, {key: summary[key] for key in ("inertia", "iterations", "usage_entropy_bits")}
    )
    return summary


def read_gmp_labels(path: str | Path) -> tuple[Alignment, np.ndarray, dict]:
    """Alignment, frame labels and attributes of one GMP label file."""
    with open_h5(path, required=("utt_ids", "split", "offsets", "lengths", "labels", "centroids")) as handle:
        alignment = read_alignment(handle)
        labels = handle["labels"][:]
        attrs = dict(handle.attrs)
    if len(labels) != alignment.total_frames:
        raise FeatureError(f"label file '{path}' has {len(labels)} labels for {alignment.total_frames} frames")
    return alignment, labels, attrs
