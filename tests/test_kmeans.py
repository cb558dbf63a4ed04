"""Torch k-means: exact agreement with scikit-learn's assignment, inertia no worse than MiniBatchKMeans."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans, MiniBatchKMeans

import gmptl.kmeans
from gmptl.errors import KMeansError
from gmptl.kmeans import Screen, fit_kmeans, kmeans_plusplus, lloyd, nearest, smallest_partials, usage_entropy


def blobs(n=6000, d=16, centers=12, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centers, d)) * 4
    return (means[rng.integers(centers, size=n)] + rng.normal(size=(n, d))).astype(np.float32)


def test_assignment_equals_scikit_learn_predict_given_the_same_centroids():
    x = blobs()
    result = fit_kmeans(x, 12, seed=0)
    reference = KMeans(12, n_init=1).fit(x[:100])
    reference.cluster_centers_ = result.centroids.copy()
    labels, _ = nearest(torch.from_numpy(x), torch.from_numpy(result.centroids), chunk=1000)
    np.testing.assert_array_equal(labels.numpy(), reference.predict(x))


def test_inertia_is_no_worse_than_minibatch_kmeans_with_fairseq_settings():
    x = blobs(n=20000, d=32, centers=40, seed=1)
    ours = fit_kmeans(x, 32, seed=0, n_init=3)  # well-separated blobs, k < blobs: one seeding is a coin flip
    reference = MiniBatchKMeans(32, batch_size=10000, max_iter=100, n_init=20, random_state=0, max_no_improvement=100)
    reference.fit(x)
    assert ours.inertia <= -reference.score(x) * 1.0001


def test_inertia_is_the_sum_of_squared_distances():
    x = blobs(n=500)
    result = fit_kmeans(x, 5, seed=1)
    d = ((x[:, None, :] - result.centroids[None]) ** 2).sum(-1).min(1)
    assert result.inertia == pytest.approx(float(d.sum()), rel=1e-4)


def test_same_seed_same_centroids_and_chunking_does_not_matter():
    x = blobs(n=3000)
    a = fit_kmeans(x, 8, seed=5, chunk=256)
    b = fit_kmeans(x, 8, seed=5, chunk=4096)
    np.testing.assert_allclose(a.centroids, b.centroids, rtol=1e-5, atol=1e-5)
    assert not np.allclose(a.centroids, fit_kmeans(x, 8, seed=6).centroids)


def test_bounded_lloyd_reaches_the_same_fixed_point_as_plain_lloyd():
    x = blobs(n=4000, d=16, centers=30, seed=3)
    seeds, _ = kmeans_plusplus(torch.from_numpy(x), 24, torch.Generator().manual_seed(0))
    ours = lloyd(torch.from_numpy(x), seeds, max_iter=300, tol=0.0, chunk=500)
    reference = KMeans(24, init=seeds.numpy(), n_init=1, max_iter=300, tol=0.0, algorithm="lloyd").fit(x)
    assert ours.converged
    np.testing.assert_allclose(ours.centroids.numpy(), reference.cluster_centers_, rtol=1e-4, atol=1e-4)


def test_objective_is_the_sse_of_the_final_assignment():
    x = torch.from_numpy(blobs(n=3000, d=8, centers=10, seed=4))
    seeds, potential = kmeans_plusplus(x, 10, torch.Generator().manual_seed(1))
    result = lloyd(x, seeds, max_iter=200, tol=0.0, chunk=700)
    _, dists = nearest(x, result.centroids)
    assert result.objective == pytest.approx(float(dists.double().sum()), rel=1e-5)
    assert potential == pytest.approx(float(nearest(x, seeds)[1].double().sum()), rel=1e-4)


def test_a_looser_relative_tolerance_stops_earlier():
    x = torch.from_numpy(np.random.default_rng(5).normal(size=(6000, 8)).astype(np.float32))  # no clusters: slow
    seeds, _ = kmeans_plusplus(x, 40, torch.Generator().manual_seed(2))
    tight = lloyd(x, seeds, max_iter=200, tol=0.0, chunk=1000)
    loose = lloyd(x, seeds, max_iter=200, tol=1e-2, chunk=1000)
    assert loose.converged and loose.iterations < tight.iterations
    assert tight.objective <= loose.objective <= tight.objective * 1.05


def test_max_iter_bounds_the_iterations_and_reports_no_convergence():
    x = torch.from_numpy(np.random.default_rng(5).normal(size=(6000, 8)).astype(np.float32))
    seeds, _ = kmeans_plusplus(x, 40, torch.Generator().manual_seed(2))
    result = lloyd(x, seeds, max_iter=2, tol=0.0, chunk=1000)
    assert result.iterations == 2 and not result.converged


def test_same_seed_gives_bit_identical_centroids():
    x = blobs(n=5000, d=12, centers=30, seed=6)
    a = fit_kmeans(x, 25, seed=3, n_init=2, init_frames=1000)
    b = fit_kmeans(x, 25, seed=3, n_init=2, init_frames=1000)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    assert a.inertia == b.inertia and a.iterations == b.iterations


def test_seeding_on_a_subset_keeps_the_final_assignment_exact():
    x = blobs(n=8000, d=16, centers=40, seed=7)
    result = fit_kmeans(x, 30, seed=0, init_frames=500)  # seeds drawn from 500 frames only
    reference = KMeans(30, n_init=1).fit(x[:100])
    reference.cluster_centers_ = result.centroids.copy()
    labels, dists = nearest(torch.from_numpy(x), torch.from_numpy(result.centroids))
    np.testing.assert_array_equal(labels.numpy(), reference.predict(x))
    assert result.inertia == pytest.approx(float(dists.double().sum()), rel=1e-6)


def test_every_cluster_is_used_even_with_duplicate_points():
    x = np.concatenate([np.zeros((500, 4)), blobs(n=100, d=4)]).astype(np.float32)
    result = fit_kmeans(x, 20, seed=0)
    labels, _ = nearest(torch.from_numpy(x), torch.from_numpy(result.centroids))
    assert len(np.unique(result.centroids, axis=0)) == 20
    assert 0 < usage_entropy(labels.numpy(), 20) <= np.log2(20)


def test_k_larger_than_frames_is_a_clear_error():
    with pytest.raises(KMeansError, match="k = 50 is larger than the 10 frames"):
        fit_kmeans(blobs(n=10), 50)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_frames_are_a_clear_error(bad):
    x = blobs(n=100)
    x[3, 2] = bad
    with pytest.raises(KMeansError, match="^the fit frames contain NaN or infinite values; the features are corrupt$"):
        fit_kmeans(x, 4)


def test_empty_input_is_a_clear_error():
    with pytest.raises(KMeansError, match="non-empty"):
        fit_kmeans(np.zeros((0, 4), np.float32), 2)


def test_usage_entropy_bounds():
    assert usage_entropy(np.arange(8), 8) == pytest.approx(3.0)
    assert usage_entropy(np.zeros(8, int), 8) == pytest.approx(0.0)


def float64_lloyd(x: np.ndarray, centroids: np.ndarray, max_iter: int) -> np.ndarray:
    """Plain Lloyd in float64 (exact differences, no expansion) until the labels stop changing; the labels."""
    labels = None
    for _ in range(max_iter):
        new = np.stack([((x - c) ** 2).sum(1) for c in centroids], axis=1).argmin(1)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        centroids = np.stack(
            [x[labels == j].mean(0) if (labels == j).any() else centroids[j] for j in range(len(centroids))]
        )
    return labels


def record_seeds(monkeypatch) -> list:
    """Make fit_kmeans's seeding also report which rows of its input it picked."""
    picked, seeding = [], gmptl.kmeans.kmeans_plusplus

    def recording(x, k, generator):
        seeds, potential = seeding(x, k, generator)
        picked.append([int(np.flatnonzero((x == row).all(1).cpu().numpy())[0]) for row in seeds])
        return seeds, potential

    monkeypatch.setattr(gmptl.kmeans, "kmeans_plusplus", recording)
    return picked


