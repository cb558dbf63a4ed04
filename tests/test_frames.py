"""The alignment of frame files (which frames are whose) and their errors, on real HDF5 files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from gmptl.errors import FeatureError
from gmptl.frames import Alignment, layer_dataset, open_h5, read_alignment


def test_alignment_from_lengths_numbers_frames_utterance_after_utterance():
    alignment = Alignment.from_lengths(["a", "b", "c"], ["train", "valid", "test"], np.array([3, 0, 2], np.int32))
    assert alignment.offsets.tolist() == [0, 3, 3] and alignment.offsets.dtype == np.int64
    assert alignment.lengths.tolist() == [3, 0, 2] and alignment.lengths.dtype == np.int64  # not int32
    assert alignment.total_frames == 5
    assert alignment.frame_indices(np.array([2, 0])).tolist() == [3, 4, 0, 1, 2]
    assert alignment.frame_indices(np.array([0])).tolist() == [0, 1, 2]
    assert alignment.frame_indices(np.array([1])).tolist() == []
    none = alignment.frame_indices(np.array([], dtype=np.int64))
    assert none.shape == (0,) and none.dtype == np.int64  # an index array, usable to select no frame


def write(path, alignment, **datasets):
    with h5py.File(path, "w") as handle:
        alignment.write(handle)
        for name, data in datasets.items():
            handle.create_dataset(name, data=data)


def test_alignment_round_trips_through_a_file(tmp_path):
    alignment = Alignment.from_lengths(["Ses01F_a", "Ses01M_é"], ["train", "test"], [2, 3])
    write(tmp_path / "f.h5", alignment)
    with open_h5(tmp_path / "f.h5") as handle:
        assert handle.mode == "r"
        for name in ("utt_ids", "split"):
            assert h5py.check_string_dtype(handle[name].dtype).encoding == "utf-8"
        back = read_alignment(handle)
    assert back.utt_ids.tolist() == ["Ses01F_a", "Ses01M_é"] and back.split.tolist() == ["train", "test"]
    assert back.offsets.tolist() == [0, 2] and back.lengths.tolist() == [2, 3]


def test_offsets_that_do_not_follow_the_lengths_are_named(tmp_path):
    alignment = Alignment.from_lengths(["a", "b"], ["train", "test"], [2, 3])
    alignment.offsets = np.array([0, 1], np.int64)
    write(tmp_path / "f.h5", alignment)
    with open_h5(tmp_path / "f.h5") as handle, pytest.raises(FeatureError) as error:
        read_alignment(handle)
    assert str(error.value) == f"HDF5 file '{tmp_path / 'f.h5'}': offsets do not follow lengths; delete it and rerun"


def test_a_missing_layer_names_the_layers_the_file_has(tmp_path):
    alignment = Alignment.from_lengths(["a"], ["train"], [2])
    write(tmp_path / "f.h5", alignment, layer_3=np.zeros((2, 4)), layer_1=np.zeros((2, 4)), labels=np.zeros(2))
    with open_h5(tmp_path / "f.h5") as handle:
        assert layer_dataset(handle, 3).shape == (2, 4)
        with pytest.raises(FeatureError) as error:
            layer_dataset(handle, 2)
    assert str(error.value) == (
        f"feature file '{tmp_path / 'f.h5'}' has no layer 2 (has ['layer_1', 'layer_3']); rerun extraction"
    )


def test_missing_corrupt_or_incomplete_files_are_named(tmp_path):
    with pytest.raises(FeatureError, match="does not exist; rerun the rule that writes it"):
        open_h5(tmp_path / "none.h5")
    (tmp_path / "bad.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(FeatureError, match="is corrupt or not HDF5"):
        open_h5(tmp_path / "bad.h5")
    with h5py.File(tmp_path / "part.h5", "w") as handle:
        handle.create_dataset("utt_ids", data=np.array(["a"], dtype=object), dtype=h5py.string_dtype())
    with pytest.raises(
        FeatureError, match=r"lacks dataset\(s\) \['split', 'offsets', 'lengths'\]; delete it and rerun"
    ):
        open_h5(tmp_path / "part.h5")
