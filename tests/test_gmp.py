"""GMP labels: fitted on training frames only, aligned with the features, stored with provenance."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_wav

from gmptl.backbone import SpeechEncoder, load_backbone
from gmptl.errors import FeatureError, KMeansError
from gmptl.features import extract_features
from gmptl.frames import Alignment, layer_dataset, open_h5, read_alignment
from gmptl.gmp import assign_all, fit_gmp_labels, read_gmp_labels, read_rows, sample_fit_frames
from gmptl.kmeans import nearest
from gmptl.settings import KMeansSettings

SETTINGS = KMeansSettings(fit_fraction=1.0, max_fit_frames=100000, n_init=2, init_frames=5000, max_iter=50, tol=1e-4)


def make_features(tmp_path, backbone, test_seed=100, name="features.h5"):
    rows = []
    for i in range(9):
        split = "test" if i >= 6 else ("valid" if i == 5 else "train")
        path = tmp_path / f"{split}{i}_{test_seed if split == 'test' else 0}.wav"
        write_wav(path, 0.6 + 0.1 * i, seed=(test_seed + i) if split == "test" else i)
        rows.append(
            {"utt_id": f"Ses0{1 if split != 'test' else 2}F_impro01_F{i:03d}", "path": str(path), "split": split}
        )
    out = tmp_path / name
    extract_features(
        SpeechEncoder(load_backbone(backbone), False),
        pd.DataFrame(rows),
        [1, 2],
        out,
        sample_rate=16000,
        on_format_mismatch="error",
        batch_seconds=3,
        device=torch.device("cpu"),
        attrs={"fold": 2},
    )
    return out


def test_labels_cover_every_frame_and_match_the_centroids(tmp_path, tiny_backbone):
    features = make_features(tmp_path, tiny_backbone)
    out = tmp_path / "layer2_k8.h5"
    summary = fit_gmp_labels(features, 2, 8, out, settings=SETTINGS, seed=0, device=torch.device("cpu"))
    alignment, labels, attrs = read_gmp_labels(out)
    with open_h5(features) as handle:
        source = read_alignment(handle)
        frames = layer_dataset(handle, 2)[:].astype(np.float32)
    for field in ("utt_ids", "split", "offsets", "lengths"):
        assert list(getattr(alignment, field)) == list(getattr(source, field))
    assert labels.shape == (source.total_frames,) and labels.dtype == np.int32
    with h5py.File(out) as handle:
        centroids = handle["centroids"][:]
    assert centroids.shape == (8, 32)
    np.testing.assert_array_equal(labels, nearest(torch.from_numpy(frames), torch.from_numpy(centroids))[0].numpy())
    for key in ("inertia", "iterations", "usage_entropy_bits", "seed", "k", "layer", "fold", "n_fit_frames"):
        assert key in attrs
    train_frames = int(source.lengths[source.split == "train"].sum())
    assert attrs["n_fit_frames"] == train_frames == summary["n_fit_frames"]


def test_centroids_do_not_change_when_the_test_session_audio_is_replaced(tmp_path, tiny_backbone):
    a = make_features(tmp_path / "a", tiny_backbone, test_seed=100)
    b = make_features(tmp_path / "b", tiny_backbone, test_seed=555)
    with open_h5(a) as ha, open_h5(b) as hb:
        assert not np.allclose(ha["layer_1"][-50:], hb["layer_1"][-50:])  # the test frames did change
    for path in (a, b):
        fit_gmp_labels(path, 1, 6, path.with_name("labels.h5"), settings=SETTINGS, seed=3, device=torch.device("cpu"))
    with h5py.File(a.with_name("labels.h5")) as la, h5py.File(b.with_name("labels.h5")) as lb:
        np.testing.assert_array_equal(la["centroids"][:], lb["centroids"][:])


def test_k_larger_than_training_frames_names_the_file(tmp_path, tiny_backbone):
    features = make_features(tmp_path, tiny_backbone)
    with pytest.raises(KMeansError, match=r"k = 100000 is larger than the \d+ training frames of '.*features.h5'"):
        fit_gmp_labels(features, 1, 100000, tmp_path / "x.h5", settings=SETTINGS, seed=0, device=torch.device("cpu"))
    assert not (tmp_path / "x.h5").exists()


def test_nan_features_are_rejected(tmp_path, tiny_backbone):
    features = make_features(tmp_path, tiny_backbone)
    with h5py.File(features, "r+") as handle:
        handle["layer_1"][3] = np.nan
    with pytest.raises(KMeansError, match="NaN/inf"):
        fit_gmp_labels(features, 1, 4, tmp_path / "x.h5", settings=SETTINGS, seed=0, device=torch.device("cpu"))


def test_missing_layer_is_a_clear_error(tmp_path, tiny_backbone):
    features = make_features(tmp_path, tiny_backbone)
    with pytest.raises(FeatureError, match="has no layer 7"):
        fit_gmp_labels(features, 7, 4, tmp_path / "x.h5", settings=SETTINGS, seed=0, device=torch.device("cpu"))


def test_the_written_centroids_are_k_means_of_the_training_frames(tmp_path, tiny_backbone):
    """Each centroid is the mean of the training frames labelled with it (a Lloyd fixed point), and the fit is as
    good as scikit-learn's k-means on the same frames: random or unrefined centroids fail both."""
    from sklearn.cluster import KMeans

    features = make_features(tmp_path, tiny_backbone)
    out = tmp_path / "layer1_k6.h5"
    fit_gmp_labels(features, 1, 6, out, settings=SETTINGS, seed=0, device=torch.device("cpu"))
    alignment, labels, attrs = read_gmp_labels(out)
    with open_h5(features) as handle:
        frames = layer_dataset(handle, 1)[:].astype(np.float64)
    with h5py.File(out) as handle:
        centroids = handle["centroids"][:].astype(np.float64)
    train = np.concatenate(
        [np.arange(o, o + n) for o, n, s in zip(alignment.offsets, alignment.lengths, alignment.split, strict=True)
         if s == "train"]
    )  # fmt: skip
    x, assigned = frames[train], labels[train]
    assert set(assigned) == set(range(6))  # every cluster used
    means = np.stack([x[assigned == j].mean(0) for j in range(6)])
    np.testing.assert_allclose(centroids, means, atol=1e-3 * x.std())
    sse = ((x - centroids[assigned]) ** 2).sum()
    assert sse == pytest.approx(attrs["inertia"], rel=1e-4)
    reference = KMeans(6, n_init=10, random_state=0).fit(x).inertia_
    assert sse <= 1.02 * reference


