"""The IEMOCAP reader: every quirk of the real layout, row by row, and every bad input."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import write_label_file, write_tree, write_wav

from gmptl.corpus import MANIFEST_COLUMNS, build_manifest, count_table, full_release_differences
from gmptl.errors import AudioError, CorpusError

CLASSES = ["neu", "hap", "ang", "sad"]
LABEL_MAP = {"neu": "neu", "hap": "hap", "exc": "hap", "ang": "ang", "sad": "sad"}


def read(root, sessions=(1,), **kwargs):
    return build_manifest(root, list(sessions), LABEL_MAP, CLASSES, **kwargs)


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
    assert read(root)["duration_s"].iloc[0] == pytest.approx(2.345, abs=1e-4)


def test_label_map_is_configurable(tree):
    manifest = build_manifest(tree, [1], {"neu": "calm", "ang": "aroused", "hap": "aroused"}, ["calm", "aroused"])
    assert set(manifest["emotion"]) == {"calm", "aroused"}
    assert (manifest["emotion"] == "aroused").sum() == 8


def test_other_rate_or_channels_are_converted_or_rejected_by_name(tmp_path):
    root = write_tree(tmp_path / "c", {1: {"Ses01F_impro01": [("Ses01F_impro01_F000", "neu")]}})
    wav = root / "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav"
    write_wav(wav, 1.0, rate=44100, channels=2)
    manifest = read(root, on_format_mismatch="convert")
    assert manifest["duration_s"].iloc[0] == pytest.approx(1.0)
    with pytest.raises(AudioError, match=r"Ses01F_impro01_F000\.wav.*44100 Hz with 2 channel"):
        read(root, on_format_mismatch="error")


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
    assert read(root)["utt_id"].tolist() == ["Ses01F_impro01_F000"]


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