@pytest.fixture(params=["screened", "plain"])
def screen(request, monkeypatch) -> bool:
    """Run a test with the bfloat16 screen of float32 assignments on (whatever this CPU is) and off."""
    on = request.param == "screened"
    monkeypatch.setattr(gmptl.kmeans, "_cpu_has_bf16_dot", lambda: on)
    monkeypatch.setattr(gmptl.kmeans, "SCREEN_MIN_K", 64)  # the tests' small k go through the screen too
    return on


@pytest.mark.parametrize("d, k", [(64, 16), (768, 64), (96, 80)])
def test_frames_with_a_large_offset_follow_float64_lloyd_from_the_same_seeds(monkeypatch, screen, d, k):
    rng = np.random.default_rng(11)
    x = (rng.normal(size=(3000, d)) + 1000.0).astype(np.float32)  # fewer than init_frames: seeded on all frames
    picked = record_seeds(monkeypatch)
    result = fit_kmeans(x, k, seed=0, max_iter=300, tol=0.0)
    ours, _ = nearest(torch.from_numpy(x), torch.from_numpy(result.centroids))  # on the uncentred frames
    reference = float64_lloyd(x.astype(np.float64), x[picked[0]].astype(np.float64), max_iter=300)
    assert result.converged
    np.testing.assert_array_equal(ours.numpy(), reference)
    exact = ((x.astype(np.float64) - result.centroids.astype(np.float64)[reference]) ** 2).sum()
    assert result.inertia == pytest.approx(exact, rel=1e-5)  # the SSE of the original frames


