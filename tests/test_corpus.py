"""The IEMOCAP reader: every quirk of the real layout, row by row, and every bad input."""

from __future__ import annotations

import logging
import os

import pandas as pd
import pytest
from conftest import summary_line, write_label_file, write_tree, write_wav

from gmptl.corpus import (
    MANIFEST_COLUMNS,
    CorpusSettings,
    build_manifest,
    corpus_fingerprint,
    count_table,
    full_release_differences,
    read_corpus,
    require_gender,
)
from gmptl.errors import AudioError, ConfigError, CorpusError

CLASSES = ["neu", "hap", "ang", "sad"]
LABEL_MAP = {"neu": "neu", "hap": "hap", "exc": "hap", "ang": "ang", "sad": "sad"}


def read(root, sessions=(1,), classes=CLASSES, **kwargs):
    """The IEMOCAP manifest of `root` with the 4-class map restricted to `classes` (the ones the tree holds)."""
    label_map = {raw: name for raw, name in LABEL_MAP.items() if name in classes}
    return build_manifest(root, list(sessions), label_map, list(classes), **kwargs)


def quirky_tree(root):
    """Session 1 with every quirk the reader must honour."""
    write_tree(
        root,
        {
            1: {
                "Ses01F_impro01": [
                    ("Ses01F_impro01_F000", "neu"),
                    ("Ses01F_impro01_M000", "exc"),
                    ("Ses01F_impro01_M001", "xxx"),
                ],
                "Ses01M_impro05a": [("Ses01M_impro05a_F003", "ang"), ("Ses01M_impro05a_M001", "fru")],
                "Ses01F_script01_1": [("Ses01F_script01_1_M012", "sad"), ("Ses01F_script01_1_F000", "hap")],
                "Ses01M_script01_1b": [("Ses01M_script01_1b_F001", "sur"), ("Ses01M_script01_1b_M002", "neu")],
            }
        },
    )
    folder = root / "Session1" / "dialog" / "EmoEvaluation"
    (folder / "Categorical").mkdir()
    (folder / "Categorical" / "Ses01F_impro01_e2_cat.txt").write_text("Ses01F_impro01_F000 :Anger; ()\n")
    (folder / "Attribute").mkdir()
    write_label_file(folder / "Attribute" / "Ses01F_impro01.txt", [("Ses01F_impro01_F000", "ang")])
    (folder / "._Ses01F_impro01.txt").write_bytes(b"\x00\x05\x16\x07\x00\x02 mac junk [ not a label")
    (root / "Session1" / "sentences" / "wav" / "Ses01F_impro01" / "._Ses01F_impro01_F000.wav").write_bytes(b"junk")
    return root


def test_manifest_rows_follow_every_iemocap_rule(tmp_path):
    root = quirky_tree(tmp_path / "IEMOCAP_full_release")
    manifest = read(root).set_index("utt_id")
    expected = {
        # utt_id: (speaker, gender, emotion, dialog)
        "Ses01F_impro01_F000": ("Ses01F", "F", "neu", "Ses01F_impro01"),
        "Ses01F_impro01_M000": ("Ses01M", "M", "hap", "Ses01F_impro01"),  # exc → hap; M speaker in an F dialog
        "Ses01M_impro05a_F003": ("Ses01F", "F", "ang", "Ses01M_impro05a"),  # letter-suffixed dialog
        "Ses01F_script01_1_M012": ("Ses01M", "M", "sad", "Ses01F_script01_1"),  # dialog with an extra '_'
        "Ses01F_script01_1_F000": ("Ses01F", "F", "hap", "Ses01F_script01_1"),
        "Ses01M_script01_1b_M002": ("Ses01M", "M", "neu", "Ses01M_script01_1b"),
    }
    assert sorted(manifest.index) == sorted(expected)
    for utt_id, (speaker, gender, emotion, dialog) in expected.items():
        row = manifest.loc[utt_id]
        assert (row.speaker, row.gender, row.emotion, row.dialog, row.session) == (speaker, gender, emotion, dialog, 1)
        assert row.path.endswith(f"Session1/sentences/wav/{dialog}/{utt_id}.wav")
        assert row.duration_s == pytest.approx(1.5)


