"""Leave-one-session-out folds: no test utterance or speaker leaks into train or valid."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import balanced_sessions, write_tree

from gmptl.corpus import build_manifest
from gmptl.folds import FOLD_COLUMNS, make_folds

LABEL_MAP = {"neu": "neu", "hap": "hap", "exc": "hap", "ang": "ang", "sad": "sad"}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = write_tree(
        tmp_path_factory.mktemp("c") / "IEMOCAP_full_release", balanced_sessions(per_class=3), seconds=0.5
    )
    return build_manifest(root, [1, 2, 3, 4, 5], LABEL_MAP, ["neu", "hap", "ang", "sad"])


def joined(folds, manifest):
    return folds.merge(manifest, on="utt_id")


@pytest.mark.parametrize("validation", ["speaker", "random", "none"])
def test_no_test_session_utterance_or_speaker_outside_test(manifest, validation):
    folds = joined(make_folds(manifest, validation, 0.2, seed=3), manifest)
    for fold, rows in folds.groupby("fold"):
        test = rows[rows["split"] == "test"]
        rest = rows[rows["split"] != "test"]
        assert set(test["session"]) == {fold}
        assert fold not in set(rest["session"])
        assert not set(test["speaker"]) & set(rest["speaker"])
        assert not set(test["utt_id"]) & set(rest["utt_id"])


@pytest.mark.parametrize("validation", ["speaker", "random", "none"])
def test_each_utterance_is_test_exactly_once(manifest, validation):
    folds = make_folds(manifest, validation, 0.2, seed=3)
    assert list(folds.columns) == FOLD_COLUMNS
    tests = folds[folds["split"] == "test"]["utt_id"]
    assert tests.is_unique and set(tests) == set(manifest["utt_id"])
    assert (folds.groupby("fold").size() == len(manifest)).all()


def test_speaker_validation_holds_out_one_training_speaker_per_fold(manifest):
    folds = joined(make_folds(manifest, "speaker"), manifest)
    chosen = {}
    for fold, rows in folds.groupby("fold"):
        valid = rows[rows["split"] == "valid"]
        assert valid["speaker"].nunique() == 1
        speaker = valid["speaker"].iloc[0]
        assert int(speaker[3:5]) != fold
        assert speaker not in set(rows[rows["split"] == "train"]["speaker"])
        chosen[fold] = speaker
    assert {s[-1] for s in chosen.values()} == {"F", "M"}  # both genders are used across folds
    assert make_folds(manifest, "speaker").equals(make_folds(manifest, "speaker"))


def test_random_validation_is_seeded_stratified_and_from_training_sessions(manifest):
    a = joined(make_folds(manifest, "random", 0.25, seed=1), manifest)
    b = make_folds(manifest, "random", 0.25, seed=1)
    c = make_folds(manifest, "random", 0.25, seed=2)
    assert a[FOLD_COLUMNS].equals(b)
    assert not b.equals(c)
    valid = a[(a["fold"] == 1) & (a["split"] == "valid")]
    assert len(valid) == pytest.approx(0.25 * 96, abs=1)
    assert set(valid["emotion"]) == {"neu", "hap", "ang", "sad"}


def test_none_validation_has_no_valid_split(manifest):
    assert "valid" not in set(make_folds(manifest, "none")["split"])


def test_a_single_session_cannot_be_folded(manifest):
    from gmptl.errors import CorpusError

    with pytest.raises(CorpusError, match="at least 2 sessions"):
        make_folds(manifest[manifest["session"] == 1])


def test_make_folds_script_writes_the_contract_file(manifest, tmp_path):
    from make_folds import main

    manifest.to_csv(tmp_path / "manifest.tsv", sep="\t", index=False)
    main(
        str(tmp_path / "manifest.tsv"),
        str(tmp_path / "folds.tsv"),
        {"validation": "speaker", "valid_fraction": 0.1},
        42,
    )
    folds = pd.read_csv(tmp_path / "folds.tsv", sep="\t")
    assert list(folds.columns) == ["fold", "utt_id", "split"]
    assert set(folds["split"]) == {"train", "valid", "test"}
