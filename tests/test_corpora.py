"""Readers of the other corpus formats, each on a synthetic tree in its release layout, and their bad inputs."""

from __future__ import annotations

import logging

import pandas as pd
import pytest
from conftest import write_wav

from gmptl.corpus import MANIFEST_COLUMNS, CorpusSettings, count_table, read_corpus, read_manifest
from gmptl.errors import AudioError, CorpusError


def settings(root, corpus_format, **extra):
    return CorpusSettings.from_config({"root": str(root), "format": corpus_format, **extra})


def manifest_of(root, corpus_format, **extra) -> pd.DataFrame:
    return read_corpus(settings(root, corpus_format, **extra)).manifest.set_index("utt_id")


def reader_warnings(caplog, corpus_format, level=logging.WARNING) -> list[str]:
    """The messages the reader of `corpus_format` logged at `level` or above, word for word."""
    return [r.getMessage() for r in caplog.records if r.name == f"gmptl.corpora.{corpus_format}" and r.levelno >= level]


def truncate(wav, seconds: float, rate: int = 16000) -> None:
    """Cut a 16-bit mono wav's data to `seconds`, leaving its header's declared size as it was."""
    wav.write_bytes(wav.read_bytes()[: 44 + int(seconds * rate) * 2])


# --- RAVDESS ---------------------------------------------------------------------------------


def ravdess_tree(root, names):
    for name in names:
        actor = name[-6:-4]
        write_wav(root / f"Actor_{actor}" / name, 0.3, seed=len(name))
    return root


RAVDESS = [
    "03-01-01-01-01-01-01.wav",  # neutral, actor 1 (male)
    "03-01-05-02-01-02-01.wav",  # angry
    "03-01-02-01-01-01-02.wav",  # calm, actor 2 (female): dropped by the default map
    "03-01-03-02-02-01-02.wav",  # happy
    "03-01-04-01-01-01-12.wav",  # sad, actor 12 (female)
    "03-02-03-01-01-01-01.wav",  # song: left out unless include_song
]


def test_ravdess_rows_follow_the_file_names(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    manifest = manifest_of(ravdess_tree(tmp_path / "ravdess", RAVDESS), "ravdess")
    expected = {
        "03-01-01-01-01-01-01": ("Actor_01", "M", "neu", 1),
        "03-01-05-02-01-02-01": ("Actor_01", "M", "ang", 1),
        "03-01-03-02-02-01-02": ("Actor_02", "F", "hap", 2),
        "03-01-04-01-01-01-12": ("Actor_12", "F", "sad", 12),
    }
    assert sorted(manifest.index) == sorted(expected)
    for utt_id, (speaker, gender, emotion, session) in expected.items():
        row = manifest.loc[utt_id]
        assert (row.speaker, row.gender, row.emotion, row.session, row.dialog) == (
            speaker,
            gender,
            emotion,
            session,
            speaker,
        )
    assert "left out 1 song file" in caplog.text and "calm 1" in caplog.text


def test_ravdess_song_is_read_when_asked(tmp_path):
    manifest = manifest_of(ravdess_tree(tmp_path / "ravdess", RAVDESS), "ravdess", include_song=True)
    assert manifest.loc["03-02-03-01-01-01-01", "emotion"] == "hap"


def test_ravdess_label_map_reaches_other_classes(tmp_path):
    root = ravdess_tree(tmp_path / "ravdess", RAVDESS)
    manifest = manifest_of(root, "ravdess", classes=["neu", "cal", "hap"])
    assert manifest.loc["03-01-02-01-01-01-02", "emotion"] == "cal" and set(manifest["emotion"]) == {
        "neu",
        "cal",
        "hap",
    }


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("03-01-01-01-01-01.wav", "is not named MM-VV-EE-II-SS-RR-AA"),
        ("01-01-01-01-01-01-01.wav", "modality 01"),
        ("03-01-09-01-01-01-01.wav", "unknown vocal channel or emotion code"),
        ("03-01-01-01-01-01-03.wav", "names actor 03 but lies in 'Actor_01'"),
    ],
)
def test_ravdess_bad_file_name_is_named(tmp_path, name, message):
    root = ravdess_tree(tmp_path / "ravdess", RAVDESS[:1])
    write_wav(root / "Actor_01" / name, 0.2)
    with pytest.raises(CorpusError, match=message) as error:
        read_corpus(settings(root, "ravdess"))
    assert name in str(error.value)