def on_a_line(values) -> torch.Tensor:
    return torch.tensor([[float(v), 0.0] for v in values])


def test_four_frames_and_three_duplicated_seeds_end_with_four_used_clusters():
    x = on_a_line([-1, 1, 9, 10])
    result = lloyd(x, on_a_line([0, 0, 0, 9.5]), max_iter=50, tol=0.0, chunk=2)  # counts [2, 0, 0, 2]
    labels, dists = nearest(x, result.centroids)
    assert result.converged
    np.testing.assert_array_equal(np.bincount(labels.numpy(), minlength=4), [1, 1, 1, 1])
    assert float(dists.sum()) == 0.0


def test_reseeding_several_empty_clusters_at_once_empties_no_other_cluster():
    pairs = [centre + side for centre in range(0, 1000, 100) for side in (-1, 1)]  # ten 2-frame clusters
    x = on_a_line(pairs + [5000 + 0.1 * i for i in range(5)])
    seeds = on_a_line(list(range(0, 1000, 100)) + [10**5 + 100 * i for i in range(10)] + [5000.2])  # ten empty
    result = lloyd(x, seeds, max_iter=50, tol=0.0, chunk=4)
    labels, _ = nearest(x, result.centroids)
    assert result.converged
    assert np.bincount(labels.numpy(), minlength=21).min() >= 1


def test_fewer_distinct_frames_than_k_is_a_clear_error():
    x = np.repeat(blobs(n=5, d=3), 4, axis=0)  # 20 frames, 5 distinct
    with pytest.raises(KMeansError, match="only 5 distinct points, fewer than k = 8"):
        fit_kmeans(x, 8)


def float64_smallest(block: torch.Tensor, centroids: torch.Tensor, count: int) -> np.ndarray:
    d = ((block.double()[:, None, :] - centroids.double()[None]) ** 2).sum(-1)
    return np.argsort(d.numpy(), axis=1, kind="stable")[:, :count]


