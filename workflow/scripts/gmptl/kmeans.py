"""K-means in torch: greedy k-means++ seeding on a subset, then bounded Lloyd iterations on all frames.

- Seeding: `n_init` greedy k-means++ seedings (scikit-learn's 2 + ⌊ln k⌋ candidates per step) on
  one seeded subset of `init_frames` frames; with more than one, each is ranked by the subset
  objective after a few Lloyd iterations there (the seeds' own potential was measured to predict
  the final SSE poorly), and the best seeds go on to all frames. Measured at 100k × 768, k = 512:
  a larger seeding subset gives clearly better optima (10k frames: about +0.2% SSE over 20k; 5k:
  +0.6%); starting all frames from centroids refined on a small subset led to worse optima.
- Lloyd on all frames keeps, per frame, an upper bound on the distance to its centroid and a lower
  bound on the distance to any other centroid (Hamerly 2010). A frame whose bounds still separate
  after the centroids moved keeps its centroid without a distance computation; the others are
  re-assigned by one matmul against all centroids in chunks of `chunk` rows. Late iterations touch
  a small fraction of the frames.
- Stopping: the k-means objective of the current assignment (Σ‖x‖² − Σⱼ‖sⱼ‖²/nⱼ from float64
  cluster sums, no extra pass) fell by less than `tol` (relative) in one iteration, or nothing moved.
- Empty clusters are re-seeded with the frames farthest from their centroids, one frame per empty
  cluster, never emptying another; the fit ends with every cluster non-empty, or, when the frames hold
  fewer distinct points than k, raises a KMeansError.
- Centring: the frames are fitted centred on their mean (float64 sum), on every device, and the
  centroids are shifted back; distances do not change, but features with a large common offset would
  otherwise lose precision in the ‖x‖² − 2x·c + ‖c‖² expansion and leave Lloyd's trajectory. `nearest`
  likewise centres frames and centroids on the centroids' mean.
- Precision (`matmul_precision`): `auto` is float32 on CPU. On CUDA (torch ≥ 2.8) the Lloyd matmuls
  take bfloat16 inputs with float32 accumulation and output, so a near-tie may go either way while
  fitting; `nearest` (the final assignment and the returned inertia) is float32 everywhere. `bf16` asks
  for those matmuls on any device: CPU has no `aten::mm.dtype` kernel, so there the inputs are rounded to bfloat16 and
  multiplied in float32 (the same products, float32 sums), slower than float32 — for tests only.
- Screened float32 (CPU with native bfloat16 dot products, k ≥ 1024): a float32 assignment first ranks the
  centroids of each frame by a bfloat16 matmul (about 5× faster than float32 on such CPUs), then computes
  the few best candidates in float32 and keeps the answer only where a worst-case bound on the bfloat16
  error proves that no other centroid can be nearer (`SCREEN_ERROR`); other frames are assigned by the
  plain float32 matmul. So the labels and distances are float32's (up to float32 rounding in exact ties),
  not bfloat16's. k-means++ seeding screens the same way: a frame is left out of a candidate's exact
  distances only where the bound proves the candidate cannot be nearer than its current seed.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import schema
from .errors import KMeansError


@dataclass
class KMeansResult:
    centroids: np.ndarray  # (k, D) float32
    inertia: float  # sum of squared distances of the fit frames to their nearest centroids
    iterations: int  # Lloyd iterations on all fit frames
    converged: bool


@dataclass
class LloydResult:
    centroids: torch.Tensor
    objective: float  # SSE of the last assignment around `centroids` (its cluster means)
    iterations: int
    converged: bool


def nearest(x: torch.Tensor, centroids: torch.Tensor, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the nearest centroid of every row of `x`, and the squared distance to it (float32).

    Frames and centroids are both shifted by the centroids' mean first (distances do not change), so a
    large common offset of the features costs no precision in the ‖x‖² − 2x·c + ‖c‖² expansion.
    """
    origin = centroids.double().mean(0).to(centroids.dtype)
    centroids = centroids - origin
    c_sq = (centroids * centroids).sum(1)
    c_t = centroids.T.contiguous()
    screen = Screen.of(centroids, c_sq) if screened(x.device, centroids.dtype, centroids.shape[0]) else None
    labels = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    dists = torch.empty(x.shape[0], dtype=centroids.dtype, device=x.device)
    for start in range(0, x.shape[0], chunk):
        block = x[start : start + chunk].to(centroids.dtype) - origin
        best, index = smallest_partials(block, c_t, c_sq, 1, screen)
        labels[start : start + chunk] = index[:, 0]
        dists[start : start + chunk] = (best[:, 0] + (block * block).sum(1)).clamp_min(0)
    return labels, dists


