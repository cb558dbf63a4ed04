"""Benchmark: gmptl's k-means (pipeline defaults) vs scikit-learn MiniBatchKMeans and faiss-cpu, at HuBERT width.

Same frames for every method (synthetic, feature-like: a 1,000-component Gaussian mixture with
correlated, anisotropic components), k = 512 and 4096. References:
- scikit-learn MiniBatchKMeans with fairseq `simple_kmeans` settings: k-means++ init, batch 10,000,
  max_iter 100, max_no_improvement 100, tol 0, reassignment_ratio 0, n_init `--sklearn-n-init` (3);
- faiss-cpu `Kmeans` with its defaults (random init, 25 iterations), `pip install faiss-cpu`
  (the `bench` extra).
gmptl runs with the schema defaults (`kmeans.*`, `runtime.kmeans_chunk_frames`), as the
pipeline does. Inertia is always the exact nearest-centroid SSE over all frames, computed the
same way (`gmptl.kmeans.nearest`, float32). The floor is the time of one N×D·D×k matmul + argmin
pass (`nearest`); `s/pass` is a method's total time over its passes (seeding included), so a
method whose passes skip work can beat the floor. Prints a table; the last line is the k = 512 row:

    speedup_vs_faiss=… speedup_vs_sklearn=… inertia_vs_sklearn=… pass_vs_floor=…

    python benchmarks/kmeans.py [--frames 100000] [--dim 768] [--ks 512 4096]   (minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import MiniBatchKMeans

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))
from gmptl.kmeans import fit_kmeans, nearest  # noqa: E402


@dataclass
class Run:
    method: str
    k: int
    seconds: float
    inertia: float
    passes: float


def feature_like_frames(n: int, dim: int, seed: int = 0, components: int = 1000, latent: int = 16) -> np.ndarray:
    """Frames of a Gaussian mixture whose components are correlated (rank-`latent` + isotropic noise)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(components, dim)).astype(np.float32) * 2.0
    mixing = rng.normal(size=(components, latent, dim)).astype(np.float32) * 0.5
    which = rng.integers(components, size=n)
    codes = rng.normal(size=(n, latent)).astype(np.float32)
    frames = means[which] + 0.5 * rng.normal(size=(n, dim)).astype(np.float32)
    for component in np.unique(which):
        rows = np.flatnonzero(which == component)
        frames[rows] += codes[rows] @ mixing[component]
    return frames


def schema_defaults() -> dict:
    """gmptl's k-means defaults, and the runtime chunk size, from the config schema."""
    from gmptl.schema import defaults

    return {**defaults("$defs", "kmeans"), "chunk_frames": defaults("runtime")["kmeans_chunk_frames"]}


def exact_inertia(x: torch.Tensor, centroids: np.ndarray) -> float:
    return float(nearest(x, torch.from_numpy(np.ascontiguousarray(centroids, np.float32)))[1].double().sum())


def floor_seconds(x: torch.Tensor, k: int, repeats: int = 3) -> float:
    """Fastest of `repeats` plain assignment passes (one matmul + argmin over all frames)."""
    centroids = x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(1))[:k]].clone()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        nearest(x, centroids)
        times.append(time.perf_counter() - start)
    return min(times)


def run_gmptl(x: np.ndarray, k: int, settings: dict) -> tuple[np.ndarray, float, float]:
    start = time.perf_counter()
    result = fit_kmeans(
        x,
        k,
        seed=0,
        max_iter=settings["max_iter"],
        tol=settings["tol"],
        n_init=settings["n_init"],
        init_frames=settings["init_frames"],
        chunk=settings["chunk_frames"],
    )
    return result.centroids, time.perf_counter() - start, result.iterations + 1  # + the final assignment


def run_sklearn(x: np.ndarray, k: int, n_init: int) -> tuple[np.ndarray, float, float]:
    start = time.perf_counter()
    model = MiniBatchKMeans(
        n_clusters=k,
        init="k-means++",
        max_iter=100,
        batch_size=10000,
        tol=0.0,
        max_no_improvement=100,
        n_init=n_init,
        reassignment_ratio=0.0,
        compute_labels=False,
        random_state=0,
    ).fit(x)
    return model.cluster_centers_, time.perf_counter() - start, model.n_steps_ * 10000 / len(x)


def run_faiss(x: np.ndarray, k: int) -> tuple[np.ndarray, float, float]:
    import faiss

    start = time.perf_counter()
    model = faiss.Kmeans(x.shape[1], k, niter=25, seed=0)
    model.train(x)
    return model.centroids, time.perf_counter() - start, 25


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--ks", type=int, nargs="+", default=[512, 4096])
    parser.add_argument("--sklearn-n-init", type=int, default=3)
    args = parser.parse_args()
    settings = schema_defaults()
    x = feature_like_frames(args.frames, args.dim)
    xt = torch.from_numpy(x)
    print(f"frames {args.frames} × dim {args.dim}, torch threads {torch.get_num_threads()}, cpu; gmptl {settings}")
    widths = {
        "k": 5,
        "method": 8,
        "seconds": 8,
        "inertia": 13,
        "vs_sklearn": 10,
        "passes": 7,
        "s/pass": 7,
        "vs_floor": 8,
    }
    print(" ".join(f"{name:>{width}}" for name, width in widths.items()))
    summary = {}
    for k in args.ks:
        floor = floor_seconds(xt, k)
        print(f"{k:>5} {'floor':>8} {floor:>8.3f} {'':>13} {'':>10} {1:>7} {floor:>7.3f} {1:>8.2f}", flush=True)
        runs: dict[str, Run] = {}
        for method, fit in (
            ("sklearn", lambda k=k: run_sklearn(x, k, args.sklearn_n_init)),
            ("gmptl", lambda k=k: run_gmptl(x, k, settings)),
            ("faiss", lambda k=k: run_faiss(x, k)),
        ):
            centroids, seconds, passes = fit()
            run = runs[method] = Run(method, k, seconds, exact_inertia(xt, centroids), passes)
            per_pass = run.seconds / run.passes
            values = (k, method, f"{seconds:.2f}", f"{run.inertia:.5g}", f"{run.inertia / runs['sklearn'].inertia:.5f}")
            values += (f"{passes:.1f}", f"{per_pass:.3f}", f"{per_pass / floor:.2f}")
            print(
                " ".join(f"{value:>{width}}" for value, width in zip(values, widths.values(), strict=True)), flush=True
            )
        ours, faiss_run, sklearn_run = runs["gmptl"], runs["faiss"], runs["sklearn"]
        summary[k] = (
            f"speedup_vs_faiss={faiss_run.seconds / ours.seconds:.2f} "
            f"speedup_vs_sklearn={sklearn_run.seconds / ours.seconds:.2f} "
            f"inertia_vs_sklearn={ours.inertia / sklearn_run.inertia:.5f} "
            f"pass_vs_floor={ours.seconds / ours.passes / floor:.2f}"
        )
        print(f"k={k}: {summary[k]}", flush=True)
    print(summary.get(512, summary[args.ks[0]]))


if __name__ == "__main__":
    main()
