"""`gmptl predict --timeline`: silero-vad segments of real (espeak-ng) speech, streamed scoring, pictures, bad input."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import soxr
from browser import CHROMIUM, dump_dom, rendered
from conftest import write_wav
from test_predict import CLASSES, SCORES, random_model, voice_like

from gmptl.cli import main
from gmptl.errors import ConfigError
from gmptl.predict import load_predictor, predict_files
from gmptl.timeline import Segment, VadOptions, smoothed, split_evenly, timeline, vad_segments
from gmptl.timeline_report import time_shares, timeline_page

pytest.importorskip("silero_vad")


def find_espeak() -> str | None:
    """espeak-ng on PATH; as root with apt, installed first (Debian's package, a few MB)."""
    if shutil.which("espeak-ng") is None and os.geteuid() == 0 and shutil.which("apt-get"):
        command = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "espeak-ng"]
        subprocess.run(command, capture_output=True, timeout=600, check=False)
    return shutil.which("espeak-ng")


ESPEAK = find_espeak()
needs_espeak = pytest.mark.skipif(ESPEAK is None, reason="espeak-ng is not on PATH (Debian: apt-get install espeak-ng)")
COLUMNS = ["file", "start_s", "end_s", "speech", "emotion", *SCORES, "error"]
SENTENCES = [
    "The quick brown fox jumps over the lazy dog",
    "I cannot believe you did that again",
    "Please bring me the red book from the top shelf",
    "We will meet at the station tomorrow morning",
]


@pytest.fixture(scope="module")
def model_dir(tiny_backbone, tmp_path_factory):
    out = tmp_path_factory.mktemp("timeline") / "model"
    random_model(tiny_backbone, out, seed=1)
    return out


@pytest.fixture(scope="module")
def predictor(model_dir):
    return load_predictor(model_dir)


def spoken(sentence: str, rate: int = 16000) -> np.ndarray:
    """espeak-ng's rendering of `sentence` at `rate`, its own leading and trailing silence cut off."""
    wav = subprocess.run([ESPEAK, "--stdout", sentence], capture_output=True, check=True, timeout=60).stdout
    wave, source_rate = sf.read(io.BytesIO(wav), dtype="float32")
    wave = soxr.resample(wave, source_rate, rate)
    loud = np.flatnonzero(np.abs(wave) > 0.01 * np.abs(wave).max())
    return wave[loud[0] : loud[-1] + 1]