# Worst-case error of a bfloat16 ‖c‖² − 2x·c, in units of 2‖x‖‖c‖ + ‖c‖²: the rounding of both inputs and of the
# output to bfloat16 (2⁻⁸ each: bfloat16 keeps 8 significant bits, so its unit roundoff is 2⁻⁸), plus float32
# accumulation over the dimensions and the float32 side's own rounding. (2⁻⁹ each was too small: inputs that all
# round the same way reach 1.3 × that bound, and the screen then picked a farther centroid; see the tests.)
SCREEN_ERROR = 3 * 2.0**-8 + 2e-4
SCREEN_MIN_K = 1024  # measured at 100k × 768: no gain at k = 512, 1.4 × per pass at 1024, 2.2 × at 4096
SCREEN_SPARE = 2  # exact distances beyond the ones asked for, so the bound usually proves the answer


@functools.cache
def _cpu_has_bf16_dot() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX); elsewhere a bfloat16 matmul is slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def screened(device: torch.device, dtype: torch.dtype, k: int) -> bool:
    """Whether float32 assignments to `k` centroids on `device` go through the bfloat16 screen. CPU only: CUDA's
    bfloat16 matmuls may reduce in bfloat16 (`allow_bf16_reduced_precision_reduction`), which the bound does not
    cover."""
    return device.type == "cpu" and dtype == torch.float32 and k >= SCREEN_MIN_K and _cpu_has_bf16_dot()


@dataclass
class Screen:
    """Centroids prepared for screened assignment: [−2c; ‖c‖²] in bfloat16, (D + 1, k), and the bound's scale."""

    augmented: torch.Tensor
    centroids: torch.Tensor  # (k, D) float32, for the exact candidates
    norm_max: float
    sq_max: float

    @classmethod
    def of(cls, centroids: torch.Tensor, c_sq: torch.Tensor) -> Screen:
        augmented = torch.cat([-2.0 * centroids, c_sq[:, None]], 1).T.contiguous().to(torch.bfloat16)
        return cls(augmented, centroids.contiguous(), float(c_sq.max().sqrt()), float(c_sq.max()))