# --- the fit frames, block reads and the label file, on hand-written feature files ------------------


def feature_file(path, lengths, splits, dim=4, seed=0, attrs=None, named=True):
    """A feature file whose frame i carries i in channel 0 when `named` (so a read frame names itself)."""
    alignment = Alignment.from_lengths([f"u{i}" for i in range(len(lengths))], splits, lengths)
    frames = np.random.default_rng(seed).normal(size=(alignment.total_frames, dim)).astype(np.float32)
    if named:
        frames[:, 0] = np.arange(alignment.total_frames)
    with h5py.File(path, "w") as handle:
        alignment.write(handle)
        handle.create_dataset("layer_1", data=frames)
        handle.attrs.update(attrs or {})
    return alignment, frames


def train_frames(alignment):
    return alignment.frame_indices(np.flatnonzero(alignment.split == "train"))


def test_fit_frames_are_the_training_frames_in_order(tmp_path):
    alignment, frames = feature_file(tmp_path / "f.h5", [3, 2, 4, 1], ["train", "test", "train", "valid"])
    with h5py.File(tmp_path / "f.h5") as handle:
        fit = sample_fit_frames(handle["layer_1"], alignment, 1.0, 1000, seed=0)
    assert fit.dtype == np.float32
    np.testing.assert_array_equal(fit, frames[[0, 1, 2, 5, 6, 7, 8]])


def test_a_fraction_of_training_utterances_is_drawn_whole_and_seeded(tmp_path):
    lengths = [2, 3, 1, 4, 2, 3, 2, 1, 2, 3]
    alignment, frames = feature_file(tmp_path / "f.h5", lengths, ["train"] * 10)
    with h5py.File(tmp_path / "f.h5") as handle:
        draw = {seed: sample_fit_frames(handle["layer_1"], alignment, 0.5, 1000, seed)[:, 0] for seed in (0, 0, 1)}
        one = sample_fit_frames(handle["layer_1"], alignment, 0.01, 1000, seed=3)[:, 0]  # rounds to 0: one utterance
    utterance = np.repeat(np.arange(10), lengths)
    for seed in (0, 1):
        chosen = sorted(set(utterance[draw[seed].astype(int)]))
        assert len(chosen) == 5  # round(0.5 × 10) utterances, each with all of its frames
        np.testing.assert_array_equal(draw[seed], alignment.frame_indices(np.array(chosen)))
    rng = np.random.default_rng(0)  # the documented draw: utterances first, with the fold's seed
    expected = np.sort(rng.choice(np.arange(10), size=5, replace=False))
    np.testing.assert_array_equal(draw[0], alignment.frame_indices(expected))
    assert not np.array_equal(draw[0], draw[1])
    assert len(set(utterance[one.astype(int)])) == 1