def call(gaps_s: list[float], rate: int = 16000) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Sentences joined by silences of known length (gaps_s[0] before the first, one after each):
    the audio and the known (start_s, end_s) of every sentence."""
    parts, known, cursor = [np.zeros(round(gaps_s[0] * rate), np.float32)], [], gaps_s[0]
    for sentence, gap in zip(SENTENCES, gaps_s[1:], strict=True):
        wave = spoken(sentence, rate)
        known.append((cursor, cursor + len(wave) / rate))
        parts += [wave, np.zeros(round(gap * rate), np.float32)]
        cursor += len(wave) / rate + gap
    return np.concatenate(parts), known


@needs_espeak
def test_vad_finds_each_spoken_sentence_within_a_quarter_second_and_covers_the_recording(predictor, tmp_path):
    wave, known = call([0.8, 1.0, 1.6, 0.6, 1.3])
    sf.write(tmp_path / "call.wav", wave, 16000, subtype="PCM_16")
    table = timeline(predictor, [tmp_path / "call.wav"])
    assert list(table.columns) == COLUMNS and table["error"].isna().all()
    speech = table[table["speech"] == True]  # noqa: E712 (a nullable boolean column)
    assert len(speech) == len(known)  # one row per sentence: none merged, none split
    for (start, end), (_, row) in zip(known, speech.iterrows(), strict=True):
        assert abs(row["start_s"] - start) <= 0.25 and abs(row["end_s"] - end) <= 0.25
        assert row["emotion"] in CLASSES and row[SCORES].sum() == pytest.approx(1, abs=1e-5)
    pauses = table[table["speech"] == False]  # noqa: E712
    assert len(pauses) == len(known) + 1 and pauses["emotion"].isna().all() and pauses[SCORES].isna().all().all()
    assert table["start_s"].iloc[0] == 0 and table["end_s"].iloc[-1] == pytest.approx(len(wave) / 16000)
    np.testing.assert_allclose(table["start_s"].to_numpy()[1:], table["end_s"].to_numpy()[:-1])  # no gap, no overlap


@needs_espeak
def test_a_stereo_44k_copy_gives_the_same_segments(predictor, tmp_path):
    wave, _ = call([0.5, 0.9, 1.2, 0.7, 0.5])
    sf.write(tmp_path / "mono.wav", wave, 16000, subtype="PCM_16")
    high = soxr.resample(wave, 16000, 44100)
    sf.write(tmp_path / "stereo.flac", np.stack([high, 0.5 * high], axis=1), 44100, subtype="PCM_24")
    table = timeline(predictor, [tmp_path / "mono.wav", tmp_path / "stereo.flac"])
    mono, stereo = (table[table["file"] == str(tmp_path / name)] for name in ("mono.wav", "stereo.flac"))
    assert list(mono["speech"]) == list(stereo["speech"])
    np.testing.assert_allclose(mono["start_s"], stereo["start_s"], atol=0.07)


def test_silence_only_is_one_non_speech_row_and_noise_gets_no_emotion(predictor, tmp_path):
    sf.write(tmp_path / "quiet.wav", np.zeros(48000, np.float32), 16000)
    table = timeline(predictor, [tmp_path / "quiet.wav"])
    assert len(table) == 1 and table["speech"].iloc[0] == False and pd.isna(table["emotion"].iloc[0])  # noqa: E712
    assert table["end_s"].iloc[0] == 3.0


def test_split_evenly_gives_the_fewest_equal_pieces_no_longer_than_asked():
    assert split_evenly(0, 100, 100) == [(0, 100)]
    assert split_evenly(10, 260, 100) == [(10, 93), (93, 177), (177, 260)]
    pieces = split_evenly(0, 16000 * 25, 16000 * 10)
    assert len(pieces) == 3 and max(b - a for a, b in pieces) <= 160000 and pieces[-1][1] == 400000


def test_vad_segments_cover_the_recording_and_cut_long_speech(tmp_path):
    segments = vad_segments([(0.5, 1.0), (0.9, 26.0), (29.0, 31.0)], 30 * 100, 100, 10 * 100)
    bounds = [(s.start, s.end, s.speech) for s in segments]
    assert bounds[0] == (0, 50, False) and bounds[1] == (50, 100, True)  # overlapping spans do not overlap
    speech = [b for b in bounds if b[2]]
    assert all(end - start <= 1000 for start, end, _ in speech) and len(speech) == 1 + 3 + 1
    assert bounds[-1] == (2900, 3000, True)  # clipped at the recording's end
    assert [b[0] for b in bounds[1:]] == [b[1] for b in bounds[:-1]]


def test_windows_and_file_segments_score_exactly_as_predict_does(predictor, model_dir, tmp_path):
    halves = [voice_like(1.75, seed=3), 0.1 * np.random.default_rng(3).standard_normal(28000).astype(np.float32)]
    sf.write(tmp_path / "long.wav", np.concatenate(halves), 16000)
    # a small batch budget: the streamed scorer cuts windows from several decoded blocks
    streamed = timeline(
        predictor, [tmp_path / "long.wav"], segments="windows", window_s=1.0, hop_s=0.5, batch_seconds=2
    )
    whole = predict_files(predictor, [tmp_path / "long.wav"], window_s=1.0, hop_s=0.5).iloc[1:]
    assert list(streamed["start_s"]) == list(whole["start_s"]) and streamed["speech"].isna().all()
    np.testing.assert_allclose(streamed[SCORES].to_numpy(float), whole[SCORES].to_numpy(float), atol=1e-5)
    one = timeline(predictor, [tmp_path / "long.wav"], segments="file")
    np.testing.assert_allclose(
        one[SCORES].to_numpy(float), predict_files(predictor, [tmp_path / "long.wav"])[SCORES].to_numpy(float), 1e-5
    )


def test_smoothing_is_a_duration_weighted_mean_over_speech_neighbours():
    probs = [np.array([1.0, 0.0]), None, np.array([0.0, 1.0]), np.array([0.5, 0.5])]
    spans = [(0, 10, True), (10, 20, False), (20, 50, True), (50, 60, True)]
    segments = [Segment(a, b, s, p) for (a, b, s), p in zip(spans, probs, strict=True)]
    smoothed(segments, 1)
    np.testing.assert_allclose(segments[0].probs, [10 / 40, 30 / 40])  # itself and the next speech segment
    np.testing.assert_allclose(segments[2].probs, [(10 + 5) / 50, (30 + 5) / 50])
    assert segments[1].probs is None


def test_bad_files_get_one_row_each_and_the_rest_are_scored(model_dir, tmp_path, capsys):
    folder = tmp_path / "calls"
    folder.mkdir()
    sf.write(folder / "good.wav", voice_like(2.0, seed=1), 16000)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 10)
    (folder / "empty.wav").write_bytes(b"")
    write_wav(folder / "tiny.wav", 0.005)
    out = tmp_path / "out" / "calls.tsv"
    status = main(["predict", "--model", str(model_dir), "--timeline", "-o", str(out), str(folder)])
    assert status == 1
    table = pd.read_csv(out, sep="\t")
    errors = table.set_index("file")["error"]
    assert errors[str(folder / "corrupt.wav")].startswith("cannot be read as audio")
    assert errors[str(folder / "empty.wav")] == "the file is empty (0 bytes)"
    assert "the model needs at least" in errors[str(folder / "tiny.wav")]
    assert table[table["file"] == str(folder / "good.wav")]["error"].isna().all()
    assert sorted(p.name for p in (tmp_path / "out" / "calls_plots").iterdir()) == ["good.png"]
    page = (tmp_path / "out" / "calls.html").read_text()
    assert page.count('class="recording"') == 1 and "empty.wav: the file is empty" in page
    err = capsys.readouterr().err
    assert "skipped '" + str(folder / "corrupt.wav") + "'" in err and "3 input(s) failed" in err


def test_a_nan_sample_mid_file_is_refused_with_its_time(predictor, tmp_path):
    wave = voice_like(3.0, seed=2)
    wave[32000] = np.nan
    sf.write(tmp_path / "nan.wav", wave, 16000, subtype="FLOAT")
    table = timeline(predictor, [tmp_path / "nan.wav"])
    assert len(table) == 1 and "non-finite sample (nan) at 2.000 s" in table["error"].iloc[0]


def test_bad_options_name_the_option(model_dir, predictor, tmp_path):
    write_wav(tmp_path / "a.wav", 1.0)
    with pytest.raises(ConfigError, match="--segments windows needs --window"):
        timeline(predictor, [tmp_path / "a.wav"], segments="windows")
    with pytest.raises(ConfigError, match="--vad-threshold 1.5"):
        timeline(predictor, [tmp_path / "a.wav"], vad=VadOptions(threshold=1.5))
    with pytest.raises(ConfigError, match="--min-silence -1"):
        timeline(predictor, [tmp_path / "a.wav"], vad=VadOptions(min_silence_s=-1))
    with pytest.raises(ConfigError, match="--smooth -1"):
        timeline(predictor, [tmp_path / "a.wav"], smooth=-1)
    with pytest.raises(ConfigError, match="--max-segment 0.0001"):
        timeline(predictor, [tmp_path / "a.wav"], max_segment_s=0.0001)
    with pytest.raises(ConfigError, match="with --segments vad they would be ignored"):
        timeline(predictor, [tmp_path / "a.wav"], window_s=1.0)
    assert main(["predict", "--model", str(model_dir), "--segments", "vad", str(tmp_path / "a.wav")]) == 2


def test_time_shares_sum_to_one_and_count_silence():
    rows = pd.DataFrame({"start_s": [0, 1, 3], "end_s": [1, 3, 4], "emotion": [None, "hap", "sad"], "file": ["f"] * 3})
    shares = time_shares(rows, CLASSES)
    assert shares == {"neu": 0.0, "hap": 0.5, "ang": 0.0, "sad": 0.25, "no speech": 0.25}


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH (Debian: apt-get install chromium)")
@needs_espeak
def test_the_page_shows_a_timeline_per_file_and_a_click_seeks_the_audio(predictor, tmp_path):
    for name, gaps in (("first.wav", [0.4, 0.8, 1.1, 0.9, 0.4]), ("second.wav", [1.2, 0.7, 0.9, 1.4, 0.2])):
        sf.write(tmp_path / name, call(gaps)[0], 16000, subtype="PCM_16")
    table = timeline(predictor, [tmp_path / "first.wav", tmp_path / "second.wav"])
    page = timeline_page(table, CLASSES)
    second = table[table["file"] == str(tmp_path / "second.wav")].reset_index(drop=True)
    target = int(second.index[second["speech"] == True][2])  # noqa: E712 (the third sentence of the second file)
    click = f"""<script>
    setTimeout(function () {{
      document.getElementById('seg-1-{target}').dispatchEvent(new MouseEvent('click', {{bubbles: true}}));
      setTimeout(function () {{
        var p = document.createElement('p'); p.id = 'probe';
        p.textContent = 'at ' + document.getElementById('player-1').currentTime.toFixed(3) + ' of ' +
          document.getElementById('player-1').duration.toFixed(3) + ' first ' +
          document.getElementById('player-0').currentTime.toFixed(3);
        document.body.appendChild(p);
      }}, 500);
    }}, 500);
    </script></body>"""
    (tmp_path / "page.html").write_text(page.replace("</body>", click), encoding="utf-8")
    dom = dump_dom(tmp_path / "page.html")
    screen = rendered(dom)
    assert screen.count('<svg class="timeline"') == 2 and screen.count("<audio") == 2
    assert len(re.findall(r'<rect class="segment[ "]', screen)) == len(table)
    probe = re.search(r'<p id="probe">at ([\d.]+) of ([\d.]+) first ([\d.]+)</p>', dom)
    assert probe is not None, "the probe script did not run"
    assert float(probe.group(1)) == pytest.approx(second["start_s"][target], abs=1e-3)
    assert float(probe.group(2)) == pytest.approx(second["end_s"].iloc[-1], abs=0.05)  # the embedded audio decodes
    assert float(probe.group(3)) == 0.0  # the other file's player did not move
    assert f'id="seg-1-{target}" ' in dom and "segment current" in dom
    assert "share of time" in screen and "no speech" in screen


@needs_espeak
@pytest.mark.parametrize("block", [1 << 18, 3000])
def test_each_speech_segment_is_scored_on_its_own_audio_across_block_seams(predictor, tmp_path, monkeypatch, block):
    monkeypatch.setattr("gmptl.timeline.STREAM_BLOCK", block)  # 3000 frames: segments and pauses span many blocks
    wave, _ = call([0.3, 17.0, 0.4, 18.5, 0.6])  # pauses longer than a default block (16 s)
    sf.write(tmp_path / "call.wav", wave, 16000, subtype="PCM_16")
    table = timeline(predictor, [tmp_path / "call.wav"], batch_seconds=3)
    speech = table[table["speech"] == True]  # noqa: E712
    assert len(speech) == 4
    decoded, _ = sf.read(tmp_path / "call.wav", dtype="float32")
    for k, (_, row) in enumerate(speech.iterrows()):
        piece = decoded[round(row["start_s"] * 16000) : round(row["end_s"] * 16000)]
        sf.write(tmp_path / f"piece{k}.wav", piece, 16000, subtype="FLOAT")
    alone = predict_files(predictor, [tmp_path / f"piece{k}.wav" for k in range(4)])
    np.testing.assert_allclose(speech[SCORES].to_numpy(float), alone[SCORES].to_numpy(float), atol=1e-5)


def test_a_file_decoding_short_of_its_header_is_one_error_row_not_a_crash(predictor, tmp_path, monkeypatch):
    import gmptl.predict
    import gmptl.timeline

    sf.write(tmp_path / "short.wav", voice_like(2.0, seed=5), 16000)
    sf.write(tmp_path / "good.wav", voice_like(2.0, seed=6), 16000)
    real = gmptl.predict.probe

    def longer_header(path, rate, shortest):  # as an MP3 whose frame count overstates its audio
        duration, samples, problem = real(path, rate, shortest)
        return (duration + 1, samples + rate, problem) if path.endswith("short.wav") else (duration, samples, problem)

    monkeypatch.setattr(gmptl.timeline, "probe", longer_header)
    monkeypatch.setattr(gmptl.predict, "probe", longer_header)
    message = "is truncated: its header declares 3.00 s of audio but it decodes to 2.00 s"
    for mode in ("windows", "file"):
        window = {"window_s": 1.0} if mode == "windows" else {}
        table = timeline(predictor, [tmp_path / "short.wav", tmp_path / "good.wav"], segments=mode, **window)
        assert list(table["error"].fillna("")).count(message) == 1 and table["emotion"].notna().sum() >= 1
    table = predict_files(predictor, [tmp_path / "short.wav", tmp_path / "good.wav"], window_s=1.0)
    assert table["error"].iloc[0] == message and table["error"].iloc[1:].isna().all()


def test_waiting_audio_never_exceeds_the_batch_budget_by_more_than_one_segment(predictor, tmp_path, monkeypatch):
    import gmptl.timeline

    sf.write(tmp_path / "long.wav", voice_like(20.0, seed=7), 16000)
    waiting, real = [], gmptl.timeline.length_batches

    def counting(lengths, budget):  # called once per flush, with every copy waiting to be scored
        waiting.append(float(np.sum(lengths)) / 16000)
        return real(lengths, budget)

    monkeypatch.setattr(gmptl.timeline, "length_batches", counting)
    table = timeline(predictor, [tmp_path / "long.wav"], segments="windows", window_s=1.0, hop_s=0.05, batch_seconds=2)
    assert len(table) == 381 and table["emotion"].notna().all()
    assert max(waiting) <= 2 + 1  # one 16 s block holds 320 windows (320 s of copies) without the bound


def test_one_extreme_sample_is_refused_not_read_as_silence_to_the_end(predictor, tmp_path):
    wave = voice_like(3.0, seed=2)
    wave[16000] = 1e20  # finite, but it drives the detector's recurrent state to NaN
    sf.write(tmp_path / "extreme.wav", wave, 16000, subtype="FLOAT")
    table = timeline(predictor, [tmp_path / "extreme.wav"])
    assert len(table) == 1 and "silero-vad's speech probability to a non-finite value" in table["error"].iloc[0]


def test_outputs_that_clash_or_would_replace_a_folder_fail_before_any_scoring(model_dir, tmp_path, monkeypatch):
    import gmptl.timeline

    sf.write(tmp_path / "a.wav", voice_like(1.0, seed=1), 16000)
    monkeypatch.setattr(gmptl.timeline, "timeline", lambda *a, **k: pytest.fail("scored before the paths were checked"))
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "notes.txt").write_text("x")
    base = ["predict", "--model", str(model_dir), "--timeline"]
    assert main([*base, "-o", str(tmp_path / "r.html"), str(tmp_path / "a.wav")]) == 2  # the page would be the TSV
    assert main([*base, "-o", str(tmp_path / "r.tsv"), "--html", str(tmp_path / "r.tsv"), str(tmp_path / "a.wav")]) == 2
    assert main([*base, "--html", str(keep), "-o", str(tmp_path / "t.tsv"), str(tmp_path / "a.wav")]) == 2
    assert main([*base, "--no-pictures", "--html", str(tmp_path / "p.html"), str(tmp_path / "a.wav")]) == 2
    assert main(["predict", "--model", str(model_dir), "-o", str(keep), str(tmp_path / "a.wav")]) == 2
    assert (keep / "notes.txt").read_text() == "x" and not (tmp_path / "r.tsv").exists()


def test_timeline_options_without_timeline_are_refused_not_ignored(model_dir, tmp_path, capsys):
    sf.write(tmp_path / "a.wav", voice_like(1.0, seed=1), 16000)
    for option in (["--smooth", "2"], ["--vad-threshold", "0.7"], ["--html-audio", "link"], ["--no-pictures"]):
        assert main(["predict", "--model", str(model_dir), *option, str(tmp_path / "a.wav")]) == 2
        assert f"{option[0]} belong(s) to --timeline" in capsys.readouterr().err


def test_linked_audio_keeps_hash_and_question_marks_in_file_names(predictor, tmp_path):
    for name in ("take#2.wav", "a?b.wav", "100%.wav"):
        sf.write(tmp_path / name, voice_like(1.0, seed=1), 16000)
    table = timeline(predictor, [tmp_path / n for n in ("take#2.wav", "a?b.wav", "100%.wav")], segments="file")
    page = timeline_page(table, CLASSES, audio="link", page=tmp_path / "page.html")
    for src in ('src="take%232.wav"', 'src="a%3Fb.wav"', 'src="100%25.wav"'):
        assert src in page