def test_manifest_has_contract_columns_sorted_by_id(tree):
    manifest = read(tree, sessions=(1, 2))
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert manifest["utt_id"].is_monotonic_increasing
    assert set(manifest["session"]) == {1, 2}


def test_duration_comes_from_the_header(tmp_path):
    root = write_tree(tmp_path / "c", {1: {"Ses01F_impro01": [("Ses01F_impro01_F000", "neu")]}}, seconds=2.345)
    assert read(root, classes=["neu"])["duration_s"].iloc[0] == pytest.approx(2.345, abs=1e-4)


def test_label_map_is_configurable(tree):
    manifest = build_manifest(tree, [1], {"neu": "calm", "ang": "aroused", "hap": "aroused"}, ["calm", "aroused"])
    assert set(manifest["emotion"]) == {"calm", "aroused"}
    assert (manifest["emotion"] == "aroused").sum() == 8


def test_other_rate_or_channels_are_converted_or_rejected_by_name(tmp_path):
    root = write_tree(tmp_path / "c", {1: {"Ses01F_impro01": [("Ses01F_impro01_F000", "neu")]}})
    wav = root / "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav"
    write_wav(wav, 1.0, rate=44100, channels=2)
    manifest = read(root, classes=["neu"], on_format_mismatch="convert")
    assert manifest["duration_s"].iloc[0] == pytest.approx(1.0)
    with pytest.raises(AudioError, match=r"Ses01F_impro01_F000\.wav.*44100 Hz with 2 channel"):
        read(root, classes=["neu"], on_format_mismatch="error")


def test_missing_root_names_it(tmp_path):
    with pytest.raises(CorpusError, match=r"corpus root '.*nowhere' does not exist.*corpus\.root"):
        read(tmp_path / "nowhere")


def test_missing_session_folder_names_it(tree):
    with pytest.raises(CorpusError, match=r"Session6' is missing"):
        read(tree, sessions=(1, 6))


def test_missing_wav_is_an_error_naming_file_and_line(tree):
    wav = tree / "Session2/sentences/wav/Ses02F_impro01/Ses02F_impro01_M003.wav"
    wav.unlink()
    with pytest.raises(
        AudioError, match=r"Ses02F_impro01\.txt:\d+: the audio file of 'Ses02F_impro01_M003' is missing"
    ):
        read(tree, sessions=(1, 2))


def test_missing_wav_can_be_skipped_and_is_logged(tree, caplog):
    (tree / "Session2/sentences/wav/Ses02F_impro01/Ses02F_impro01_M003.wav").unlink()
    manifest = read(tree, sessions=(1, 2), on_missing_audio="skip")
    assert "Ses02F_impro01_M003" not in set(manifest["utt_id"])
    assert len(manifest) == 31
    assert "Ses02F_impro01_M003" in caplog.text and "skipped 1 labelled utterance" in caplog.text


def test_unreadable_wav_names_the_file(tree):
    wav = tree / "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F002.wav"
    wav.write_bytes(b"RIFF....WAVEfmt garbage")
    with pytest.raises(AudioError, match=r"Ses01F_impro01_F002\.wav' cannot be read"):
        read(tree)


def test_malformed_summary_line_names_file_and_line(tree):
    label_file = tree / "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt"
    lines = label_file.read_text().splitlines(keepends=True)
    number = next(i for i, line in enumerate(lines) if line.startswith("[")) + 1
    lines[number - 1] = "[6.2901 - 8.2357] Ses01F_impro01_F000 neu [2.5, 2.5, 2.5]\n"  # spaces, not TABs
    label_file.write_text("".join(lines))
    with pytest.raises(CorpusError, match=rf"Ses01F_impro01\.txt:{number}: malformed summary line"):
        read(tree)