def test_at_most_max_frames_are_drawn_without_repeats(tmp_path):
    alignment, frames = feature_file(tmp_path / "f.h5", [40, 30, 30, 5], ["train", "train", "train", "test"])
    with h5py.File(tmp_path / "f.h5") as handle:
        fit = sample_fit_frames(handle["layer_1"], alignment, 1.0, 90, seed=4)[:, 0]
        every = sample_fit_frames(handle["layer_1"], alignment, 1.0, 100, seed=4)[:, 0]
    assert len(fit) == 90 and len(set(fit)) == 90 and np.all(np.diff(fit) > 0) and fit.max() < 100
    expected = np.sort(np.random.default_rng(4).choice(np.arange(100), size=90, replace=False))
    np.testing.assert_array_equal(fit, expected)  # fraction 1 draws no utterances: the frames use the seed first
    np.testing.assert_array_equal(every, np.arange(100))


def test_one_training_utterance_is_enough_and_none_is_an_error(tmp_path):
    alignment, frames = feature_file(tmp_path / "f.h5", [3, 2], ["train", "test"])
    with h5py.File(tmp_path / "f.h5") as handle:
        np.testing.assert_array_equal(sample_fit_frames(handle["layer_1"], alignment, 1.0, 10, 0), frames[:3])
    alignment, _ = feature_file(tmp_path / "g.h5", [3, 2], ["valid", "test"])
    with h5py.File(tmp_path / "g.h5") as handle, pytest.raises(KMeansError) as error:
        sample_fit_frames(handle["layer_1"], alignment, 1.0, 10, 0)
    assert str(error.value) == f"feature file '{tmp_path / 'g.h5'}' has no training utterances to fit k-means on"


def test_rows_are_read_in_blocks_as_float32(tmp_path):
    _, frames = feature_file(tmp_path / "f.h5", [20], ["train"])
    index = np.array([3, 4, 9, 10, 11, 17, 19])
    with h5py.File(tmp_path / "f.h5") as handle:
        for block in (2, 3, 65536):
            rows = read_rows(handle["layer_1"], index, block=block)
            assert rows.dtype == np.float32
            np.testing.assert_array_equal(rows, frames[index])


def test_every_frame_is_labelled_in_blocks(tmp_path):
    _, frames = feature_file(tmp_path / "f.h5", [6, 4], ["train", "test"])
    centroids = torch.from_numpy(frames[[0, 5, 9]].copy())
    expected = nearest(torch.from_numpy(frames), centroids)[0].numpy()
    with h5py.File(tmp_path / "f.h5") as handle:
        for block in (3, 262144):
            labels = assign_all(handle["layer_1"], centroids, torch.device("cpu"), block=block)
            assert labels.dtype == np.int32
            np.testing.assert_array_equal(labels, expected)
    with h5py.File(tmp_path / "f.h5", "a") as handle:
        handle["layer_1"][7, 2] = np.nan
    with h5py.File(tmp_path / "f.h5") as handle, pytest.raises(FeatureError) as error:
        assign_all(handle["layer_1"], centroids, torch.device("cpu"), block=3)
    assert str(error.value) == f"feature file '{tmp_path / 'f.h5'}' holds NaN/inf frames in /layer_1"


