"""Benchmark: gmptl's torch k-means vs scikit-learn MiniBatchKMeans with fairseq's settings.

Same frames for both (synthetic, feature-like: a 1,000-component mixture with correlated,
anisotropic components), k = 64 and 512. fairseq `simple_kmeans` settings for the reference:
k-means++ init, batch 10,000, max_iter 100, n_init 20, max_no_improvement 100, tol 0,
reassignment_ratio 0. Prints a table and ends with one `name=value` line (the k = 512 row).

    python benchmarks/kmeans.py [--frames 200000] [--dim 64]   (--dim 768 for HuBERT-base width; minutes)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import MiniBatchKMeans

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))
from gmptl.kmeans import fit_kmeans  # noqa: E402


def feature_like_frames(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    components = 1000
    means = rng.normal(size=(components, dim)) * 2.0
    mixing = rng.normal(size=(components, 16, dim)) * 0.5
    which = rng.integers(components, size=n)
    latent = rng.normal(size=(n, 16))
    frames = means[which] + np.einsum("nl,nld->nd", latent, mixing[which]) + 0.5 * rng.normal(size=(n, dim))
    return frames.astype(np.float32)


def inertia(x: np.ndarray, centroids: np.ndarray) -> float:
    from gmptl.kmeans import nearest

    return float(nearest(torch.from_numpy(x), torch.from_numpy(centroids.astype(np.float32)))[1].double().sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--ks", type=int, nargs="+", default=[64, 512])
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    x = feature_like_frames(args.frames, args.dim)
    print(f"frames {args.frames} × dim {args.dim}, torch threads {torch.get_num_threads()}, device cpu")
    print(f"{'k':>5} {'ours_s':>8} {'sklearn_s':>10} {'speedup':>8} {'ours_inertia':>14} {'sklearn_inertia':>16} {'ratio':>7}")
    last = None
    for k in args.ks:
        start = time.perf_counter()
        ours = fit_kmeans(x, k, seed=0)
        ours_s = time.perf_counter() - start
        start = time.perf_counter()
        reference = MiniBatchKMeans(
            n_clusters=k, init="k-means++", max_iter=100, batch_size=10000, tol=0.0, max_no_improvement=100,
            n_init=20, reassignment_ratio=0.0, compute_labels=False, random_state=0,
        ).fit(x)
        sklearn_s = time.perf_counter() - start
        ours_inertia, ref_inertia = ours.inertia, inertia(x, reference.cluster_centers_)
        last = (sklearn_s / ours_s, ours_inertia / ref_inertia)
        print(f"{k:>5} {ours_s:>8.2f} {sklearn_s:>10.2f} {last[0]:>8.2f} {ours_inertia:>14.4g} {ref_inertia:>16.4g} {last[1]:>7.4f}")
    print(f"speedup_vs_sklearn={last[0]:.2f} inertia_ratio={last[1]:.4f}")


if __name__ == "__main__":
    main()