def test_nothing_left_after_filtering_is_an_error(tmp_path):
    root = write_tree(tmp_path / "c", {1: {"Ses01F_impro01": [("Ses01F_impro01_F000", "xxx")]}})
    with pytest.raises(CorpusError, match="no utterance .* is left after the label map"):
        read(root)


def test_utterance_in_the_wrong_session_folder_is_an_error(tmp_path):
    root = write_tree(tmp_path / "c", {1: {"Ses02F_impro01": [("Ses02F_impro01_F000", "neu")]}})
    with pytest.raises(CorpusError, match="listed under Session1"):
        read(root)


def test_summary_line_with_crlf_and_trailing_space_is_read(tmp_path):
    root = write_tree(tmp_path / "c", {1: {"Ses01F_impro01": [("Ses01F_impro01_F000", "neu")]}})
    label_file = root / "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt"
    label_file.write_text(label_file.read_text().replace("]\n", "] \r\n"))
    assert read(root, classes=["neu"])["utt_id"].tolist() == ["Ses01F_impro01_F000"]


def test_count_table_and_full_release_check(tree):
    manifest = read(tree, sessions=(1, 2, 3, 4, 5))
    counts = count_table(manifest, CLASSES).set_index("session")
    assert counts.loc["all", "total"] == 80 and counts.loc["1", "F"] == 8 and counts.loc["3", "neu"] == 4
    notes = full_release_differences(manifest)
    assert notes[0] == "total: 80 (full release: 5531)"
    full = pd.DataFrame(
        {
            "emotion": ["neu"] * 1708 + ["hap"] * 1636 + ["ang"] * 1103 + ["sad"] * 1084,
            "session": [1] * 1085 + [2] * 1023 + [3] * 1151 + [4] * 1031 + [5] * 1241,
        }
    )
    assert full_release_differences(full) == []


def test_build_manifest_script_leaves_no_manifest_on_error(tree, tmp_path):
    from build_manifest import main

    (tree / "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav").unlink()
    corpus = {
        "root": str(tree),
        "sessions": [1, 2],
        "label_map": LABEL_MAP,
        "classes": CLASSES,
        "sample_rate": 16000,
        "on_format_mismatch": "convert",
        "on_missing_audio": "error",
        "check_full_release": True,
    }
    out = tmp_path / "results"
    with pytest.raises(AudioError):
        main(corpus, str(out / "manifest.tsv"), str(out / "manifest_counts.tsv"))
    assert not (out / "manifest.tsv").exists() and not (out / "manifest_counts.tsv").exists()


def test_a_subset_that_empties_a_class_stops_naming_the_subset(tmp_path):
    root = quirky_tree(tmp_path / "IEMOCAP_full_release")  # its improvised dialogs hold no sad utterance
    settings = CorpusSettings.from_config({"root": str(root), "sessions": [1], "subset": "improvised"})
    with pytest.raises(CorpusError, match=r"\['sad'\] .*\(corpus\.sessions \[1\], corpus\.subset improvised\)"):
        read_corpus(settings)


def test_build_manifest_script_writes_nothing_when_a_class_is_empty(tmp_path):
    from build_manifest import main

    turns = [("Ses01F_impro01_F000", "neu"), ("Ses01F_impro01_M000", "hap"), ("Ses01F_impro01_M001", "ang")]
    root = write_tree(tmp_path / "c", {1: {"Ses01F_impro01": turns + [("Ses01F_impro01_F001", "fru")]}})
    out = tmp_path / "results"
    corpus = {"root": str(root), "sessions": [1], "classes": CLASSES, "label_map": LABEL_MAP}
    with pytest.raises(CorpusError, match=r"\['sad'\] .*labels dropped: fru 1\)"):
        main(corpus, str(out / "manifest.tsv"), str(out / "manifest_counts.tsv"))
    assert not out.exists() or not list(out.iterdir())


# --- issue 9: nothing skipped silently --------------------------------------------------------