def test_the_label_file_is_k_means_of_the_settings_with_the_features_provenance(tmp_path, caplog):
    from gmptl.kmeans import fit_kmeans, usage_entropy

    caplog.set_level("INFO")
    provenance = {"backbone": "tiny", "fold": 3, "frame_rate": 49.8, "code_version": "abc", "other": 1}
    alignment, frames = feature_file(
        tmp_path / "f.h5",
        [30, 20, 25, 10],
        ["train", "train", "valid", "train"],
        dim=6,
        seed=1,
        attrs=provenance,
        named=False,
    )  # with these frames n_init 4 and 1, and tol 0.01 and 1e-5, give other fits
    settings = KMeansSettings(fit_fraction=1.0, max_fit_frames=100, n_init=4, init_frames=40, max_iter=20, tol=0.01)
    summary = fit_gmp_labels(
        tmp_path / "f.h5", 1, 5, tmp_path / "l.h5", settings=settings, seed=7, device=torch.device("cpu")
    )
    fit = frames[train_frames(alignment)]
    direct = fit_kmeans(fit, 5, seed=7, max_iter=20, tol=0.01, n_init=4, init_frames=40)
    _, labels, attrs = read_gmp_labels(tmp_path / "l.h5")
    with h5py.File(tmp_path / "l.h5") as handle:
        np.testing.assert_array_equal(handle["centroids"][:], direct.centroids)
    assert set(summary) == {
        "layer",
        "k",
        "seed",
        "inertia",
        "iterations",
        "converged",
        "n_fit_frames",
        "usage_entropy_bits",
        "max_entropy_bits",
    }
    assert (summary["layer"], summary["k"], summary["seed"], summary["n_fit_frames"]) == (1, 5, 7, 60)
    assert summary["iterations"] == direct.iterations and summary["converged"] == direct.converged
    assert summary["inertia"] == pytest.approx(direct.inertia)
    assert summary["usage_entropy_bits"] == pytest.approx(usage_entropy(labels, 5))
    assert summary["max_entropy_bits"] == pytest.approx(np.log2(5))
    for key in ("backbone", "fold", "frame_rate", "code_version"):
        assert attrs[key] == provenance[key], key
    assert "other" not in attrs and attrs["k"] == 5
    shown = {key: summary[key] for key in ("inertia", "iterations", "usage_entropy_bits")}
    assert caplog.messages[-1] == f"layer 1 k 5: {shown}"


def test_k_may_equal_the_fit_frames_but_not_exceed_them(tmp_path):
    feature_file(tmp_path / "f.h5", [4, 3], ["train", "test"], dim=3)
    settings = KMeansSettings(fit_fraction=1.0, max_fit_frames=100, n_init=1, init_frames=10, max_iter=5, tol=0.0)
    fit_gmp_labels(tmp_path / "f.h5", 1, 4, tmp_path / "l.h5", settings=settings, seed=0, device=torch.device("cpu"))
    with pytest.raises(KMeansError) as error:
        fit_gmp_labels(
            tmp_path / "f.h5", 1, 5, tmp_path / "m.h5", settings=settings, seed=0, device=torch.device("cpu")
        )
    assert str(error.value) == (
        f"k = 5 is larger than the 4 training frames of '{tmp_path / 'f.h5'}' (layer 1); "
        "lower gmp.k or raise kmeans.max_fit_frames / kmeans.fit_fraction"
    )
    assert not (tmp_path / "m.h5").exists()


def test_a_label_file_without_its_labels_or_of_the_wrong_length_is_named(tmp_path):
    alignment, _ = feature_file(tmp_path / "f.h5", [4, 3], ["train", "test"])
    with h5py.File(tmp_path / "l.h5", "w") as handle:
        alignment.write(handle)
        handle.create_dataset("labels", data=np.zeros(7, np.int32))
    with pytest.raises(FeatureError, match=r"lacks dataset\(s\) \['centroids'\]"):
        read_gmp_labels(tmp_path / "l.h5")
    with h5py.File(tmp_path / "l.h5", "a") as handle:
        handle.create_dataset("centroids", data=np.zeros((2, 4), np.float32))
        del handle["labels"]
        handle.create_dataset("labels", data=np.zeros(6, np.int32))
    with pytest.raises(FeatureError) as error:
        read_gmp_labels(tmp_path / "l.h5")
    assert str(error.value) == f"label file '{tmp_path / 'l.h5'}' has 6 labels for 7 frames"


def test_a_fraction_of_the_fit_utterances_is_drawn_with_the_folds_seed(tmp_path):
    feature_file(tmp_path / "f.h5", [5] * 20, ["train"] * 20, dim=3, named=False)
    settings = KMeansSettings(fit_fraction=0.5, max_fit_frames=1000, n_init=1, init_frames=100, max_iter=10, tol=0.0)
    fits = [
        fit_gmp_labels(tmp_path / "f.h5", 1, 4, tmp_path / f"l{i}.h5", settings=settings, seed=3, device="cpu")
        for i in range(2)
    ]
    assert fits[0]["n_fit_frames"] == 50
    with h5py.File(tmp_path / "l0.h5") as one, h5py.File(tmp_path / "l1.h5") as two:
        np.testing.assert_array_equal(one["centroids"][:], two["centroids"][:])