def test_ravdess_counts_every_song_file_it_leaves_out(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    root = ravdess_tree(tmp_path / "ravdess", RAVDESS + ["03-02-04-01-01-01-02.wav"])  # a second song
    manifest = manifest_of(root, "ravdess")
    assert not any(utt_id.startswith("03-02-") for utt_id in manifest.index)
    assert reader_warnings(caplog, "ravdess", logging.INFO) == [
        "left out 2 song file(s) (vocal channel 02); set corpus.include_song: true to read them"
    ]


def test_ravdess_root_without_actor_folders_is_named(tmp_path):
    root = tmp_path / "ravdess"
    (root / "Audio_Speech_Actors_01-24").mkdir(parents=True)  # the zip's own folder, not the one to point at
    with pytest.raises(CorpusError) as error:
        read_corpus(settings(root, "ravdess"))
    assert str(error.value) == f"corpus root '{root}' holds no Actor_NN folder; is it the RAVDESS audio-only release?"


def test_ravdess_apple_double_files_are_ignored(tmp_path):
    root = ravdess_tree(tmp_path / "ravdess", RAVDESS)
    (root / "Actor_01" / "._03-01-01-01-01-01-01.wav").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
    assert sorted(manifest_of(root, "ravdess").index) == [  # as without it: no calm, no song
        "03-01-01-01-01-01-01",
        "03-01-03-02-02-01-02",
        "03-01-04-01-01-01-12",
        "03-01-05-02-01-02-01",
    ]


def test_ravdess_audio_error_starts_with_the_file_that_lists_it(tmp_path):
    root = ravdess_tree(tmp_path / "ravdess", RAVDESS)
    wav = root / "Actor_01" / RAVDESS[0]
    truncate(wav, 0.1)
    with pytest.raises(AudioError) as error:
        read_corpus(settings(root, "ravdess"))
    assert str(error.value) == (
        f"{wav}: audio file '{wav}' is truncated: its header declares 0.30 s of audio but the file holds 0.10 s; "
        "re-copy it from the corpus; or set corpus.on_missing_audio: skip"
    )


# --- CREMA-D ---------------------------------------------------------------------------------


def crema_tree(
    root,
    names,
    demographics="ActorID,Age,Sex,Race,Ethnicity\n1001,51,Male,Caucasian,Not Hispanic\n"
    "1002,21,Female,Caucasian,Not Hispanic\n",
):
    for name in names:
        write_wav(root / "AudioWAV" / name, 0.3, seed=len(name))
    if demographics is not None:
        (root / "VideoDemographics.csv").write_text(demographics)
    return root


CREMA = [
    "1001_DFA_ANG_XX.wav",
    "1001_IEO_HAP_HI.wav",
    "1002_TIE_SAD_LO.wav",
    "1002_MTI_NEU_XX.wav",
    "1002_DFA_DIS_MD.wav",
]


def test_crema_d_rows_follow_the_names_and_demographics(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    manifest = manifest_of(crema_tree(tmp_path / "crema", CREMA), "crema_d")
    assert sorted(manifest.index) == sorted(n[:-4] for n in CREMA if "DIS" not in n)
    assert manifest.loc["1001_IEO_HAP_HI", ["speaker", "gender", "emotion", "session", "dialog"]].tolist() == [
        "1001",
        "M",
        "hap",
        1001,
        "1001",
    ]
    assert manifest.loc["1002_TIE_SAD_LO", ["speaker", "gender", "emotion", "dialog"]].tolist() == [
        "1002",
        "F",
        "sad",
        "1002",
    ]
    assert "DIS 1" in caplog.text


def test_crema_d_without_demographics_has_unknown_gender_and_says_so(tmp_path, caplog):
    root = crema_tree(tmp_path / "crema", CREMA, demographics=None)
    manifest = manifest_of(root, "crema_d")
    assert (manifest["gender"] == "").all()
    assert reader_warnings(caplog, "crema_d") == [
        f"'{root / 'VideoDemographics.csv'}' is missing: the gender of every CREMA-D speaker is unknown"
    ]
    assert (
        count_table(manifest.reset_index(), ["neu", "hap", "ang", "sad"]).set_index("session").loc["all", "unknown"]
        == 4
    )


@pytest.mark.parametrize("name", ["1001_DFA_ANG.wav", "1001_DFA_ANG_XY.wav", "A001_DFA_ANG_XX.wav"])
def test_crema_d_bad_file_name_is_named(tmp_path, name):
    root = crema_tree(tmp_path / "crema", CREMA[:1] + [name])
    with pytest.raises(CorpusError, match=rf"CREMA-D file '.*{name}' is not named"):
        read_corpus(settings(root, "crema_d"))


def test_crema_d_unknown_emotion_code_is_counted_and_warned(tmp_path, caplog):
    manifest = manifest_of(crema_tree(tmp_path / "crema", CREMA + ["1001_DFA_XYZ_XX.wav"]), "crema_d")
    assert "1001_DFA_XYZ_XX" not in manifest.index
    assert "crema_d label 'XYZ'" in caplog.text and "1001_DFA_XYZ_XX.wav" in caplog.text


def test_crema_d_actors_the_demographics_do_not_list_are_warned_by_id(tmp_path, caplog):
    names = CREMA + ["1003_DFA_HAP_XX.wav", "1091_DFA_NEU_XX.wav"]
    root = crema_tree(tmp_path / "crema", names, demographics="ActorID,Age,Sex\n1001,51,Male\n1002,21,Female\n")
    manifest = manifest_of(root, "crema_d")
    assert manifest.loc["1003_DFA_HAP_XX", "gender"] == "" and manifest.loc["1091_DFA_NEU_XX", "gender"] == ""
    assert manifest.loc["1001_DFA_ANG_XX", "gender"] == "M"
    assert reader_warnings(caplog, "crema_d") == [
        "VideoDemographics.csv does not list actor(s) ['1003', '1091']: their gender is unknown"
    ]


def test_crema_d_demographics_with_empty_cells_and_blank_rows(tmp_path, caplog):
    """An empty Sex cell is an unknown gender; a row of empty cells (as spreadsheets export) lists no actor."""
    demographics = "ActorID,Age,Sex,Race,Ethnicity\n1001,51,,Caucasian,NA\n1002,21,Female,None,Not Hispanic\n,,,,\n"
    manifest = manifest_of(crema_tree(tmp_path / "crema", CREMA, demographics=demographics), "crema_d")
    assert manifest.loc["1001_DFA_ANG_XX", "gender"] == "" and manifest.loc["1002_TIE_SAD_LO", "gender"] == "F"
    assert reader_warnings(caplog, "crema_d") == []  # 1001 is listed: its gender is just not given


def test_crema_d_demographics_without_the_sex_column_is_named(tmp_path):
    root = crema_tree(tmp_path / "crema", CREMA, demographics="ActorID,Age,Gender\n1001,51,Male\n1002,21,Female\n")
    with pytest.raises(CorpusError) as error:
        read_corpus(settings(root, "crema_d"))
    assert str(error.value) == (
        f"'{root / 'VideoDemographics.csv'}' has no column(s) ['Sex']; its columns are ['ActorID', 'Age', 'Gender']"
    )


def test_crema_d_apple_double_files_are_ignored(tmp_path):
    root = crema_tree(tmp_path / "crema", CREMA)
    (root / "AudioWAV" / "._1001_DFA_ANG_XX.wav").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
    assert sorted(manifest_of(root, "crema_d").index) == sorted(n[:-4] for n in CREMA if "DIS" not in n)


def test_crema_d_root_without_audio_folder_is_named(tmp_path):
    root = tmp_path / "crema"
    root.mkdir()
    (root / "VideoDemographics.csv").write_text("ActorID,Age,Sex\n1001,51,Male\n")
    with pytest.raises(CorpusError) as error:
        read_corpus(settings(root, "crema_d"))
    assert str(error.value) == f"folder '{root / 'AudioWAV'}' is missing; is corpus.root a CREMA-D copy?"


# --- MSP-Podcast -----------------------------------------------------------------------------

MSP_LABELS = """FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set
MSP-PODCAST_0001_0008.wav,N,3.0,4.0,4.2,127,Female,Train
MSP-PODCAST_0001_0019.wav,A,5.0,2.0,5.0,127,Female,Train
MSP-PODCAST_0002_0033.wav,H,4.0,5.8,4.2,Unknown,Unknown,Development
MSP-PODCAST_0003_0001.wav,S,2.0,2.2,3.0,12,Male,Test1
MSP-PODCAST_0003_0002.wav,X,2.0,2.2,3.0,12,Male,Test1
MSP-PODCAST_0004_0002.wav,S,2.0,2.2,3.0,30,Male,Test2
"""


def msp_tree(root, labels=MSP_LABELS):
    (root / "Labels").mkdir(parents=True)
    (root / "Labels" / "labels_consensus.csv").write_text(labels)
    for line in labels.splitlines()[1:]:
        write_wav(root / "Audios" / line.split(",")[0], 0.3)
    return root


def test_msp_podcast_rows_follow_the_label_table(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    manifest = manifest_of(msp_tree(tmp_path / "msp"), "msp_podcast")
    assert "MSP-PODCAST_0003_0002" not in manifest.index and "X 1" in caplog.text  # no agreement: dropped
    row = manifest.loc["MSP-PODCAST_0001_0019"]
    assert (row.speaker, row.gender, row.emotion, row.session, row.dialog, row.corpus_split) == (
        "127",
        "F",
        "ang",
        1,
        "MSP-PODCAST_0001",
        "train",
    )
    unknown = manifest.loc["MSP-PODCAST_0002_0033"]
    assert (unknown.speaker, unknown.gender, unknown.corpus_split) == ("Unknown", "", "valid")
    assert manifest.loc["MSP-PODCAST_0003_0001", "corpus_split"] == "test"
    assert manifest.loc["MSP-PODCAST_0004_0002", "corpus_split"] == "test2"


def test_msp_podcast_missing_column_is_named(tmp_path):
    root = msp_tree(tmp_path / "msp", MSP_LABELS.replace("Split_Set", "Partition"))
    with pytest.raises(CorpusError, match=r"labels_consensus\.csv' has no column\(s\) \['Split_Set'\]"):
        read_corpus(settings(root, "msp_podcast"))


def test_msp_podcast_unparseable_file_name_names_the_row(tmp_path):
    root = msp_tree(tmp_path / "msp", MSP_LABELS + "podcast_7.wav,N,1,1,1,5,Male,Train\n")
    with pytest.raises(CorpusError, match=r"labels_consensus\.csv:8: FileName 'podcast_7\.wav'"):
        read_corpus(settings(root, "msp_podcast"))


def test_msp_podcast_listed_audio_that_does_not_exist(tmp_path):
    root = msp_tree(tmp_path / "msp")
    (root / "Audios" / "MSP-PODCAST_0004_0002.wav").unlink()  # one of the two sad utterances
    with pytest.raises(AudioError, match=r"labels_consensus\.csv:7: the audio file of 'MSP-PODCAST_0004_0002'"):
        read_corpus(settings(root, "msp_podcast"))
    reading = read_corpus(settings(root, "msp_podcast", on_missing_audio="skip"))
    assert reading.skipped[0].startswith("MSP-PODCAST_0004_0002:") and len(reading.manifest) == 4


def test_msp_podcast_unknown_speaker_in_any_spelling_or_empty_is_unknown(tmp_path):
    labels = MSP_LABELS.replace("H,4.0,5.8,4.2,Unknown", "H,4.0,5.8,4.2,UNKNOWN")
    labels += "MSP-PODCAST_0005_0001.wav,N,3.0,4.0,4.2,unknown,,Train\n"
    labels += "MSP-PODCAST_0005_0002.wav,A,3.0,4.0,4.2,,,Train\n"  # empty cells, not NaN
    manifest = manifest_of(msp_tree(tmp_path / "msp", labels), "msp_podcast")
    for utt_id in ("MSP-PODCAST_0002_0033", "MSP-PODCAST_0005_0001", "MSP-PODCAST_0005_0002"):
        assert (manifest.loc[utt_id, "speaker"], manifest.loc[utt_id, "gender"]) == ("Unknown", "")
    assert manifest.loc["MSP-PODCAST_0001_0019", "speaker"] == "127"


def test_msp_podcast_speaker_ids_that_look_like_numbers_stay_text(tmp_path):
    labels = "FileName,EmoClass,SpkrID,Gender,Split_Set\n" + "\n".join(
        [
            "MSP-PODCAST_0001_0008.wav,N,0127,Female,Train",
            "MSP-PODCAST_0001_0019.wav,A,0127,Female,Train",
            "MSP-PODCAST_0002_0033.wav,H,12,Male,Development",
            "MSP-PODCAST_0003_0001.wav,S,0030,Male,Test1",
        ]
    )
    manifest = manifest_of(msp_tree(tmp_path / "msp", labels + "\n"), "msp_podcast")
    assert manifest["speaker"].tolist() == ["0127", "0127", "12", "0030"]


def test_msp_podcast_missing_label_file_is_named(tmp_path):
    (tmp_path / "msp" / "Audios").mkdir(parents=True)
    with pytest.raises(CorpusError) as error:
        read_corpus(settings(tmp_path / "msp", "msp_podcast"))
    path = tmp_path / "msp" / "Labels" / "labels_consensus.csv"
    assert str(error.value) == f"label file '{path}' is missing; is corpus.root an MSP-Podcast copy?"


# --- EmoDB -----------------------------------------------------------------------------------


EMODB = ["03a01Fa.wav", "08b02Wb.wav", "16a05Tc.wav", "11b09Nd.wav", "13a01Lc.wav"]  # F W T N L


def emodb_tree(root, names=EMODB):
    for name in names:
        write_wav(root / "wav" / name, 0.3)
    return root


def test_emodb_rows_follow_the_file_names(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    manifest = manifest_of(emodb_tree(tmp_path / "emodb"), "emodb")
    assert manifest.loc["03a01Fa", ["speaker", "gender", "emotion", "session", "dialog"]].tolist() == [
        "03",
        "M",
        "hap",
        3,
        "03",
    ]
    assert manifest.loc["08b02Wb", ["speaker", "gender", "emotion"]].tolist() == ["08", "F", "ang"]
    assert manifest.loc["16a05Tc", "emotion"] == "sad" and manifest.loc["11b09Nd", "emotion"] == "neu"
    assert "13a01Lc" not in manifest.index and "L 1" in caplog.text  # boredom: not one of the 4 classes


@pytest.mark.parametrize(("name", "message"), [("03a01F.wav", "is not named"), ("04a01Fa.wav", "names speaker 04")])
def test_emodb_bad_file_name_is_named(tmp_path, name, message):
    write_wav(tmp_path / "emodb" / "wav" / name, 0.2)
    with pytest.raises(CorpusError, match=rf"EmoDB file '.*{name}' {message}"):
        read_corpus(settings(tmp_path / "emodb", "emodb"))


def test_emodb_unknown_emotion_letter_is_warned_naming_the_file(tmp_path, caplog):
    root = emodb_tree(tmp_path / "emodb", EMODB + ["03a02Xa.wav"])
    assert "03a02Xa" not in manifest_of(root, "emodb").index
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        f"dropped 1 utterance(s) with emodb label 'X' (first at {root / 'wav' / '03a02Xa.wav'}): it is not in "
        "corpus.label_map nor a standard emodb label"
    ]


def test_emodb_apple_double_files_are_ignored(tmp_path):
    root = emodb_tree(tmp_path / "emodb")
    (root / "wav" / "._03a01Fa.wav").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
    assert sorted(manifest_of(root, "emodb").index) == ["03a01Fa", "08b02Wb", "11b09Nd", "16a05Tc"]


def test_emodb_root_without_wav_folder_is_named(tmp_path):
    (tmp_path / "emodb" / "silb").mkdir(parents=True)
    with pytest.raises(CorpusError) as error:
        read_corpus(settings(tmp_path / "emodb", "emodb"))
    assert str(error.value) == f"folder '{tmp_path / 'emodb' / 'wav'}' is missing; is corpus.root an EmoDB copy?"


# --- table -----------------------------------------------------------------------------------


def table_tree(root, text, name="labels.tsv", files=("a/u1.wav", "a/u2.wav", "b/u3.wav", "b/u4.wav")):
    for i, path in enumerate(files):
        write_wav(root / path, 0.3, seed=i)
    (root / name).write_text(text)
    return root


TABLE = "path\temotion\tspeaker\tgender\tsession\tsplit\n" + "\n".join(
    [
        "a/u1.wav\tneu\tanna\tfemale\t1\ttrain",
        "a/u2.wav\thap\tanna\tF\t1\tdev",
        "b/u3.wav\tsad\tbob\tM\t2\tTest",
        "b/u4.wav\tang\tbob\t\t2\ttest",
    ]
)


def test_table_rows_ids_and_roles(tmp_path):
    root = table_tree(tmp_path / "t", TABLE)
    manifest = manifest_of(root, "table", table="labels.tsv")
    assert list(manifest.reset_index().columns) == [*MANIFEST_COLUMNS, "corpus_split"]  # this table has a split
    assert sorted(manifest.index) == ["a/u1", "a/u2", "b/u3", "b/u4"]
    assert manifest.loc["a/u1", ["speaker", "gender", "emotion", "session", "dialog"]].tolist() == [
        "anna",
        "F",
        "neu",
        1,
        "anna",
    ]
    assert manifest["corpus_split"].tolist() == ["train", "valid", "test", "test"]
    assert manifest.loc["b/u4", "gender"] == "" and manifest.loc["b/u3", "path"] == str(root / "b/u3.wav")


def test_table_csv_with_renamed_columns_absolute_paths_and_no_session(tmp_path):
    root = tmp_path / "t"
    csv = "file,label,who\n" + f"{root / 'a/u1.wav'},neu,anna\n" + "b/u3.wav,sad,bob\n"
    table_tree(root, csv, name="meta.csv")
    columns = {"path": "file", "emotion": "label", "speaker": "who"}
    manifest = manifest_of(root, "table", table=str(root / "meta.csv"), columns=columns, classes=["neu", "sad"])
    assert manifest.loc["a/u1", "session"] == "anna" and manifest.loc["b/u3", "session"] == "bob"
    assert (manifest["gender"] == "").all()


@pytest.mark.parametrize(
    ("text", "columns", "error", "message"),
    [
        ("path\tspeaker\na/u1.wav\tanna\n", {}, CorpusError, r"has no column 'emotion' \(role 'emotion'"),
        (TABLE, {"gender": "sex"}, CorpusError, r"has no column 'sex' \(role 'gender'"),
        (
            TABLE + "\na/u1.wav\tneu\tanna\tF\t1\ttrain",
            {},
            CorpusError,
            r"labels\.tsv:6: utterance 'a/u1' is also listed at .*labels\.tsv:2",
        ),
        (
            TABLE + "\nc/u9.wav\tneu\tcid\tF\t3\ttrain",
            {},
            AudioError,
            r"labels\.tsv:6: the audio file of 'c/u9' is missing",
        ),
        (TABLE.replace("\tdev", "\tholdout"), {}, CorpusError, r"labels\.tsv:3: split 'holdout'"),
        (TABLE.replace("female", "x"), {}, CorpusError, r"labels\.tsv:2: gender 'x'"),
        (TABLE.replace("\tanna\tF", "\t\tF"), {}, CorpusError, r"labels\.tsv:3: the speaker cell"),
    ],
)
def test_table_bad_input_names_the_file_or_row(tmp_path, text, columns, error, message):
    root = table_tree(tmp_path / "t", text)
    with pytest.raises(error, match=message):
        read_corpus(settings(root, "table", table="labels.tsv", columns=columns))


def test_table_unknown_label_is_counted_dropped_and_warned(tmp_path, caplog):
    root = table_tree(tmp_path / "t", TABLE.replace("\tsad\t", "\tSAD\t"))
    reading = read_corpus(settings(root, "table", table="labels.tsv", classes=["neu", "hap", "ang"]))
    assert reading.dropped == {"SAD": 1} and "b/u3" not in set(reading.manifest["utt_id"])
    assert "dropped 1 utterance(s) with label 'SAD'" in caplog.text and "labels.tsv:4" in caplog.text


def test_table_of_unknown_extension_or_missing_file(tmp_path):
    root = table_tree(tmp_path / "t", TABLE, name="labels.xlsx")
    with pytest.raises(CorpusError, match=r"labels\.xlsx': unknown extension"):
        read_corpus(settings(root, "table", table="labels.xlsx"))
    with pytest.raises(CorpusError, match=r"corpus table '.*nope\.tsv' does not exist"):
        read_corpus(settings(root, "table", table="nope.tsv"))


def test_manifest_file_keeps_text_ids_and_unknown_gender(tmp_path):
    root = table_tree(tmp_path / "t", TABLE.replace("anna", "007"))
    manifest = read_corpus(settings(root, "table", table="labels.tsv")).manifest
    manifest.to_csv(tmp_path / "manifest.tsv", sep="\t", index=False)
    back = read_manifest(tmp_path / "manifest.tsv")
    assert back["speaker"].tolist() == ["007", "007", "bob", "bob"] and back["gender"].tolist()[-1] == ""
    pd.testing.assert_frame_equal(back, manifest)


def test_table_ids_that_look_like_numbers_stay_text_and_sessions_have_one_type(tmp_path):
    root = table_tree(tmp_path / "t", TABLE.replace("anna", "007").replace("bob", "012"))
    manifest = manifest_of(root, "table", table="labels.tsv")
    assert manifest["speaker"].tolist() == ["007", "007", "012", "012"]
    assert manifest["session"].tolist() == [1, 1, 2, 2]  # all numbers: numbers
    mixed = table_tree(tmp_path / "m", TABLE.replace("\tF\t1\t", "\tF\tday-a\t"))
    assert manifest_of(mixed, "table", table="labels.tsv")["session"].tolist() == ["1", "day-a", "2", "2"]
    no_session = "path\temotion\tspeaker\n" + "a/u1.wav\tneu\t7\n" + "b/u3.wav\tsad\tUnknown\n"
    speakers = table_tree(tmp_path / "s", no_session)
    no_session_manifest = manifest_of(speakers, "table", table="labels.tsv", classes=["neu", "sad"])
    assert no_session_manifest["session"].tolist() == ["7", "Unknown"]


def test_table_separator_comes_from_the_extension_not_a_guess(tmp_path):
    header = "path\temotion\tname (last, first)\n"
    rows = "a/u1.wav\tneu\tSmith, Ann\n" + "b/u3.wav\tsad\tRoe, Bob\n"  # one comma per line, as in the header
    root = table_tree(tmp_path / "t", header + rows)
    columns = {"speaker": "name (last, first)"}
    manifest = manifest_of(root, "table", table="labels.tsv", columns=columns, classes=["neu", "sad"])
    assert manifest["speaker"].tolist() == ["Smith, Ann", "Roe, Bob"]


def test_table_errors_name_the_file_and_the_cell(tmp_path):
    root = table_tree(tmp_path / "t", "path\tspeaker\na/u1.wav\tanna\n")
    with pytest.raises(CorpusError) as error:
        read_corpus(settings(root, "table", table="labels.tsv"))
    assert str(error.value) == (
        f"corpus table '{root / 'labels.tsv'}' has no column 'emotion' (role 'emotion'; name its column with "
        "corpus.columns.emotion); its columns are ['path', 'speaker']"
    )
    for line, rows in (
        (2, ["a/u1.wav\tneu\tanna\textra\tmore", "b/u3.wav\tsad\tbob"]),
        (3, ["a/u1.wav\tneu\tanna", "b/u3.wav\tsad\tbob\tx"]),
    ):
        ragged = table_tree(tmp_path / f"r{line}", "path\temotion\tspeaker\n" + "\n".join(rows) + "\n")
        with pytest.raises(CorpusError) as error:  # more cells than the header has columns: never shifted
            read_corpus(settings(ragged, "table", table="labels.tsv", classes=["neu", "sad"]))
        assert str(error.value).startswith(f"corpus table '{ragged / 'labels.tsv'}' cannot be parsed (")
        assert f"line {line}," in str(error.value)
    (tmp_path / "blank.tsv").write_text("")
    with pytest.raises(CorpusError) as error:
        read_corpus(settings(tmp_path, "table", table="blank.tsv"))
    assert str(error.value) == f"corpus table '{tmp_path / 'blank.tsv'}' is empty"
    trailing = table_tree(tmp_path / "x", "path\temotion\tspeaker\t\t\na/u1.wav\tneu\tanna\t\t\n")
    assert manifest_of(trailing, "table", table="labels.tsv", classes=["neu"])["speaker"].tolist() == ["anna"]
    twice = table_tree(tmp_path / "d", "path\temotion\tspeaker\tspeaker\na/u1.wav\tneu\tanna\tbob\n")
    with pytest.raises(CorpusError) as error:
        read_corpus(settings(twice, "table", table="labels.tsv", classes=["neu"]))
    assert str(error.value) == f"corpus table '{twice / 'labels.tsv'}' has column(s) ['speaker'] more than once"
    empty = table_tree(tmp_path / "e", TABLE.replace("\tF\t1\t", "\tF\t\t"))
    with pytest.raises(CorpusError) as error:
        read_corpus(settings(empty, "table", table="labels.tsv", columns={"session": "session"}))
    assert str(error.value) == f"{empty / 'labels.tsv'}:3: the session cell (column 'session') is empty"


def test_table_rows_without_a_split_have_an_empty_split(tmp_path):
    root = table_tree(tmp_path / "t", TABLE.replace("\tdev", "\t"))
    manifest = manifest_of(root, "table", table="labels.tsv")
    assert manifest["corpus_split"].tolist() == ["train", "", "test", "test"]


def test_table_source_files_follow_a_renamed_path_column(tmp_path):
    from gmptl.corpora.table import source_files

    root = tmp_path / "t"
    csv = "file,label,who\n" + f"{root / 'a/u1.wav'},neu,anna\n" + "b/u3.wav,sad,bob\n"
    table_tree(root, csv, name="meta.csv")
    columns = {"path": "file", "emotion": "label", "speaker": "who"}
    files = source_files(settings(root, "table", table="meta.csv", columns=columns, classes=["neu", "sad"]))
    assert files == [root / "meta.csv", root / "a/u1.wav", root / "b/u3.wav"]
    assert source_files(settings(root, "table", table="meta.csv")) == [root / "meta.csv"]  # no column 'path'


# --- a configured class left without utterances ----------------------------------------------

IEMOCAP_MAP = {"neu": "neu", "hap": "hap", "exc": "hap", "ang": "ang", "sad": "sad"}


def test_a_label_map_of_another_format_stops_naming_the_empty_classes_and_the_dropped_labels(tmp_path):
    root = ravdess_tree(tmp_path / "ravdess", RAVDESS)
    with pytest.raises(CorpusError) as error:
        read_corpus(settings(root, "ravdess", label_map=IEMOCAP_MAP))  # keeps only 'sad'
    message = str(error.value)
    assert "no utterance of class(es) ['neu', 'hap', 'ang'] of corpus.classes" in message
    assert "labels dropped: angry 1, calm 1, happy 1, neutral 1" in message
    assert "ravdess default map fills from ['angry', 'happy', 'neutral']" in message
    assert "corpus.label_map" in message and "corpus.classes" in message and message.count(". ") == 0


def test_a_class_emptied_by_skipped_audio_stops_and_counts_the_skip(tmp_path):
    root = msp_tree(tmp_path / "msp")
    (root / "Audios" / "MSP-PODCAST_0001_0008.wav").unlink()  # the only neutral utterance
    with pytest.raises(CorpusError, match=r"class\(es\) \['neu'\] .*X 1; 1 skipped for missing or truncated audio"):
        read_corpus(settings(root, "msp_podcast", on_missing_audio="skip"))


def test_a_rare_class_is_kept(tmp_path):
    manifest = manifest_of(emodb_tree(tmp_path / "emodb"), "emodb")  # one utterance per class
    assert manifest["emotion"].value_counts().to_dict() == {"hap": 1, "ang": 1, "sad": 1, "neu": 1}


# --- the corpus fingerprint of every format ----------------------------------------------------


def fingerprint_tree(root, corpus_format):
    """(settings, an audio file the reader reads, its label file or None) of a small tree of `corpus_format`."""
    from conftest import balanced_sessions, write_tree

    if corpus_format == "iemocap":
        write_tree(root, balanced_sessions(n_sessions=2, per_class=1), seconds=0.3)
        audio = sorted(root.glob("Session1/sentences/wav/*/*.wav"))[0]
        return (
            settings(root, "iemocap", sessions=[1, 2]),
            audio,
            sorted(root.glob("Session1/dialog/EmoEvaluation/*.txt"))[0],
        )
    if corpus_format == "ravdess":
        ravdess_tree(root, RAVDESS)
        return settings(root, "ravdess"), root / "Actor_01" / RAVDESS[0], None
    if corpus_format == "crema_d":
        crema_tree(root, CREMA)
        return settings(root, "crema_d"), root / "AudioWAV" / CREMA[0], root / "VideoDemographics.csv"
    if corpus_format == "msp_podcast":
        msp_tree(root)
        return (
            settings(root, "msp_podcast"),
            root / "Audios" / "MSP-PODCAST_0001_0008.wav",
            root / "Labels" / "labels_consensus.csv",
        )
    if corpus_format == "emodb":
        emodb_tree(root)
        return settings(root, "emodb"), root / "wav" / EMODB[0], None
    table_tree(root, TABLE)
    return settings(root, "table", table="labels.tsv"), root / "a" / "u1.wav", root / "labels.tsv"


@pytest.mark.parametrize("corpus_format", ["iemocap", "ravdess", "crema_d", "msp_podcast", "emodb", "table"])
def test_every_readers_fingerprint_follows_its_audio_and_label_files(tmp_path, corpus_format):
    """A replaced (other size), added or removed audio file, and an edited label file, change the fingerprint;
    touching files does not (copying a corpus must not retrain everything)."""
    import os

    from gmptl.corpus import corpus_fingerprint

    corpus, audio, labels = fingerprint_tree(tmp_path / corpus_format, corpus_format)
    first = corpus_fingerprint(corpus)
    assert first == corpus_fingerprint(corpus) and first != "absent"
    for path in [audio, labels]:
        if path is not None:
            os.utime(path, (1, 1))
    assert corpus_fingerprint(corpus) == first  # modification times are not content
    write_wav(audio, 0.45, seed=99)
    resized = corpus_fingerprint(corpus)
    assert resized != first
    extra = audio.with_name(audio.name.replace(audio.stem, audio.stem[:-1] + ("9" if audio.stem[-1] != "9" else "8")))
    if corpus_format in ("ravdess", "crema_d", "emodb", "iemocap"):  # files the reader finds by globbing
        write_wav(extra, 0.3)
        assert corpus_fingerprint(corpus) != resized
        extra.unlink()
    assert corpus_fingerprint(corpus) == resized
    if labels is not None:
        text = labels.read_text()
        labels.write_text(text.replace("neu", "sad", 1) if "neu" in text else text.replace("1", "2", 1))
        assert labels.read_text() != text and corpus_fingerprint(corpus) != resized
    audio.unlink()
    assert corpus_fingerprint(corpus) != resized