def truncate(wav, seconds: float, rate: int = 16000) -> None:
    """Cut a 16-bit mono wav's data to `seconds`, leaving its header's declared size as it was."""
    data = wav.read_bytes()
    wav.write_bytes(data[: 44 + int(seconds * rate) * 2])


def test_truncated_wav_is_an_error_naming_the_file(tmp_path):
    root = write_tree(tmp_path / "c", {1: {"Ses01F_impro01": [("Ses01F_impro01_F000", "neu")]}}, seconds=1.75)
    wav = root / "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav"
    truncate(wav, 0.58)
    with pytest.raises(
        AudioError, match=r"Ses01F_impro01_F000\.wav' is truncated: its header declares 1\.75 s .* holds 0\.58 s"
    ):
        read(root)


def test_truncated_wav_is_skipped_and_counted_under_skip(tree, caplog):
    truncate(tree / "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F001.wav", 0.5)
    manifest = read(tree, on_missing_audio="skip")
    assert "Ses01F_impro01_F001" not in set(manifest["utt_id"]) and len(manifest) == 15
    assert "Ses01F_impro01_F001: its header declares" in caplog.text and "skipped 1 labelled utterance" in caplog.text


def test_wav_with_extra_chunks_and_trailing_bytes_is_not_truncated(tmp_path):
    from gmptl.audio import audio_info, wav_data_sizes

    wav = tmp_path / "x.wav"
    write_wav(wav, 0.5)
    data = wav.read_bytes()
    # insert a LIST chunk of odd size (padded) before 'data', and trailing junk after it
    list_chunk = b"LIST" + (5).to_bytes(4, "little") + b"INFO!" + b"\x00"
    wav.write_bytes(data[:36] + list_chunk + data[36:] + b"id3 tag")
    declared, present = wav_data_sizes(wav)
    assert declared == 16000 and present == 16000 + 7
    assert audio_info(wav).frames == 8000


def test_summary_line_with_a_leading_space_is_read(tmp_path):
    root = write_tree(
        tmp_path / "c", {1: {"Ses01F_impro01": [("Ses01F_impro01_F000", "neu"), ("Ses01F_impro01_M000", "ang")]}}
    )
    label_file = root / "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt"
    label_file.write_text(label_file.read_text().replace("[4.0000", " [4.0000"))
    assert " [4.0000" in label_file.read_text()
    assert read(root, classes=["neu", "ang"])["utt_id"].tolist() == ["Ses01F_impro01_F000", "Ses01F_impro01_M000"]


