"""K-means in torch: k-means++ initialisation and chunked Lloyd iterations on CPU or GPU.

Distances use ‖x‖² − 2x·C + ‖C‖² over chunks of `chunk` rows, so memory stays at
chunk × k floats whatever the number of frames. Stopping follows scikit-learn: the summed
squared centroid shift falls below `tol` × the mean per-dimension variance of the data.
Empty clusters are re-seeded with the frames farthest from their centroids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .errors import KMeansError


@dataclass
class KMeansResult:
    centroids: np.ndarray  # (k, D) float32
    inertia: float  # sum of squared distances of the fit frames to their centroids
    iterations: int
    converged: bool


def nearest(x: torch.Tensor, centroids: torch.Tensor, chunk: int = 32768) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the nearest centroid of every row of `x`, and the squared distance to it."""
    c_sq = (centroids * centroids).sum(1)
    labels = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    dists = torch.empty(x.shape[0], dtype=centroids.dtype, device=x.device)
    for start in range(0, x.shape[0], chunk):
        block = x[start : start + chunk].to(centroids.dtype)
        partial = c_sq[None] - 2.0 * block @ centroids.T
        best, index = partial.min(1)
        labels[start : start + chunk] = index
        dists[start : start + chunk] = (best + (block * block).sum(1)).clamp_min(0)
    return labels, dists


def squared_distances(x: torch.Tensor, points: torch.Tensor, chunk: int = 32768) -> torch.Tensor:
    """(N, P) squared distances of every row of `x` to each of a few `points`."""
    p_sq = (points * points).sum(1)
    out = torch.empty(x.shape[0], points.shape[0], dtype=points.dtype, device=x.device)
    for start in range(0, x.shape[0], chunk):
        block = x[start : start + chunk]
        out[start : start + chunk] = ((block * block).sum(1, keepdim=True) - 2.0 * block @ points.T + p_sq).clamp_min(0)
    return out


def kmeans_plusplus(x: torch.Tensor, k: int, generator: torch.Generator, chunk: int = 32768) -> torch.Tensor:
    """Greedy k-means++ seeding (2 + ⌊ln k⌋ candidates per step, as scikit-learn)."""
    n = x.shape[0]
    trials = 2 + int(math.log(k))
    centroids = torch.empty(k, x.shape[1], dtype=x.dtype, device=x.device)
    first = int(torch.randint(n, (1,), generator=generator))
    centroids[0] = x[first]
    closest = squared_distances(x, centroids[:1], chunk)[:, 0]
    for i in range(1, k):
        cumulative = torch.cumsum(closest.double(), 0)
        draws = torch.rand(trials, generator=generator, dtype=torch.float64).to(x.device) * cumulative[-1]
        candidates = torch.searchsorted(cumulative, draws).clamp_max(n - 1)
        updates = torch.minimum(closest[:, None], squared_distances(x, x[candidates], chunk))
        best = int(updates.double().sum(0).argmin())
        centroids[i] = x[candidates[best]]
        closest = updates[:, best]
    return centroids


def lloyd(
    x: torch.Tensor, centroids: torch.Tensor, max_iter: int, tol: float, chunk: int
) -> tuple[torch.Tensor, int, bool]:
    """Lloyd iterations from `centroids` until the summed squared shift is ≤ `tol` or `max_iter`.

    One pass over `x` per iteration: each chunk is assigned (one fused matmul) and added to
    per-chunk float32 sums, accumulated in float64.
    """
    k, dim = centroids.shape
    for iteration in range(1, max_iter + 1):
        c_sq = (centroids * centroids).sum(1)
        sums = torch.zeros(k, dim, dtype=torch.float64, device=x.device)
        partial = torch.empty(k, dim, dtype=x.dtype, device=x.device)
        counts = torch.zeros(k, dtype=torch.long, device=x.device)
        for start in range(0, x.shape[0], chunk):
            block = x[start : start + chunk]
            labels = torch.addmm(c_sq[None], block, centroids.T, alpha=-2.0).argmin(1)
            sums += partial.zero_().index_add_(0, labels, block)
            counts += torch.bincount(labels, minlength=k)
        updated = (sums / counts.clamp_min(1)[:, None]).to(centroids.dtype)
        empty = torch.nonzero(counts == 0).flatten()
        if len(empty):  # re-seed empty clusters with the frames farthest from their centroids
            _, dists = nearest(x, centroids, chunk)
            updated[empty] = x[torch.topk(dists, len(empty)).indices]
        shift = float(((updated - centroids) ** 2).sum())
        centroids = updated
        if shift <= tol and len(empty) == 0:
            return centroids, iteration, True
    return centroids, max_iter, False


def fit_kmeans(
    frames: np.ndarray | torch.Tensor,
    k: int,
    *,
    seed: int = 0,
    max_iter: int = 100,
    tol: float = 1e-4,
    n_init: int = 3,
    init_frames: int = 30_000,
    chunk: int = 32768,
    device: torch.device | str = "cpu",
) -> KMeansResult:
    """Fit k centroids to `frames` (N, D).

    `n_init` k-means++ seedings, each refined by Lloyd on a seeded subset of at most
    `init_frames` frames (all frames when there are fewer); the best of them (lowest subset
    inertia) is then refined by Lloyd on all frames.
    """
    x = torch.as_tensor(frames).to(device=device, dtype=torch.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise KMeansError(f"k-means needs a non-empty (frames, dims) array, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise KMeansError("the fit frames contain NaN or infinite values; the features are corrupt")
    if k > x.shape[0]:
        raise KMeansError(f"k = {k} is larger than the {x.shape[0]} frames to fit; lower k or fit on more frames")
    generator = torch.Generator().manual_seed(seed)
    absolute_tol = tol * float(x.var(0).mean())
    subset = x
    if x.shape[0] > max(init_frames, k):
        pick = torch.randperm(x.shape[0], generator=generator)[: max(init_frames, k)]
        subset = x[pick.to(x.device)]
    best, best_inertia, iterations, converged = None, float("inf"), 0, False
    for _ in range(n_init):
        seeds = kmeans_plusplus(subset, k, generator, chunk)
        refined, steps, done = lloyd(subset, seeds, max_iter, absolute_tol, chunk)
        inertia = float(nearest(subset, refined, chunk)[1].double().sum())
        if inertia < best_inertia:
            best, best_inertia, iterations, converged = refined, inertia, steps, done
    centroids = best
    if subset is not x:
        centroids, iterations, converged = lloyd(x, best, max_iter, absolute_tol, chunk)
    _, dists = nearest(x, centroids, chunk)
    return KMeansResult(centroids.cpu().numpy(), float(dists.double().sum()), iterations, converged)


def usage_entropy(labels: np.ndarray, k: int) -> float:
    """Entropy (bits) of the cluster-usage distribution; log2(k) means every cluster is used equally."""
    counts = np.bincount(np.asarray(labels), minlength=k).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())
