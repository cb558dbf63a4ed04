"""Leave-one-session-out folds: no test utterance or speaker leaks into train or valid."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import balanced_sessions, write_tree

from gmptl.corpus import build_manifest
from gmptl.folds import FOLD_COLUMNS, make_folds
from gmptl.protocols import expected_fold_ids

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
        {"validation": "speaker", "valid_fraction": 0.1, "protocol": "speaker", "k": 5},
        42,
    )
    folds = pd.read_csv(tmp_path / "folds.tsv", sep="\t")
    assert list(folds.columns) == ["fold", "utt_id", "split"]
    assert set(folds["split"]) == {"train", "valid", "test"} and folds["fold"].nunique() == 10


# --- protocols -----------------------------------------------------------------------------------


def synthetic_manifest(n_speakers: int = 8, per_speaker: int = 8, unknown: int = 0) -> pd.DataFrame:
    """A RAVDESS-like manifest: the speaker is the session; emotions cycle; `unknown` rows of no speaker."""
    rows = []
    for s in range(1, n_speakers + 1):
        for i in range(per_speaker):
            rows.append((f"a{s:02d}_{i}", s, f"Actor_{s:02d}", "M" if s % 2 else "F", CLASSES[i % 4]))
    rows += [(f"u_{i}", 99, "Unknown", "", CLASSES[i % 4]) for i in range(unknown)]
    frame = pd.DataFrame(rows, columns=["utt_id", "session", "speaker", "gender", "emotion"])
    return frame.assign(corpus_split="")


CLASSES = ["neu", "hap", "ang", "sad"]


def assert_speaker_disjoint(folds, manifest):
    rows = joined(folds, manifest)
    for _, fold in rows.groupby("fold"):
        by_split = {s: set(fold.loc[fold["split"] == s, "speaker"]) - {"Unknown"} for s in ("train", "valid", "test")}
        assert not by_split["train"] & by_split["test"]
        assert not by_split["valid"] & by_split["test"]
        assert not by_split["valid"] & by_split["train"]


def assert_tested_once(folds, manifest):
    tests = folds[folds["split"] == "test"]["utt_id"]
    assert tests.is_unique and set(tests) == set(manifest["utt_id"])


def test_iemocap_speaker_protocol_has_ten_folds_partner_in_training(manifest):
    folds = make_folds(manifest, "speaker", protocol="speaker")
    assert sorted(folds["fold"].unique()) == list(range(1, 11))
    assert_tested_once(folds, manifest)
    assert_speaker_disjoint(folds, manifest)
    rows = joined(folds, manifest)
    for fold, group in rows.groupby("fold"):
        test_speaker = f"Ses{(fold + 1) // 2:02d}{'F' if fold % 2 else 'M'}"
        assert set(group.loc[group["split"] == "test", "speaker"]) == {test_speaker}
        partner = test_speaker[:-1] + ("M" if test_speaker.endswith("F") else "F")
        assert set(group.loc[group["speaker"] == partner, "split"]) == {"train"}
        valid = set(group.loc[group["split"] == "valid", "speaker"])
        assert len(valid) == 1 and not {s[:5] for s in valid} & {test_speaker[:5]}


@pytest.mark.parametrize("validation", ["speaker", "random", "none"])
def test_kfold_is_speaker_disjoint_stratified_seeded(validation):
    frame = synthetic_manifest(n_speakers=10, unknown=6)
    folds = make_folds(frame, validation, 0.2, seed=5, protocol="kfold", k=5)
    assert sorted(folds["fold"].unique()) == [1, 2, 3, 4, 5]
    assert_tested_once(folds, frame)
    if validation != "random":
        assert_speaker_disjoint(folds, frame)
    tested = joined(folds[folds["split"] == "test"], frame)
    assert all(set(group["emotion"]) == set(CLASSES) for _, group in tested.groupby("fold"))
    assert folds.equals(make_folds(frame, validation, 0.2, seed=5, protocol="kfold", k=5))
    assert not folds.equals(make_folds(frame, validation, 0.2, seed=6, protocol="kfold", k=5))


def test_kfold_needs_k_speakers():
    from gmptl.errors import CorpusError

    with pytest.raises(CorpusError, match="folds.k is 5 but the manifest has only 3 speaker"):
        make_folds(synthetic_manifest(n_speakers=3), protocol="kfold", k=5)


def test_speaker_protocol_on_another_corpus_and_its_validation_fraction():
    frame = synthetic_manifest(n_speakers=12)
    folds = make_folds(frame, "speaker", 0.15, protocol="speaker")
    assert sorted(folds["fold"].unique()) == list(range(1, 13))
    assert_tested_once(folds, frame)
    assert_speaker_disjoint(folds, frame)
    valid = joined(folds[folds["split"] == "valid"], frame).groupby("fold")["speaker"].nunique()
    assert (valid == 2).all()  # one speaker is 1/11 of training < 15 %: two are held out


def test_speaker_protocol_refuses_unknown_speakers():
    from gmptl.errors import CorpusError

    with pytest.raises(CorpusError, match="utterance\\(s\\) of speaker 'Unknown'"):
        make_folds(synthetic_manifest(unknown=2), protocol="speaker")


def test_session_protocol_with_named_sessions_numbers_folds_in_order(caplog):
    import logging

    caplog.set_level(logging.INFO)
    frame = synthetic_manifest(n_speakers=6)
    frame["session"] = frame["session"].map(lambda s: ["day-b", "day-a", "day-c"][(s - 1) // 2])
    folds = make_folds(frame, "speaker", protocol="session")
    assert sorted(folds["fold"].unique()) == [1, 2, 3]
    assert set(joined(folds, frame).query("fold == 1 and split == 'test'")["session"]) == {"day-a"}
    assert "fold 1 tests session day-a" in caplog.text
    assert_speaker_disjoint(folds, frame)


def predefined_manifest():
    frame = synthetic_manifest(n_speakers=6, unknown=4)
    splits = {1: "train", 2: "train", 3: "train", 4: "valid", 5: "test", 6: "test2", 99: "train"}
    return frame.assign(corpus_split=frame["session"].map(splits))


def test_predefined_uses_the_corpus_split_and_leaves_other_splits_out(caplog):
    caplog.set_level("INFO")
    frame = predefined_manifest()
    folds = make_folds(frame, "speaker", protocol="predefined")
    assert folds["fold"].unique().tolist() == [1]
    rows = joined(folds, frame)
    assert (rows["split"] == rows["corpus_split"]).all()
    assert "Actor_06" not in set(rows["speaker"])
    assert "leaves out 8 utterance(s) of split(s) ['test2']" in caplog.text


def test_predefined_speaker_in_two_splits_is_a_warning_naming_it(caplog):
    frame = predefined_manifest()
    frame.loc[frame["utt_id"] == "a04_0", "corpus_split"] = "train"
    make_folds(frame, protocol="predefined")
    assert "speaker(s) ['Actor_04'] appear in more than one predefined split" in caplog.text


def test_predefined_without_a_split_is_an_error():
    from gmptl.errors import CorpusError

    with pytest.raises(CorpusError, match="needs the corpus's own split"):
        make_folds(synthetic_manifest(), protocol="predefined")
    frame = predefined_manifest()
    frame.loc[0, "corpus_split"] = ""
    with pytest.raises(CorpusError, match="1 utterance\\(s\\) have no split \\(e.g. 'a01_0'\\)"):
        make_folds(frame, protocol="predefined")


@pytest.mark.parametrize(
    ("corpus", "folds", "expected"),
    [
        ({}, {}, [1, 2, 3, 4, 5]),
        ({"sessions": [2, 4]}, {"protocol": "session"}, [2, 4]),
        ({}, {"protocol": "speaker"}, list(range(1, 11))),
        ({"sessions": [1, 3]}, {"protocol": "speaker"}, [1, 2, 5, 6]),
        ({"format": "ravdess"}, {"protocol": "kfold", "k": 4}, [1, 2, 3, 4]),
        ({"format": "msp_podcast"}, {"protocol": "predefined"}, [1]),
        ({"format": "ravdess"}, {"protocol": "speaker"}, None),
        ({"format": "table"}, {"protocol": "session"}, None),
    ],
)
def test_expected_fold_ids_without_data(corpus, folds, expected):
    assert expected_fold_ids(corpus, folds) == expected


def test_expected_fold_ids_fill_in_the_schema_defaults():
    from gmptl.schema import defaults

    corpus, folds = defaults("corpus"), defaults("folds")
    for protocol in ("session", "speaker", "kfold", "predefined"):
        given = {"protocol": protocol}
        assert expected_fold_ids({}, given) == expected_fold_ids(corpus, {**folds, **given}), protocol
    assert expected_fold_ids({}, {}) == expected_fold_ids(corpus, folds)


@pytest.mark.parametrize("protocol", ["session", "speaker"])
def test_expected_fold_ids_match_the_folds_made(manifest, protocol):
    subset = manifest[manifest["session"].isin([1, 3, 4])]
    folds = make_folds(subset, protocol=protocol)
    assert sorted(folds["fold"].unique()) == expected_fold_ids({"sessions": [1, 3, 4]}, {"protocol": protocol})


# --- the deploy split and one fold's table ----------------------------------------------------------


@pytest.mark.parametrize("validation", ["speaker", "random", "none"])
def test_deploy_split_trains_on_every_utterance_but_the_validation_ones(validation):
    from gmptl.folds import DEPLOY_FOLD, deploy_split

    frame = synthetic_manifest(n_speakers=6)
    split = deploy_split(frame, validation, 0.2, seed=4)
    assert list(split.columns) == FOLD_COLUMNS
    assert split["utt_id"].tolist() == frame["utt_id"].tolist()
    assert (split["fold"] == DEPLOY_FOLD).all() and DEPLOY_FOLD == 0
    assert "test" not in set(split["split"])
    valid = joined(split[split["split"] == "valid"], frame)
    if validation == "none":
        assert valid.empty and (split["split"] == "train").all()
    elif validation == "speaker":  # one speaker holds 1/6 < 20 % of the data: two are held out
        assert valid["speaker"].nunique() == 2
        assert set(valid["speaker"]).isdisjoint(joined(split[split["split"] == "train"], frame)["speaker"])
    else:
        assert len(valid) == pytest.approx(0.2 * len(frame), abs=1)


def test_deploy_split_without_a_speaker_to_validate_on_is_an_error():
    from gmptl.errors import CorpusError
    from gmptl.folds import deploy_split

    with pytest.raises(CorpusError, match="fold 0: the training data hold no speaker to validate on"):
        deploy_split(synthetic_manifest(n_speakers=0, unknown=4), "speaker", 0.2, seed=4)


def test_fold_table_is_the_manifest_rows_of_one_fold_with_their_split(manifest):
    from gmptl.folds import fold_table

    folds = make_folds(manifest, "speaker")
    shuffled = folds.sample(frac=1.0, random_state=0)
    table = fold_table(shuffled, manifest, 3)
    assert table["utt_id"].tolist() == manifest["utt_id"].tolist()  # manifest order, not the folds table's
    assert list(table.columns) == [*manifest.columns, "split"]
    expected = folds[folds["fold"] == 3].set_index("utt_id")["split"]
    assert table.set_index("utt_id")["split"].equals(expected.loc[table["utt_id"]])
    assert set(table.loc[table["split"] == "test", "session"]) == {3}


def test_fold_table_refuses_a_missing_fold_or_utterances_not_in_the_manifest(manifest):
    from gmptl.errors import CorpusError
    from gmptl.folds import fold_table

    folds = make_folds(manifest, "none")
    with pytest.raises(CorpusError, match=r"fold 7 is not in the folds table \(folds: \[1, 2, 3, 4, 5\]\)"):
        fold_table(folds, manifest, 7)
    dropped = manifest["utt_id"].iloc[:2].tolist()
    with pytest.raises(CorpusError, match="fold 1: 2 utterance\\(s\\) of the folds table are not in the manifest"):
        fold_table(folds, manifest[~manifest["utt_id"].isin(dropped)], 1)


# --- the rules behind each choice, stated exactly ---------------------------------------------------


def messages(caplog, level="INFO"):
    return [record.getMessage() for record in caplog.records if record.levelname == level]


def test_natural_order_sorts_numbers_as_numbers_and_before_text():
    from gmptl.folds import natural_order

    assert natural_order(["b", "10", "2", "a", "2", "1"]) == ["1", "2", "10", "a", "b"]
    assert natural_order([10, 9, 100]) == [9, 10, 100]


def test_make_folds_defaults_are_the_schema_defaults():
    import inspect

    from gmptl.schema import defaults

    folds, seed = defaults("folds"), defaults()["seed"]
    signature = inspect.signature(make_folds).parameters
    assert signature["seed"].default == seed
    for key in ("validation", "valid_fraction", "protocol", "k"):
        assert signature[key].default == folds[key], key
    frame = synthetic_manifest(n_speakers=12)
    explicit = make_folds(frame, protocol="kfold", seed=seed, k=folds["k"])
    assert make_folds(frame, protocol="kfold").equals(explicit)


def rotated_manifest(per_speaker: int = 10, genders: str = "FM") -> pd.DataFrame:
    """Five sessions of two speakers each, named so that their alphabetical order runs against the sessions'
    (session 1: eF, eM; … session 5: aF, aM)."""
    rows = []
    for session in range(1, 6):
        for gender in genders:
            name = f"{'edcba'[session - 1]}{gender}"
            rows += [(f"{name}_{i}", session, name, gender, CLASSES[i % 4]) for i in range(per_speaker)]
    return pd.DataFrame(rows, columns=["utt_id", "session", "speaker", "gender", "emotion"])


@pytest.mark.parametrize(
    ("fold_index", "fraction", "expected"),
    [
        (0, 0.3, ["bF", "bM", "aF"]),  # sessions 4, 5, 1, 2 after test session 3; F first on even folds
        (1, 0.3, ["bM", "bF", "aF"]),  # M first on odd folds, then the others in order
        (2, 0.3, ["bF", "bM", "aF"]),
        (3, 0.3, ["bM", "bF", "aF"]),
        (0, 0.25, ["bF", "bM"]),  # two speakers hold exactly 25 % of the 80 training utterances: enough
        (0, 0.8, ["bF", "bM", "aF", "aM", "eF", "eM", "dF"]),  # the order wraps round to sessions 1 and 2
    ],
)
def test_validation_speakers_follow_the_sessions_after_the_test_session(fold_index, fraction, expected):
    from gmptl.folds import validation_speakers

    frame = rotated_manifest()
    test = frame["session"] == 3
    assert validation_speakers(frame, ~test, test, fold_index, fraction) == expected


def test_validation_speakers_without_the_preferred_gender_start_with_the_first_candidate():
    from gmptl.folds import validation_speakers

    frame = rotated_manifest().assign(gender="M")
    test = frame["session"] == 3
    assert validation_speakers(frame, ~test, test, 0, 0.1) == ["bF"]  # no F speaker: the first in order


def test_validation_speakers_of_the_deploy_model_start_at_the_first_session():
    from gmptl.folds import validation_speakers

    frame = rotated_manifest()
    nothing = pd.Series(False, index=frame.index)
    assert validation_speakers(frame, ~nothing, nothing, 0, 0.1) == ["eF"]
    assert validation_speakers(frame, ~nothing, nothing, 1, 0.2) == ["eM", "eF"]


def test_a_speaker_in_two_sessions_ranks_by_the_earlier_one_in_order():
    from gmptl.folds import validation_speakers

    rows = [(f"t{i}", 1, "t", "F") for i in range(4)]
    rows += [(f"q{i}", 2, "q", "F") for i in range(4)] + [(f"x{i}", 2, "x", "F") for i in range(4)]
    rows += [(f"x{i + 4}", 3, "x", "F") for i in range(4)] + [(f"r{i}", 3, "r", "F") for i in range(4)]
    frame = pd.DataFrame(rows, columns=["utt_id", "session", "speaker", "gender"]).assign(emotion="neu")
    test = frame["session"] == 1
    assert validation_speakers(frame, ~test, test, 0, 1.0) == ["q", "x", "r"]  # x is in session 2 as well as 3


def random_manifest(counts: dict[str, int]) -> pd.DataFrame:
    emotions = [emotion for emotion, n in counts.items() for _ in range(n)]
    return pd.DataFrame(
        {
            "utt_id": [f"u{i:03d}" for i in range(len(emotions))],
            "session": 1,
            "speaker": [f"s{i % 5}" for i in range(len(emotions))],
            "gender": "F",
            "emotion": emotions,
        }
    )


@pytest.mark.parametrize(
    ("counts", "fraction", "expected"),
    [
        ({"neu": 10, "ang": 10}, 0.1, {"neu": 1, "ang": 1}),  # 2 rows for 2 classes: just enough to stratify
        ({"neu": 2, "ang": 18}, 0.5, {"neu": 1, "ang": 9}),  # the smallest class has the 2 rows it needs
        ({"neu": 20, "ang": 40, "sad": 60}, 0.25, {"neu": 5, "ang": 10, "sad": 15}),
    ],
)
def test_random_validation_is_stratified_by_emotion_whenever_it_can_be(counts, fraction, expected):
    from gmptl.folds import deploy_split

    frame = random_manifest(counts)
    for seed in range(10):  # unstratified, a seed of ten would draw other counts
        valid = joined(deploy_split(frame, "random", fraction, seed).query("split == 'valid'"), frame)
        assert valid["emotion"].value_counts().to_dict() == expected, seed


def test_random_validation_of_a_class_with_one_utterance_is_unstratified():
    from gmptl.folds import deploy_split

    frame = random_manifest({"neu": 1, "ang": 19})
    split = deploy_split(frame, "random", 0.5, seed=0)  # stratifying would need 2 rows of every class
    assert (split["split"] == "valid").sum() == 10


def test_the_log_says_what_each_fold_tests_and_validates_on(caplog):
    from gmptl.folds import deploy_split

    caplog.set_level("INFO")
    frame = synthetic_manifest(n_speakers=6)
    deploy_split(frame, "speaker", 0.2, seed=4)
    deploy_split(frame, "random", 0.2, seed=4)
    deploy_split(frame, "none", 0.2, seed=4)
    make_folds(frame.head(16), "none", protocol="speaker")
    assert messages(caplog) == [
        "deploy split: 32 train / 16 valid; validation: speaker(s) Actor_02, Actor_01",  # F first in fold index 0
        "deploy split: 38 train / 10 valid; validation: random 20% of training",
        "deploy split: 48 train / 0 valid; validation: none",
        "fold 1 tests speaker Actor_01 (8 utterances); validation: none",
        "fold 2 tests speaker Actor_02 (8 utterances); validation: none",
    ]
    caplog.clear()
    make_folds(predefined_manifest(), "speaker", protocol="predefined")
    assert messages(caplog) == [
        "fold 1 leaves out 8 utterance(s) of split(s) ['test2']",
        "fold 1 tests the corpus's test split (8 utterances); validation: the corpus's validation split",
    ]


def test_predefined_without_a_validation_split_draws_one_from_its_training_split(caplog):
    caplog.set_level("INFO")
    frame = predefined_manifest()
    frame["corpus_split"] = frame["corpus_split"].replace({"valid": "train"})
    rows = joined(make_folds(frame, "speaker", 0.1, protocol="predefined"), frame)
    assert set(rows.loc[rows["split"] == "valid", "speaker"]) == {"Actor_02"}
    assert set(rows.loc[rows["split"] == "test", "corpus_split"]) == {"test"}
    assert set(rows.loc[rows["split"] == "train", "corpus_split"]) == {"train"}
    assert messages(caplog)[-1] == (
        "fold 1 tests the corpus's test split (8 utterances); validation: speaker(s) Actor_02"
    )
    assert not messages(caplog, "WARNING")
    random = [make_folds(frame, "random", 0.25, seed=seed, protocol="predefined") for seed in (1, 1, 2)]
    assert random[0].equals(random[1]) and not random[0].equals(random[2])
    assert (random[0]["split"] == "valid").sum() == pytest.approx(
        0.25 * (frame["corpus_split"] == "train").sum(), abs=1
    )


@pytest.mark.parametrize(("speakers", "k"), [(3, 3), (20, 2), (22, 2), (24, 2), (30, 3)])
def test_kfold_names_up_to_ten_tested_speakers_per_fold(caplog, speakers, k):
    caplog.set_level("INFO")
    frame = synthetic_manifest(n_speakers=speakers, per_speaker=4, unknown=3)
    folds = joined(make_folds(frame, "none", protocol="kfold", k=k), frame)
    assert sorted(folds["fold"].unique()) == list(range(1, k + 1))
    expected = []
    for fold, rows in folds.groupby("fold"):
        test = rows[rows["split"] == "test"]
        named = sorted(set(test["speaker"]) - {"Unknown"})
        shown = ", ".join(named[:10]) + (", …" if len(named) > 10 else "")
        expected.append(
            f"fold {fold} tests {len(named)} speaker(s): {shown} ({len(test)} utterances); validation: none"
        )
    assert messages(caplog) == expected


def test_a_speaker_in_the_test_session_and_in_training_is_a_warning(caplog):
    frame = synthetic_manifest(n_speakers=4)
    frame.loc[frame["utt_id"] == "a02_0", "speaker"] = "Actor_01"  # Actor_01 speaks in sessions 1 and 2
    make_folds(frame, "none", protocol="session")
    assert messages(caplog, "WARNING") == [
        "fold 1: speaker(s) ['Actor_01'] are in the test rows and in training too",
        "fold 2: speaker(s) ['Actor_01'] are in the test rows and in training too",
    ]


def test_a_leaked_speaker_only_in_the_validation_rows_is_a_warning_too(caplog):
    frame = synthetic_manifest(n_speakers=2, per_speaker=20)
    frame.loc[frame["utt_id"] == "a02_0", "speaker"] = "Actor_01"
    for seed in range(50):  # a seed whose random validation takes Actor_01's one utterance of session 2
        caplog.clear()
        folds = make_folds(frame, "random", 0.5, seed=seed, protocol="session")
        if folds.query("fold == 1 and utt_id == 'a02_0'")["split"].item() == "valid":
            break
    else:
        pytest.fail("no seed drew the utterance into validation")
    assert "fold 1: speaker(s) ['Actor_01'] are in the test rows and in training too" in messages(caplog, "WARNING")


def test_predefined_does_not_warn_about_speakers_it_was_given_or_unknown_ones(caplog):
    frame = predefined_manifest()
    frame.loc[frame["utt_id"] == "u_0", "corpus_split"] = "test"  # an Unknown speaker in train and test
    make_folds(frame, protocol="predefined")
    assert not messages(caplog, "WARNING")
    frame.loc[frame["utt_id"] == "a05_0", "corpus_split"] = "train"  # a test speaker in training: as given
    make_folds(frame, protocol="predefined")
    assert messages(caplog, "WARNING") == [
        "speaker(s) ['Actor_05'] appear in more than one predefined split (train/valid/test)"
    ]


@pytest.mark.parametrize("protocol", ["session", "speaker"])
def test_two_sessions_or_speakers_are_enough_and_one_is_not(protocol):
    from gmptl.errors import CorpusError

    frame = synthetic_manifest(n_speakers=2)
    assert sorted(make_folds(frame, "none", protocol=protocol)["fold"].unique()) == [1, 2]
    kind = "sessions" if protocol == "session" else "speakers"
    shown = "[1]" if protocol == "session" else "['Actor_01']"
    with pytest.raises(CorpusError) as error:
        make_folds(frame.head(8), "none", protocol=protocol)
    assert str(error.value) == f"leave-one-{protocol}-out needs at least 2 {kind}; the manifest has {shown}"


def test_kfold_with_as_many_speakers_as_folds():
    frame = synthetic_manifest(n_speakers=3)
    folds = make_folds(frame, "none", protocol="kfold", k=3)
    assert sorted(folds["fold"].unique()) == [1, 2, 3]
    assert_tested_once(folds, frame)


ERRORS = [
    (
        {"protocol": "loso"},
        "config key 'folds.protocol': unknown value 'loso' (known: session, speaker, kfold, predefined)",
    ),
    ({"validation": "half"}, "config key 'folds.validation': unknown value 'half'"),
]


@pytest.mark.parametrize(("settings", "message"), ERRORS)
def test_unknown_protocol_or_validation_is_one_sentence_naming_the_key(settings, message):
    from gmptl.errors import ConfigError

    with pytest.raises(ConfigError) as error:
        make_folds(synthetic_manifest(n_speakers=3), **settings)
    assert str(error.value) == message


def test_errors_of_the_predefined_protocol_name_what_is_missing():
    from gmptl.errors import CorpusError

    cases = [
        (
            synthetic_manifest().drop(columns="corpus_split"),
            "folds.protocol predefined needs the corpus's own split (MSP-Podcast's Split_Set, a table's split "
            "column); this manifest has none",
        ),
        (
            predefined_manifest().assign(corpus_split=lambda f: f["corpus_split"].replace({"test": "train"})),
            "folds.protocol predefined: the corpus's split has no test utterance",
        ),
        (
            predefined_manifest().assign(corpus_split=lambda f: f["corpus_split"].replace({"train": "test"})),
            "folds.protocol predefined: the corpus's split has no train utterance",
        ),
    ]
    missing = predefined_manifest()
    missing.loc[missing["utt_id"].isin(["a02_1", "a03_1"]), "corpus_split"] = float("nan")  # an empty TSV cell
    cases.append((missing, "folds.protocol predefined: 2 utterance(s) have no split (e.g. 'a02_1')"))
    for frame, message in cases:
        with pytest.raises(CorpusError) as error:
            make_folds(frame, protocol="predefined")
        assert str(error.value) == message


def test_speaker_protocol_refusal_says_what_to_use_instead():
    from gmptl.errors import CorpusError

    with pytest.raises(CorpusError) as error:
        make_folds(synthetic_manifest(unknown=2), protocol="speaker")
    assert str(error.value) == (
        "leave-one-speaker-out cannot test the 2 utterance(s) of speaker 'Unknown'; use folds.protocol: kfold or "
        "predefined"
    )


def test_fold_table_refuses_an_utterance_listed_twice(manifest):
    from gmptl.errors import CorpusError
    from gmptl.folds import fold_table

    folds = make_folds(manifest, "none")
    twice = pd.concat([folds, folds[folds["fold"] == 2].head(1)], ignore_index=True)
    first = folds.loc[folds["fold"] == 2, "utt_id"].iloc[0]
    with pytest.raises(CorpusError) as error:
        fold_table(twice, manifest, 2)
    assert str(error.value) == f"the folds table's fold 2 lists utterance '{first}' more than once"
    with pytest.raises(CorpusError) as error:
        fold_table(folds, pd.concat([manifest, manifest.head(1)]), 1)
    assert str(error.value) == f"the manifest lists utterance '{manifest['utt_id'].iloc[0]}' more than once"