def test_odd_line_is_reported_with_file_and_line(tmp_path, caplog):
    root = write_tree(tmp_path / "c", {1: {"Ses01F_impro01": [("Ses01F_impro01_F000", "neu")]}})
    label_file = root / "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt"
    label_file.write_text(label_file.read_text() + "some stray note\n")
    number = len(label_file.read_text().splitlines())
    read(root, classes=["neu"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        f"{label_file}:{number}: unexpected line 'some stray note' ignored (not a summary, evaluator or header line)"
    ]


def test_odd_line_naming_an_utterance_is_an_error(tmp_path):
    root = write_tree(tmp_path / "c", {1: {"Ses01F_impro01": [("Ses01F_impro01_F000", "neu")]}})
    label_file = root / "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt"
    label_file.write_text(label_file.read_text() + "6.2 - 8.2]\tSes01F_impro01_F001\tang\t[2.5, 2.5, 2.5]\n")
    with pytest.raises(CorpusError, match=r"Ses01F_impro01\.txt:\d+: malformed summary line"):
        read(root)


def test_non_standard_label_is_warned_by_name_and_count(tmp_path, caplog):
    turns = [("Ses01F_impro01_F000", "neu"), ("Ses01F_impro01_F001", "angry"), ("Ses01F_impro01_F002", "SAD")]
    turns += [("Ses01F_impro01_M000", "SAD"), ("Ses01F_impro01_M001", "xxx")]
    root = write_tree(tmp_path / "c", {1: {"Ses01F_impro01": turns}})
    caplog.set_level(logging.INFO)
    assert read(root, classes=["neu"])["utt_id"].tolist() == ["Ses01F_impro01_F000"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("2 utterance(s) with iemocap label 'SAD'" in w for w in warnings)
    assert any("1 utterance(s) with iemocap label 'angry'" in w for w in warnings)
    assert not any("'xxx'" in w for w in warnings) and "dropped by the label map: xxx 1" in caplog.text


@pytest.mark.parametrize(
    ("subset", "classes", "kept"),
    [("all", CLASSES, 6), ("improvised", ["neu", "hap", "ang"], 3), ("scripted", ["neu", "hap", "sad"], 3)],
)
def test_subset_keeps_improvised_or_scripted_dialogs(tmp_path, subset, classes, kept):
    root = quirky_tree(tmp_path / "IEMOCAP_full_release")
    settings = CorpusSettings.from_config({"root": str(root), "sessions": [1], "subset": subset, "classes": classes})
    manifest = read_corpus(settings).manifest
    marks = {"all": "", "improvised": "impro", "scripted": "script"}
    assert len(manifest) == kept
    assert all(marks[subset] in dialog for dialog in manifest["dialog"])


def test_default_label_map_depends_on_the_format():
    iemocap = CorpusSettings.from_config({"root": "x"})
    assert iemocap.label_map == LABEL_MAP
    ravdess = CorpusSettings.from_config({"root": "x", "format": "ravdess", "label_map": None})
    assert ravdess.label_map == {"neutral": "neu", "happy": "hap", "sad": "sad", "angry": "ang"}
    table = CorpusSettings.from_config({"root": "x", "format": "table", "classes": ["pos", "neg"]})
    assert table.label_map == {"pos": "pos", "neg": "neg"}


# --- fingerprint and gender check --------------------------------------------------------------


def test_fingerprint_changes_with_the_corpus_and_only_then(tree):
    settings = CorpusSettings.from_config({"root": str(tree)})
    first = corpus_fingerprint(settings)
    assert corpus_fingerprint(settings) == first
    (tree / "Session1/dialog/EmoEvaluation/notes.md").write_text("not read by the reader")
    assert corpus_fingerprint(settings) == first
    wav = tree / "Session2/sentences/wav/Ses02F_impro01/Ses02F_impro01_M003.wav"
    write_wav(wav, 0.7)
    second = corpus_fingerprint(settings)
    assert second != first
    label_file = tree / "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt"
    label_file.write_text(label_file.read_text() + "\n")
    third = corpus_fingerprint(settings)
    assert third != second
    os.utime(wav, (1, 1))  # a copy or a touch: same content, new mtime → no rebuild downstream
    assert corpus_fingerprint(settings) == third
    label_file.write_text(label_file.read_text().replace("\tneu\t", "\tang\t", 1))  # same size, new label
    fourth = corpus_fingerprint(settings)
    assert fourth != third
    wav.unlink()
    assert corpus_fingerprint(settings) != fourth
    assert corpus_fingerprint(CorpusSettings.from_config({"root": str(tree / "not_built_yet")})) == "absent"


def test_fingerprint_covers_every_format(tmp_path):
    from gmptl.demo import make_demo_corpus

    make_demo_corpus(
        tmp_path / "t",
        utterances_per_speaker=4,
        min_duration_s=0.2,
        max_duration_s=0.3,
        corpus_format="table",
        speakers=2,
    )
    settings = CorpusSettings.from_config({"root": str(tmp_path / "t"), "format": "table", "table": "labels.tsv"})
    first = corpus_fingerprint(settings)
    write_wav(tmp_path / "t/wav/spk01/spk01_000.wav", 0.9)
    assert corpus_fingerprint(settings) != first


def test_gender_check_names_the_key_and_the_column():
    manifest = pd.DataFrame({"utt_id": ["a", "b"], "gender": ["F", ""]})
    require_gender(manifest, 0.0)
    require_gender(manifest.iloc[:1], 1.0)
    with pytest.raises(
        ConfigError,
        match=r"'mtl.gender_weight' is 1.0 but the manifest's gender column is empty for 1 utterance\(s\) \(e.g. 'b'\)",
    ):
        require_gender(manifest, 1.0)
    with pytest.raises(ConfigError, match="'experiments.x.stage2.gender_weight'"):
        require_gender(manifest.assign(gender=[None, "M"]), 0.5, key="experiments.x.stage2.gender_weight")


# --- label files: what is read, what is skipped, and the exact words of each report -------------


def one_dialog_tree(root, turns=(("Ses01F_impro01_F000", "neu"), ("Ses01F_impro01_M000", "neu"))):
    """Session 1 with one improvised dialog; returns (root, its label file)."""
    write_tree(root, {1: {"Ses01F_impro01": list(turns)}})
    return root, root / "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt"


def corpus_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_header_evaluator_and_blank_lines_are_read_without_a_warning(tmp_path, caplog):
    root, label_file = one_dialog_tree(tmp_path / "c")
    text = label_file.read_text()
    assert text.startswith("% [START_TIME") and "\n\n" in text and "\nC-E2:\t" in text and "\nA-E3:\t" in text
    assert read(root, classes=["neu"])["utt_id"].tolist() == ["Ses01F_impro01_F000", "Ses01F_impro01_M000"]
    assert corpus_warnings(caplog) == []


def test_a_percent_line_is_a_comment_even_when_it_names_an_utterance(tmp_path, caplog):
    root, label_file = one_dialog_tree(tmp_path / "c")
    label_file.write_text(label_file.read_text() + "% Ses01F_impro01_F000 relabelled after review [2.5, 2.5, 2.5]\n")
    assert read(root, classes=["neu"])["utt_id"].tolist() == ["Ses01F_impro01_F000", "Ses01F_impro01_M000"]
    assert corpus_warnings(caplog) == []


def test_only_the_txt_files_directly_in_emo_evaluation_are_read(tmp_path, caplog):
    root, label_file = one_dialog_tree(tmp_path / "c")
    folder = label_file.parent
    # macOS AppleDouble companion: binary header, then text that is no label line
    (folder / "._Ses01F_impro01.txt").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \nATTR note\n")
    (folder / "Ses01F_impro01.bak").write_text(summary_line("Ses01F_impro01_F009", "neu"))  # not a .txt: not read
    assert read(root, classes=["neu"])["utt_id"].tolist() == ["Ses01F_impro01_F000", "Ses01F_impro01_M000"]
    assert corpus_warnings(caplog) == []


def error_of_an_added_line(root, line: str) -> tuple[str, str]:
    """The error of reading a one-dialog tree whose label file ends with `line`, and that line's "file:line"."""
    root, label_file = one_dialog_tree(root)
    label_file.write_text(label_file.read_text() + line)
    number = len(label_file.read_text().splitlines())
    with pytest.raises(CorpusError) as error:
        read(root, classes=["neu"])
    return str(error.value), f"{label_file}:{number}"


def test_a_bracket_line_that_is_no_summary_is_an_error_naming_the_expected_format(tmp_path):
    message, where = error_of_an_added_line(tmp_path / "c", "[6.2901 - 8.2357] unfinished\n")
    assert message == (
        f"{where}: malformed summary line '[6.2901 - 8.2357] unfinished'; expected "
        "'[START - END]<TAB>UTT_ID<TAB>LABEL<TAB>[V, A, D]'"
    )


def test_a_summary_line_with_a_bad_utterance_id_is_named(tmp_path):
    message, where = error_of_an_added_line(tmp_path / "c", summary_line("utterance7", "neu", 9.0, 10.0))
    assert message == (
        f"{where}: utterance id 'utterance7' does not look like an IEMOCAP id (SesNN[FM]_<dialog>_[FM]NNN)"
    )


def test_a_session_without_its_label_folder_is_named(tmp_path):
    root = tmp_path / "c"
    (root / "Session1" / "sentences" / "wav").mkdir(parents=True)
    with pytest.raises(CorpusError) as error:
        read(root)
    assert str(error.value) == (
        f"label folder '{root / 'Session1' / 'dialog' / 'EmoEvaluation'}' is missing; "
        "is corpus.root an IEMOCAP_full_release copy?"
    )


def test_subset_logs_how_many_utterances_of_other_dialogs_it_leaves_out(tmp_path, caplog):
    improvised = [("Ses01F_impro01_F000", "neu"), ("Ses01F_impro01_M000", "hap")]
    scripted = [("Ses01F_script01_1_F000", "neu"), ("Ses01F_script01_1_F001", "neu"), ("Ses01F_script01_1_M000", "ang")]
    root = write_tree(tmp_path / "c", {1: {"Ses01F_impro01": improvised, "Ses01F_script01_1": scripted}})
    caplog.set_level(logging.INFO)
    corpus = CorpusSettings.from_config(
        {"root": str(root), "sessions": [1], "subset": "improvised", "classes": ["neu", "hap"]}
    )
    assert read_corpus(corpus).manifest["utt_id"].tolist() == ["Ses01F_impro01_F000", "Ses01F_impro01_M000"]
    messages = [r.getMessage() for r in caplog.records if r.name == "gmptl.corpora.iemocap"]
    assert messages == ["corpus.subset improvised leaves out 3 utterance(s) of other dialogs"]


def test_a_label_file_that_is_not_utf8_is_read_as_latin1(tmp_path, caplog):
    root, label_file = one_dialog_tree(tmp_path / "c")
    label_file.write_bytes(label_file.read_bytes() + b"% relu par Ren\xe9e\nnote de Ren\xe9e\n")  # 0xE9: é in latin-1
    number = len(label_file.read_bytes().splitlines())
    assert read(root, classes=["neu"])["utt_id"].tolist() == ["Ses01F_impro01_F000", "Ses01F_impro01_M000"]
    assert corpus_warnings(caplog) == [
        f"{label_file}:{number}: unexpected line 'note de Renée' ignored (not a summary, evaluator or header line)"
    ]


def test_a_utf8_label_file_is_read_as_utf8_whatever_the_locale(tmp_path, caplog):
    """A user whose locale is ASCII (LC_ALL=C) or Windows' cp1252 must not get 'RenÃ©e' for 'Renée'."""
    import locale
    import sys

    if sys.flags.utf8_mode:
        pytest.skip("Python's UTF-8 mode ignores the locale")
    root, label_file = one_dialog_tree(tmp_path / "c")
    label_file.write_text(label_file.read_text() + "note de Renée\n", encoding="utf-8")
    number = len(label_file.read_text(encoding="utf-8").splitlines())
    before = locale.setlocale(locale.LC_CTYPE)
    try:
        locale.setlocale(locale.LC_CTYPE, "C")
        if locale.getencoding().lower().replace("-", "") in ("utf8", "utf"):
            pytest.skip("the C locale is UTF-8 here")
        read(root, classes=["neu"])
    finally:
        locale.setlocale(locale.LC_CTYPE, before)
    assert corpus_warnings(caplog) == [
        f"{label_file}:{number}: unexpected line 'note de Renée' ignored (not a summary, evaluator or header line)"
    ]


def test_an_unreadable_label_file_is_named(tmp_path):
    from gmptl.corpora.iemocap import parse_emo_evaluation

    unreadable = tmp_path / "Ses01F_impro01.txt"
    unreadable.mkdir()  # reading it fails with an OSError, even for root (whom file permissions do not stop)
    with pytest.raises(OSError) as cause:
        unreadable.read_text(encoding="utf-8")
    with pytest.raises(CorpusError) as error:
        parse_emo_evaluation(unreadable)
    assert str(error.value) == f"label file '{unreadable}' cannot be read ({cause.value})"
