"""The demo generator: styles follow the raw labels, and every layout it writes is read by the real reader."""

from __future__ import annotations

import numpy as np
import pytest

from gmptl.corpus import CorpusSettings, read_corpus
from gmptl.demo import make_demo_corpus, make_speaker, synthesize
from gmptl.folds import make_folds


@pytest.mark.parametrize("seed", range(6))
def test_excited_speaks_like_happy(seed):
    speaker = make_speaker(1, "F", np.random.default_rng(0))
    excited = synthesize(speaker, "exc", 0.4, np.random.default_rng(seed))
    happy = synthesize(speaker, "hap", 0.4, np.random.default_rng(seed))
    np.testing.assert_array_equal(excited, happy)
    for other in ("neu", "ang", "sad"):  # the label shapes the audio: only exc and hap sound alike
        different = synthesize(speaker, other, 0.4, np.random.default_rng(seed))
        assert len(different) == len(happy) and np.abs(different - happy).mean() > 0.1 * np.abs(happy).mean(), other


def test_ravdess_demo_is_read_by_the_ravdess_reader(tmp_path):
    make_demo_corpus(tmp_path / "r", 8, 0.2, 0.3, corpus_format="ravdess", speakers=4)
    reading = read_corpus(CorpusSettings.from_config({"root": str(tmp_path / "r"), "format": "ravdess"}))
    manifest = reading.manifest
    assert manifest["speaker"].nunique() == 4 and len(manifest) == 32
    assert set(manifest["emotion"]) == {"neu", "hap", "ang", "sad"}
    assert manifest.groupby("speaker")["gender"].first().to_dict() == {
        "Actor_01": "M",
        "Actor_02": "F",
        "Actor_03": "M",
        "Actor_04": "F",
    }
    assert sum(reading.dropped.values()) == 4  # calm and fearful, one in ten
    assert not any("-02-" == u[2:6] for u in manifest["utt_id"])  # song left out


def test_table_demo_is_read_by_the_table_reader_and_has_a_predefined_split(tmp_path):
    make_demo_corpus(tmp_path / "t", 8, 0.2, 0.3, corpus_format="table", speakers=6)
    config = {"root": str(tmp_path / "t"), "format": "table", "table": "labels.tsv"}
    manifest = read_corpus(CorpusSettings.from_config(config)).manifest
    assert manifest["speaker"].nunique() == 6 and sorted(manifest["session"].unique()) == [1, 2, 3]
    assert manifest.groupby("session")["corpus_split"].first().to_dict() == {1: "train", 2: "valid", 3: "test"}
    folds = make_folds(manifest, protocol="predefined")
    assert set(folds["split"]) == {"train", "valid", "test"}