@pytest.mark.parametrize("offset", [0.0, 30.0, 300.0])
def test_screened_nearest_and_second_nearest_are_float32s(offset):
    """bfloat16 ranks the centroids; float32 decides. Far from the origin bfloat16 cannot tell the centroids
    apart, so the error bound must send those rows to the full float32 matmul (a weaker bound fails here).
    At 300 the float32 expansion itself is off float64's ranking: the screen matches float32, not better."""
    x = torch.from_numpy(blobs(n=2000, d=48, centers=100, seed=4)) + offset
    centroids = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:96]] + 0.25
    c_sq = (centroids * centroids).sum(1)
    values, indices = smallest_partials(x, centroids.T.contiguous(), c_sq, 2, Screen.of(centroids, c_sq))
    plain = torch.topk(torch.addmm(c_sq[None], x, centroids.T, alpha=-2.0), 2, dim=1, largest=False)
    np.testing.assert_array_equal(indices.numpy(), plain.indices.numpy())
    np.testing.assert_allclose(values.numpy(), plain.values.numpy(), rtol=1e-5, atol=1e-3 * (1 + offset**2))
    if offset < 100:
        np.testing.assert_array_equal(indices.numpy(), float64_smallest(x, centroids, 2))


def test_rows_the_screen_cannot_decide_get_the_full_float32_matmul():
    x = torch.from_numpy(blobs(n=300, d=16, centers=70, seed=5))
    centroids = x[:20].repeat(5, 1)  # every centroid five times: more exact ties than the screen computes
    c_sq = (centroids * centroids).sum(1)
    values, indices = smallest_partials(x, centroids.T.contiguous(), c_sq, 2, Screen.of(centroids, c_sq))
    plain = smallest_partials(x, centroids.T.contiguous(), c_sq, 2)
    np.testing.assert_array_equal(centroids[indices].numpy(), centroids[plain[1]].numpy())  # the same points
    np.testing.assert_allclose(values.numpy(), plain[0].numpy(), rtol=1e-5, atol=1e-4)
    nearest_point = x[:20][float64_smallest(x, x[:20], 1)[:, 0]]
    np.testing.assert_array_equal(centroids[indices[:, 0]].numpy(), nearest_point.numpy())


