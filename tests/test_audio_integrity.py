"""Non-finite audio (NaN / Inf samples in float files) is refused wherever audio enters: manifest, loader."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile as sf
from conftest import write_tree

import gmptl.audio
from gmptl.audio import NonFiniteAudioError, checked_audio_info, load_audio
from gmptl.corpus import build_manifest
from gmptl.data import load_batch, split_utterances
from gmptl.errors import AudioError
from gmptl.settings import AudioSettings

CLASSES = ["neu", "hap", "ang", "sad"]
LABEL_MAP = {"neu": "neu", "hap": "hap", "exc": "hap", "ang": "ang", "sad": "sad"}
UTT = "Ses01F_impro01_F001"


def float_wav(path, seconds: float = 1.0, bad: dict[int, float] | None = None, subtype: str = "FLOAT", channels=1):
    """A float wav of low noise; `bad` maps frame → value written into its last channel."""
    data = (0.1 * np.random.default_rng(0).standard_normal((int(seconds * 16000), channels))).astype(np.float32)
    for frame, value in (bad or {}).items():
        data[frame, -1] = value
    sf.write(path, data, 16000, subtype=subtype)


def wav_of(tree, utt: str = UTT):
    return tree / "Session1/sentences/wav/Ses01F_impro01" / f"{utt}.wav"


# --- manifest ------------------------------------------------------------------------------------


def test_manifest_refuses_a_nan_wav_naming_it_and_the_time(tree):
    float_wav(wav_of(tree), bad={8000: np.nan})
    with pytest.raises(
        AudioError, match=rf"{UTT}\.wav' holds a non-finite sample \(nan\) at 0\.500 s .*on_missing_audio"
    ):
        build_manifest(tree, [1], LABEL_MAP, CLASSES)


def test_manifest_refuses_one_inf_sample_of_a_double_wav(tree):
    float_wav(wav_of(tree), bad={15999: -np.inf}, subtype="DOUBLE")
    with pytest.raises(AudioError, match=r"non-finite sample \(-inf\) at 1\.000 s \(frame 15999\)"):
        build_manifest(tree, [1], LABEL_MAP, CLASSES)


def test_a_nan_wav_is_skipped_logged_by_id_and_counted_under_skip(tree, caplog):
    float_wav(wav_of(tree), bad={100: np.nan})
    with caplog.at_level(logging.WARNING):
        manifest = build_manifest(tree, [1], LABEL_MAP, CLASSES, on_missing_audio="skip")
    assert UTT not in set(manifest["utt_id"]) and len(manifest) == 15
    assert f"{UTT}: its audio holds a non-finite sample (nan)" in caplog.text
    assert "skipped 1 labelled utterance" in caplog.text


def test_a_finite_float_wav_is_kept(tree):
    float_wav(wav_of(tree))
    assert UTT in set(build_manifest(tree, [1], LABEL_MAP, CLASSES)["utt_id"])


def test_the_check_finds_a_bad_sample_in_a_later_block_at_its_true_time(tmp_path, monkeypatch):
    monkeypatch.setattr(gmptl.audio, "CHECK_BLOCK", 1000)
    float_wav(tmp_path / "x.wav", bad={12345: np.nan})
    with pytest.raises(NonFiniteAudioError, match=r"at 0\.772 s \(frame 12345\)"):
        checked_audio_info(tmp_path / "x.wav")


def test_integer_pcm_files_are_not_decoded_by_the_manifest_check(tmp_path, monkeypatch):
    sf.write(tmp_path / "x.wav", np.zeros(1600, dtype=np.int16), 16000, subtype="PCM_16")

    def no_decode(*args, **kwargs):
        raise AssertionError("a PCM file was decoded")

    monkeypatch.setattr(gmptl.audio.sf, "blocks", no_decode)
    assert checked_audio_info(tmp_path / "x.wav").frames == 1600


# --- loader --------------------------------------------------------------------------------------


def test_load_audio_refuses_nan_in_one_channel_of_a_stereo_file(tmp_path):
    float_wav(tmp_path / "x.wav", bad={4000: np.nan}, channels=2)
    with pytest.raises(NonFiniteAudioError, match=r"'.*x\.wav' holds a non-finite sample \(nan\) at 0\.250 s"):
        load_audio(tmp_path / "x.wav", 16000)


def test_the_training_loader_refuses_a_nan_file(tmp_path):
    root = write_tree(tmp_path / "c", {1: {"Ses01F_impro01": [("Ses01F_impro01_F000", "neu")]}}, seconds=0.5)
    table = build_manifest(root, [1], {"neu": "neu"}, ["neu"]).assign(split="train")
    float_wav(table["path"][0], seconds=0.5, bad={10: np.inf})  # damaged after the manifest was built
    data = split_utterances(table, "train", ["neu"])
    with pytest.raises(NonFiniteAudioError, match=r"Ses01F_impro01_F000\.wav' holds a non-finite sample \(inf\)"):
        load_batch(data, np.arange(1), AudioSettings(16000, "convert"))
