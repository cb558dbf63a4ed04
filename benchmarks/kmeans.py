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
    header = ("k", "ours_s", "sklearn_s", "speedup", "ours_inertia", "sklearn_inertia", "ratio")
    widths = (5, 8, 10, 8, 14, 16, 7)
    print(" ".join(f"{name:>{width}}" for name, width in zip(header, widths, strict=True)))
    last = None
    for k in args.ks:
        start = time.perf_counter()
        ours = fit_kmeans(x, k, seed=0)
        ours_s = time.perf_counter() - start
        start = time.perf_counter()
        reference = MiniBatchKMeans(
            n_clusters=k,
            init="k-means++",
            max_iter=100,
            batch_size=10000,
            tol=0.0,
            max_no_improvement=100,
            n_init=20,
            reassignment_ratio=0.0,
            compute_labels=False,
            random_state=0,
        ).fit(x)
        sklearn_s = time.perf_counter() - start
        ours_inertia, ref_inertia = ours.inertia, inertia(x, reference.cluster_centers_)
        last = (sklearn_s / ours_s, ours_inertia / ref_inertia)
        values = (
            f"{k}",
            f"{ours_s:.2f}",
            f"{sklearn_s:.2f}",
            f"{last[0]:.2f}",
            f"{ours_inertia:.4g}",
            f"{ref_inertia:.4g}",
            f"{last[1]:.4f}",
        )
        print(" ".join(f"{value:>{width}}" for value, width in zip(values, widths, strict=True)))
    print(f"speedup_vs_sklearn={last[0]:.2f} inertia_ratio={last[1]:.4f}")


if __name__ == "__main__":
    main()