@pytest.mark.parametrize("offset", [0.0, 500.0])
def test_screened_seeding_picks_the_same_seeds_as_float32_seeding(monkeypatch, offset):
    x = torch.from_numpy(blobs(n=3000, d=32, centers=90, seed=6)) + offset
    monkeypatch.setattr(gmptl.kmeans, "SCREEN_MIN_K", 64)
    runs = {}
    for on in (True, False):
        monkeypatch.setattr(gmptl.kmeans, "_cpu_has_bf16_dot", lambda on=on: on)
        runs[on] = kmeans_plusplus(x, 80, torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(runs[True][0].numpy(), runs[False][0].numpy())
    assert runs[True][1] == pytest.approx(runs[False][1], rel=1e-6)


# --- precision switches, defaults and the frame mean ------------------------------------------------


@pytest.mark.parametrize(
    ("device", "precision", "has_out_dtype", "expected"),
    [
        ("cpu", "auto", True, torch.float32),
        ("cpu", "fp32", True, torch.float32),
        ("cpu", "bf16", False, torch.bfloat16),  # held on every device
        ("cuda", "auto", True, torch.bfloat16),
        ("cuda", "auto", False, torch.float32),  # torch < 2.8 cannot accumulate a bf16 mm in float32
        ("cuda", "bf16", True, torch.bfloat16),
        ("cuda", "bf16", False, torch.float32),
        ("cuda", "fp32", True, torch.float32),
    ],
)
def test_matmul_precision_per_device(monkeypatch, device, precision, has_out_dtype, expected):
    from gmptl.kmeans import matmul_dtype

    monkeypatch.setattr(gmptl.kmeans, "_mm_has_out_dtype", lambda: has_out_dtype)
    assert matmul_dtype(torch.device(device), precision) == expected
    if precision == "auto":
        assert matmul_dtype(torch.device(device)) == expected  # auto is the default


def test_an_unknown_matmul_precision_is_named():
    from gmptl.kmeans import matmul_dtype

    with pytest.raises(KMeansError) as error:
        matmul_dtype(torch.device("cpu"), "fp16")
    assert str(error.value) == "k-means matmul precision 'fp16' is not one of auto, bf16, fp32"


def test_fit_kmeans_defaults_are_the_schema_defaults():
    from gmptl.schema import defaults

    x = np.random.default_rng(2).normal(size=(400, 8)).astype(np.float32)  # no clusters: Lloyd takes a while
    settings = defaults("kmeans")
    explicit = fit_kmeans(
        x,
        6,
        seed=0,
        max_iter=settings["max_iter"],
        tol=settings["tol"],
        n_init=settings["n_init"],
        init_frames=settings["init_frames"],
    )
    default = fit_kmeans(x, 6)
    np.testing.assert_array_equal(default.centroids, explicit.centroids)
    assert default.iterations == explicit.iterations > 1
    assert not np.array_equal(fit_kmeans(x, 6, seed=1).centroids, default.centroids)


def test_float64_frames_give_float32_centroids_of_the_same_fit():
    x = blobs(n=300, d=8, centers=5, seed=3)
    single = fit_kmeans(x.astype(np.float32), 5, seed=0)
    double = fit_kmeans(x.astype(np.float64), 5, seed=0)
    assert double.centroids.dtype == np.float32
    np.testing.assert_array_equal(double.centroids, single.centroids)


def test_frame_mean_sums_every_chunk_in_float64():
    from gmptl.kmeans import frame_mean

    x = torch.from_numpy(blobs(n=10, d=3, centers=2, seed=0) + 1e4)
    for chunk in (1, 3, 10, 64):
        mean = frame_mean(x, chunk)
        assert mean.dtype == torch.float64
        torch.testing.assert_close(mean, x.double().mean(0), rtol=0, atol=1e-9)


# Frames and centroids whose every component bfloat16 rounds the same way (down, by almost its unit roundoff
# 2⁻⁸): the worst case the screen's error bound must cover. Centroids are constant vectors near 2⁻⁶.
COHERENT_X = 1 + 2**-8 * 0.999
COHERENT_C = 2**-6 * (1 + 2**-8 * 0.999)
DECOYS = [
    3.155497123775768e-05,
    0.00010151086813765185,
    1.6460289035616908e-05,
    7.856280891033651e-05,
    3.390303044075858e-05,
]


def test_the_screen_error_bound_covers_inputs_that_all_round_the_same_way():
    x, c = torch.full((1, 64), COHERENT_X), torch.full((1, 64), COHERENT_C)
    c_sq = (c * c).sum(1)
    approx = torch.mm(torch.cat([x, torch.ones(1, 1)], 1).to(torch.bfloat16), Screen.of(c, c_sq).augmented).float()
    exact = c_sq - 2.0 * (x * c).sum(1)
    scale = 2.0 * x.norm() * c.norm() + c_sq
    assert float((approx[0] - exact).abs() / scale) <= gmptl.kmeans.SCREEN_ERROR  # 0.0076 here: above 3 × 2⁻⁹


def test_the_screen_never_keeps_a_farther_centroid_on_coherently_rounded_inputs():
    values = torch.tensor([COHERENT_C] + [COHERENT_C - d for d in DECOYS], dtype=torch.float64)
    centroids = (values[:, None] * torch.ones(len(values), 64, dtype=torch.float64)).float()
    x = torch.full((3, 64), COHERENT_X)
    c_sq = (centroids * centroids).sum(1)
    _, screened_index = smallest_partials(x, centroids.T.contiguous(), c_sq, 1, Screen.of(centroids, c_sq))
    plain = torch.addmm(c_sq[None], x, centroids.T, alpha=-2.0)
    assert (plain.gather(1, screened_index)[:, 0] == plain.min(1).values).all()  # the nearest, as float32 says


@pytest.mark.parametrize("k", [2, 6])
def test_bounded_lloyd_follows_plain_lloyd_from_many_starts(k):
    """Hamerly's bounds may skip a frame only when no centroid can have come nearer: from 40 random starts on
    uneven 2-d clusters (centroids travel far, at different speeds), the labels are plain float64 Lloyd's."""
    for seed in range(40):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(300, 2))
        x[:100] += 4 * rng.normal(size=2)
        start = x[rng.choice(300, k, replace=False)]
        result = lloyd(torch.from_numpy(x).float(), torch.from_numpy(start).float(), 200, 0.0, 64)
        labels = nearest(torch.from_numpy(x).float(), result.centroids)[0].numpy()
        np.testing.assert_array_equal(labels, float64_lloyd(x, start, 200), err_msg=f"start {seed}")


