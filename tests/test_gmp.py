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
from gmptl.frames import layer_dataset, open_h5, read_alignment
from gmptl.gmp import fit_gmp_labels, read_gmp_labels
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