def smallest_partials(
    block: torch.Tensor, c_t: torch.Tensor, c_sq: torch.Tensor, count: int, screen: Screen | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The `count` smallest ‖c‖² − 2x·c of every row of `block` and their centroids, ascending (float32 values).

    With a `screen`, a bfloat16 matmul ranks the centroids; the best `count + SCREEN_SPARE` are computed in
    float32, and a row keeps them only when the next-ranked centroid, less the worst-case bfloat16 error, is
    still beyond the `count`-th exact value; any other row (a near tie, a NaN) is computed by the full matmul.
    """
    if screen is None or count + SCREEN_SPARE >= c_sq.shape[0]:
        part = partial_distances(block, c_t, c_sq)
        if count == 1:  # `min`, not `topk`: they can break exact ties (identical frames) differently
            best, index = part.min(1)
            return best[:, None], index[:, None]
        return torch.topk(part, count, dim=1, largest=False)
    ones = torch.ones(block.shape[0], 1, dtype=block.dtype, device=block.device)
    approx = torch.mm(torch.cat([block, ones], 1).to(torch.bfloat16), screen.augmented)
    ranked, candidates = torch.topk(approx, count + SCREEN_SPARE + 1, dim=1, largest=False)
    candidates = candidates[:, :-1]
    exact = torch.stack(
        [c_sq[column] - 2.0 * (block * screen.centroids[column]).sum(1) for column in candidates.T], dim=1
    )
    values, order = torch.topk(exact, count, dim=1, largest=False)
    indices = candidates.gather(1, order)
    error = SCREEN_ERROR * (2.0 * block.norm(dim=1) * screen.norm_max + screen.sq_max)
    unsure = torch.nonzero(~(ranked[:, -1].float() - error > values[:, -1])).flatten()
    if len(unsure):
        values[unsure], indices[unsure] = torch.topk(
            partial_distances(block[unsure], c_t, c_sq), count, dim=1, largest=False
        )
    return values, indices


MATMUL_PRECISIONS = ("auto", "bf16", "fp32")


def matmul_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """Input precision of the fitting matmuls (float32 accumulation): `auto` is bfloat16 on CUDA, float32
    elsewhere; `bf16` and `fp32` hold on every device (bf16 on CUDA needs torch ≥ 2.8, else float32)."""
    if precision not in MATMUL_PRECISIONS:
        raise KMeansError(f"k-means matmul precision '{precision}' is not one of {', '.join(MATMUL_PRECISIONS)}")
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return torch.float32
    return torch.bfloat16 if device.type != "cuda" or _mm_has_out_dtype() else torch.float32


@functools.cache
def _mm_has_out_dtype() -> bool:
    """Whether this torch has `torch.mm(..., out_dtype=)` (2.8 and later); older ones stay float32."""
    half = torch.empty(1, 1, dtype=torch.bfloat16, device="meta")
    try:
        return torch.mm(half, half, out_dtype=torch.float32).dtype == torch.float32
    except (TypeError, RuntimeError, NotImplementedError):
        return False


def partial_distances(block: torch.Tensor, c_t: torch.Tensor, c_sq: torch.Tensor) -> torch.Tensor:
    """‖c‖² − 2x·c for every row of `block` and column of `c_t` (D, k): the squared distance less ‖x‖²."""
    if c_t.dtype == torch.float32:
        return torch.addmm(c_sq[None], block, c_t, alpha=-2.0)
    if block.device.type == "cpu":  # no aten::mm.dtype kernel: bfloat16-rounded inputs, float32 products
        return torch.addmm(c_sq[None], block.to(c_t.dtype).float(), c_t.float(), alpha=-2.0)
    return c_sq[None] - 2.0 * torch.mm(block.to(c_t.dtype), c_t, out_dtype=torch.float32)


def kmeans_plusplus(x: torch.Tensor, k: int, generator: torch.Generator) -> tuple[torch.Tensor, float]:
    """Greedy k-means++ seeding (2 + ⌊ln k⌋ candidates per step, as scikit-learn).

    Returns k rows of `x` and their potential (the SSE of `x` to its nearest seed). Where `screened`, each
    step's candidate distances are computed in float32 only for the frames that a bfloat16 matmul and its
    worst-case error bound cannot rule out (a frame far from every candidate keeps its current distance).
    """
    n = x.shape[0]
    trials = 2 + int(math.log(k))
    x_sq = (x * x).sum(1)
    screen = _SeedScreen.of(x, x_sq) if screened(x.device, x.dtype, k) else None
    chosen = torch.empty(k, dtype=torch.long, device=x.device)
    chosen[0] = int(torch.randint(n, (1,), generator=generator))
    closest = (x_sq - 2.0 * x @ x[chosen[0]] + x_sq[chosen[0]]).clamp_min(0)
    for i in range(1, k):
        cumulative = torch.cumsum(closest, 0, dtype=torch.float64)
        draws = torch.rand(trials, generator=generator, dtype=torch.float64).to(x.device) * cumulative[-1]
        candidates = torch.searchsorted(cumulative, draws).clamp_max(n - 1)
        rows = screen.reachable(candidates, closest) if screen is not None else slice(None)
        dists = torch.addmm(x_sq[candidates][None], x[rows], x[candidates].T.contiguous(), alpha=-2.0)
        updates = torch.minimum(closest[rows, None], dists.add_(x_sq[rows, None]).clamp_min_(0))
        if screen is None:  # the potential of each candidate
            best = int(updates.sum(0, dtype=torch.float64).argmin())
        else:  # only the reachable frames change: rank by the potential's change
            best = int((updates - closest[rows, None]).sum(0, dtype=torch.float64).argmin())
        chosen[i] = candidates[best]
        closest[rows] = updates[:, best]
    return x[chosen].clone(), float(closest.sum(dtype=torch.float64))


@dataclass
class _SeedScreen:
    """The seeding frames in bfloat16, [x, 1], with their norms: which frames a candidate seed could move."""

    augmented: torch.Tensor  # (n, D + 1) bfloat16
    x_sq: torch.Tensor
    norms: torch.Tensor

    @classmethod
    def of(cls, x: torch.Tensor, x_sq: torch.Tensor) -> _SeedScreen:
        ones = torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)
        return cls(torch.cat([x, ones], 1).to(torch.bfloat16), x_sq, x_sq.sqrt())

    def reachable(self, candidates: torch.Tensor, closest: torch.Tensor) -> torch.Tensor:
        """Frames whose squared distance to some candidate may be below `closest` (all others provably not)."""
        c_sq = self.x_sq[candidates]
        weights = torch.cat([-2.0 * self.augmented[candidates, :-1].float(), c_sq[:, None]], 1)
        approx = torch.mm(self.augmented, weights.T.to(torch.bfloat16)).float()  # ≈ ‖c‖² − 2x·c
        error = SCREEN_ERROR * (2.0 * self.norms[:, None] * c_sq.sqrt()[None] + c_sq[None])
        return torch.nonzero(~(approx + self.x_sq[:, None] - error >= closest[:, None]).all(1)).flatten()


SELECTION_ITERATIONS = 10  # Lloyd iterations on the seeding subset that rank `n_init` > 1 seedings


class _Bounds:
    """Per-frame assignment with Hamerly's bounds (distances, not squared)."""

    def __init__(self, x: torch.Tensor, chunk: int, dtype: torch.dtype = torch.float32):
        self.x, self.chunk, self.dtype = x, chunk, dtype
        self.x_sq = (x * x).sum(1)
        self.labels = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        self.upper = torch.zeros(x.shape[0], dtype=torch.float32, device=x.device)
        self.lower = torch.zeros(x.shape[0], dtype=torch.float32, device=x.device)

    def assign(self, rows: torch.Tensor, centroids: torch.Tensor) -> None:
        """Nearest and second-nearest centroid distances of `rows`, by matmul against all centroids."""
        c_sq = (centroids * centroids).sum(1)
        c_t = centroids.T.contiguous().to(self.dtype)
        second = 1 if centroids.shape[0] > 1 else 0
        screen = Screen.of(centroids, c_sq) if screened(self.x.device, self.dtype, centroids.shape[0]) else None
        for start in range(0, len(rows), self.chunk):
            index = rows[start : start + self.chunk]
            values, labels = smallest_partials(self.x[index], c_t, c_sq, 1 + second, screen)
            dists = (values + self.x_sq[index, None]).clamp_min(0).sqrt()
            self.labels[index] = labels[:, 0]
            self.upper[index] = dists[:, 0]
            self.lower[index] = dists[:, second] if second else float("inf")

    def own_distance(self, rows: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
        """Exact distance of `rows` to their own centroid (a difference, no cancellation)."""
        out = torch.empty(len(rows), dtype=torch.float32, device=self.x.device)
        for start in range(0, len(rows), self.chunk):
            index = rows[start : start + self.chunk]
            out[start : start + len(index)] = (self.x[index] - centroids[self.labels[index]]).norm(dim=1)
        return out

    def move(self, drift: torch.Tensor) -> None:
        """Loosen the bounds after centroid j moved by drift[j]."""
        self.upper += drift[self.labels]
        if len(drift) > 1:
            top = torch.topk(drift, 2).values
            self.lower -= torch.where(self.labels == int(drift.argmax()), top[1], top[0])


def _cluster_sums(x: torch.Tensor, labels: torch.Tensor, k: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    sums = torch.zeros(k, x.shape[1], dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], chunk):
        sums.index_add_(0, labels[start : start + chunk], x[start : start + chunk].double())
    return sums, torch.bincount(labels, minlength=k)


def lloyd(
    x: torch.Tensor, centroids: torch.Tensor, max_iter: int, tol: float, chunk: int, dtype: torch.dtype = torch.float32
) -> LloydResult:
    """Bounded Lloyd iterations from `centroids` until the objective falls by ≤ `tol` (relative) or `max_iter`.

    An iteration re-assigns the frames (bounded) and moves every centroid to its cluster's mean;
    `dtype` is the input precision of the assignment matmuls (`matmul_dtype`).
    """
    k = centroids.shape[0]
    state = _Bounds(x, chunk, dtype)
    state.assign(torch.arange(x.shape[0], device=x.device), centroids)
    sums, counts = _cluster_sums(x, state.labels, k, chunk)
    total = float(state.x_sq.double().sum())
    previous = math.inf
    for iteration in range(1, max_iter + 1):
        reseeded = _reseed_empty(state, sums, counts, centroids)
        filled = counts.clamp_min(1)[:, None]
        updated = torch.where(counts[:, None] > 0, sums / filled, centroids.double()).to(centroids.dtype)
        objective = total - float(((sums * sums) / filled).sum())
        drift = (updated - centroids).norm(dim=1)
        centroids = updated
        if not reseeded and previous - objective <= tol * abs(objective):
            return LloydResult(centroids, objective, iteration, True)
        if iteration == max_iter:
            break
        previous = objective
        state.move(drift)
        moved = _reassign(state, centroids)
        if len(moved[0]) == 0:  # a fixed point: the next means would be these centroids
            return LloydResult(centroids, objective, iteration, True)
        _apply_moves(x, sums, counts, *moved)
    return LloydResult(centroids, objective, max_iter, False)


def _reassign(state: _Bounds, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Re-assign the frames whose bounds overlap; (rows that changed, old labels, new labels)."""
    rows = torch.nonzero(state.upper > state.lower).flatten()
    state.upper[rows] = state.own_distance(rows, centroids)
    rows = rows[state.upper[rows] > state.lower[rows]]
    old = state.labels[rows]
    state.assign(rows, centroids)
    changed = state.labels[rows] != old
    return rows[changed], old[changed], state.labels[rows[changed]]


def _apply_moves(x, sums, counts, rows, old, new) -> None:
    frames = x[rows].double()
    sums.index_add_(0, new, frames).index_add_(0, old, -frames)
    counts += torch.bincount(new, minlength=len(counts)) - torch.bincount(old, minlength=len(counts))


def _reseed_empty(state: _Bounds, sums: torch.Tensor, counts: torch.Tensor, centroids: torch.Tensor) -> bool:
    """Give each empty cluster one frame, farthest from its centroid first; True when any was empty.

    Donors are walked in farthest-first order with the counts updated after every move: a frame is
    taken only while its cluster still holds at least two frames and it does not sit on its centroid,
    so reseeding never empties another cluster. When no such frame is left for an empty cluster, the
    frames have fewer distinct points than k: a KMeansError.
    """
    empty = torch.nonzero(counts == 0).flatten()
    if len(empty) == 0:
        return False
    everyone = torch.arange(state.x.shape[0], device=state.x.device)
    state.upper = state.own_distance(everyone, centroids)
    order = torch.argsort(state.upper, descending=True, stable=True)
    order = order[state.upper[order] > 0].tolist()
    remaining, donors = counts.tolist(), []
    labels = state.labels[order].tolist() if order else []
    for row, label in zip(order, labels, strict=True):
        if len(donors) == len(empty):
            break
        if remaining[label] >= 2:
            remaining[label] -= 1
            donors.append(row)
    if len(donors) < len(empty):
        distinct = len(torch.unique(state.x, dim=0))
        raise KMeansError(
            f"the {state.x.shape[0]} frames being clustered hold only {distinct} distinct points, fewer than "
            f"k = {len(counts)}, so some clusters would stay empty; lower k or check the features (identical frames)"
        )
    donors = torch.tensor(donors, dtype=torch.long, device=state.x.device)
    _apply_moves(state.x, sums, counts, donors, state.labels[donors], empty)
    state.labels[donors] = empty
    state.upper[donors] = 0.0
    state.lower[donors] = -math.inf  # re-examined at the next assignment
    return True


def frame_mean(x: torch.Tensor, chunk: int) -> torch.Tensor:
    """Mean of the rows of `x`, summed in float64 chunk by chunk (float64)."""
    total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], chunk):
        total += x[start : start + chunk].double().sum(0)
    return total / x.shape[0]


_DEFAULTS = schema.defaults("kmeans")  # the one place a default is written: the config schema
_CHUNK = schema.defaults("runtime")["kmeans_chunk_frames"]


def fit_kmeans(
    frames: np.ndarray | torch.Tensor,
    k: int,
    *,
    seed: int = 0,
    max_iter: int = _DEFAULTS["max_iter"],
    tol: float = _DEFAULTS["tol"],
    n_init: int = _DEFAULTS["n_init"],
    init_frames: int = _DEFAULTS["init_frames"],
    chunk: int = _CHUNK,
    device: torch.device | str = "cpu",
    matmul_precision: str = "auto",
) -> KMeansResult:
    """Fit k centroids to `frames` (N, D).

    `n_init` greedy k-means++ seedings on one seeded subset of `init_frames` frames (at least k;
    all frames when there are fewer); the best (see the module docstring) is refined by bounded
    Lloyd on all frames. `matmul_precision`: input precision of the Lloyd matmuls (`matmul_dtype`).
    """
    x = torch.as_tensor(frames).to(device=device, dtype=torch.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise KMeansError(f"k-means needs a non-empty (frames, dims) array, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise KMeansError("the fit frames contain NaN or infinite values; the features are corrupt")
    if k > x.shape[0]:
        raise KMeansError(f"k = {k} is larger than the {x.shape[0]} frames to fit; lower k or fit on more frames")
    dtype = matmul_dtype(x.device, matmul_precision)
    offset = frame_mean(x, chunk).to(x.dtype)
    x = x - offset  # distances do not change; the ‖x‖² − 2x·c + ‖c‖² expansion loses less on centred frames
    generator = torch.Generator().manual_seed(seed)
    subset = x
    if x.shape[0] > max(init_frames, k):
        pick = torch.randperm(x.shape[0], generator=generator)[: max(init_frames, k)]
        subset = x[pick.to(x.device)]
    seeds = kmeans_plusplus(subset, k, generator)[0]
    if n_init > 1:  # rank the seedings by the subset objective after a few Lloyd iterations there
        seedings = [seeds] + [kmeans_plusplus(subset, k, generator)[0] for _ in range(n_init - 1)]
        seeds = min(seedings, key=lambda start: lloyd(subset, start, SELECTION_ITERATIONS, tol, chunk, dtype).objective)
    fit = lloyd(x, seeds, max_iter, tol, chunk, dtype)
    _, dists = nearest(x, fit.centroids, chunk)
    centroids = (fit.centroids.double() + offset.double()).float().cpu().numpy()
    return KMeansResult(centroids, float(dists.double().sum()), fit.iterations, fit.converged)


def usage_entropy(labels: np.ndarray, k: int) -> float:
    """Entropy (bits) of the cluster-usage distribution; log2(k) means every cluster is used equally."""
    counts = np.bincount(np.asarray(labels), minlength=k).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())