@pytest.mark.parametrize("k", [1, 2])
def test_one_or_two_clusters(k):
    x = blobs(n=200, d=4, centers=2, seed=1)
    result = fit_kmeans(x, k, seed=0)
    labels = nearest(torch.from_numpy(x), torch.from_numpy(result.centroids))[0].numpy()
    for j in range(k):
        np.testing.assert_allclose(result.centroids[j], x[labels == j].mean(0), rtol=1e-5, atol=1e-5)
    if k == 1:
        np.testing.assert_allclose(result.centroids[0], x.mean(0), rtol=1e-5, atol=1e-5)


def test_seeding_is_scale_invariant_and_can_pick_every_frame():
    x = torch.from_numpy(blobs(n=300, d=8, centers=5, seed=5))
    seeds = kmeans_plusplus(x, 10, torch.Generator().manual_seed(1))[0]
    small = kmeans_plusplus(x * 0.01, 10, torch.Generator().manual_seed(1))[0]  # distances far below 1
    torch.testing.assert_close(small, seeds * 0.01)
    few = torch.from_numpy(blobs(n=5, d=3, centers=5, seed=1))
    for seed in range(5):  # k = n: every frame is a seed once, the last row included
        picked = kmeans_plusplus(few, 5, torch.Generator().manual_seed(seed))[0]
        assert sorted(map(tuple, picked.tolist())) == sorted(map(tuple, few.tolist()))


def test_as_many_clusters_as_frames_and_a_seeding_subset():
    x = blobs(n=300, d=8, centers=6, seed=7)
    every = fit_kmeans(x[:12], 12, seed=0)
    np.testing.assert_allclose(np.sort(every.centroids, axis=0), np.sort(x[:12], axis=0), rtol=1e-5, atol=1e-5)
    assert every.inertia < 1e-3  # every frame is its own centroid (float32 rounding of the centring aside)
    subset = fit_kmeans(x, 6, seed=0, init_frames=100)  # 300 frames > 100: seeded on a subset of 100
    assert not np.array_equal(subset.centroids, fit_kmeans(x, 6, seed=0, init_frames=1000).centroids)


def test_bf16_matmul_precision_is_used_when_asked_on_the_cpu():
    x = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    fp32, bf16 = (fit_kmeans(x, 6, matmul_precision=p) for p in ("fp32", "bf16"))
    assert not np.array_equal(fp32.centroids, bf16.centroids)
    assert bf16.inertia == pytest.approx(fp32.inertia, rel=0.05)


@pytest.mark.parametrize("steps", [1, 2])
def test_lloyd_stopped_by_max_iter_returns_its_last_means(steps):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 3))
    start = x[:5].copy()
    result = lloyd(torch.from_numpy(x).float(), torch.from_numpy(start).float(), steps, 0.0, 64)
    centroids, labels = start, None
    for _ in range(steps):  # plain Lloyd by hand, float64
        labels = np.stack([((x - c) ** 2).sum(1) for c in centroids], axis=1).argmin(1)
        centroids = np.stack([x[labels == j].mean(0) for j in range(5)])
    assert (result.iterations, result.converged) == (steps, False)
    np.testing.assert_allclose(result.centroids.numpy(), centroids, rtol=1e-5, atol=1e-5)
    assert result.objective == pytest.approx(((x - centroids[labels]) ** 2).sum(), rel=1e-5)
