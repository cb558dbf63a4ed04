"""Emotion over time: a recording cut into segments, one row per segment, streamed in bounded memory.

`timeline(model, inputs)` returns one row per segment of every recording, in time order, covering it whole:

    file         the file as found (an input, a file under an input folder, or a line of an @list)
    start_s      segment start in seconds
    end_s        segment end in seconds
    speech       True for speech, False for a stretch without speech (it gets no emotion); empty when the
                 segments are not found by voice-activity detection (`segments` 'windows' or 'file')
    emotion      the class with the highest score (empty on non-speech rows)
    score_<c>    class probabilities in the model's class order (mean over fold models for an ensemble)
    error        empty, or why the file gave no timeline (then its only row, other columns empty)

How a recording is cut (`segments`):

- 'vad': silero-vad (the model shipped inside the `silero-vad` wheel, never downloaded) finds speech with
  `VadOptions`; a speech segment longer than `max_segment_s` is split into equal pieces no longer than it
  (the model was trained on utterance-length inputs); the stretches between are non-speech rows.
- 'windows': windows of `window_s` every `hop_s` seconds (as `gmptl predict --window`).
- 'file': the whole recording as one segment.

A file is decoded twice, block by block (`audio.stream_audio`): once at 16 kHz for the detector, once at the
model's rate for scoring, holding only the segments being scored; memory does not grow with its length.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .audio import NonFiniteAudioError, stream_audio
from .batching import length_batches
from .errors import AudioError, ConfigError
from .predict import (
    Predictor,
    check_decoded_length,
    check_windows,
    ensemble_probs,
    expand_inputs,
    load_predictor,
    pick_device,
    probe,
    unusable,
    window_bounds,
)

log = logging.getLogger(__name__)

VAD_RATE = 16000  # silero-vad runs at 8 or 16 kHz; the detector always hears 16 kHz
VAD_CHUNK = 512  # samples per speech probability at 16 kHz (32 ms), as silero-vad requires
SEGMENT_MODES = ("vad", "windows", "file")
STREAM_BLOCK = 1 << 18  # frames decoded at a time (16 s at 16 kHz)


@dataclass(frozen=True)
class VadOptions:
    """silero-vad's settings (its own defaults, except a longer `min_silence_s` so phrases stay whole)."""

    threshold: float = 0.5  # speech probability above which a 32 ms chunk is speech
    min_speech_s: float = 0.25  # shorter speech bursts are dropped (they become non-speech)
    min_silence_s: float = 0.3  # shorter pauses do not end a speech segment
    speech_pad_s: float = 0.03  # each speech segment is widened by this much on both sides

    def check(self) -> None:
        if not 0 < self.threshold < 1:
            raise ConfigError(f"--vad-threshold {self.threshold} must lie strictly between 0 and 1")
        for option, value in (
            ("--min-speech", self.min_speech_s),
            ("--min-silence", self.min_silence_s),
            ("--speech-pad", self.speech_pad_s),
        ):
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{option} {value} must be a finite number of seconds ≥ 0")


@dataclass
class Segment:
    start: int  # samples at the model's rate
    end: int
    speech: bool | None
    probs: np.ndarray | None = None


def load_vad():
    """silero-vad's TorchScript model, from the files inside the installed package (no network)."""
    try:
        from silero_vad import load_silero_vad
    except ImportError as err:
        raise ConfigError(
            "--segments vad needs the silero-vad package: pip install silero-vad (or gmptl[timeline])"
        ) from err
    return load_silero_vad(onnx=False)


@torch.no_grad()
def speech_spans(path: str, vad_model, options: VadOptions, bar: tqdm) -> list[tuple[float, float]]:
    """(start_s, end_s) of every speech segment silero-vad finds in `path`, decoded at 16 kHz block by block."""
    from silero_vad import get_speech_timestamps_from_probs

    vad_model.reset_states()
    probs: list[float] = []  # one float per 32 ms: 0.9 MB per hour, the only thing kept
    carry = np.zeros(0, dtype=np.float32)
    total = 0
    for block in stream_audio(path, VAD_RATE, STREAM_BLOCK):
        total += len(block)
        carry = np.concatenate([carry, block])
        whole = len(carry) - len(carry) % VAD_CHUNK
        for start in range(0, whole, VAD_CHUNK):
            probs.append(float(vad_model(torch.from_numpy(carry[start : start + VAD_CHUNK]), VAD_RATE)))
        carry = carry[whole:]
        bar.update(len(block) / VAD_RATE / 2)
    if len(carry):  # the last chunk, zero-padded as silero-vad's own get_speech_timestamps does
        chunk = np.pad(carry, (0, VAD_CHUNK - len(carry)))
        probs.append(float(vad_model(torch.from_numpy(chunk), VAD_RATE)))
    finite = np.isfinite(probs)
    if not finite.all():  # the detector's state overflowed: every later chunk would read as non-speech
        at = int(np.argmin(finite)) * VAD_CHUNK / VAD_RATE
        detail = f"drives silero-vad's speech probability to a non-finite value from {at:.2f} s (extreme samples?)"
        raise NonFiniteAudioError(path, detail)
    stamps = get_speech_timestamps_from_probs(
        probs,
        sampling_rate=VAD_RATE,
        threshold=options.threshold,
        min_speech_duration_ms=round(1000 * options.min_speech_s),
        min_silence_duration_ms=round(1000 * options.min_silence_s),
        speech_pad_ms=round(1000 * options.speech_pad_s),
        audio_length_samples=total,
    )
    return [(stamp["start"] / VAD_RATE, stamp["end"] / VAD_RATE) for stamp in stamps]


def split_evenly(start: int, end: int, longest: int) -> list[tuple[int, int]]:
    """[start, end) as the fewest equal pieces no longer than `longest` samples."""
    pieces = max(1, math.ceil((end - start) / longest))
    bounds = [start + round(i * (end - start) / pieces) for i in range(pieces + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def vad_segments(spans_s: list[tuple[float, float]], samples: int, rate: int, longest: int) -> list[Segment]:
    """Speech pieces (spans cut to at most `longest` samples) and the non-speech stretches between, covering it all."""
    segments, cursor = [], 0
    for start_s, end_s in spans_s:
        start, end = max(cursor, round(start_s * rate)), min(samples, round(end_s * rate))
        if end <= start:
            continue
        if start > cursor:
            segments.append(Segment(cursor, start, False))
        segments += [Segment(a, b, True) for a, b in split_evenly(start, end, longest)]
        cursor = end
    if cursor < samples:
        segments.append(Segment(cursor, samples, False))
    return segments


def model_input(segment: Segment, samples: int, shortest: int) -> tuple[int, int]:
    """The samples the model hears for `segment`: itself, widened about its centre to the model's shortest input."""
    if segment.end - segment.start >= shortest:
        return segment.start, segment.end
    centre = (segment.start + segment.end) // 2
    start = min(max(0, centre - shortest // 2), max(0, samples - shortest))
    return start, min(samples, start + shortest)


def score_stream(
    path: str,
    predictor: Predictor,
    segments: list[Segment],
    samples: int,
    *,
    device: torch.device,
    precision: str,
    batch_seconds: float,
    bar: tqdm,
    share: float,
) -> None:
    """Fill `probs` of every segment with `speech` not False, decoding `path` once and keeping only what is pending."""
    wanted = sorted(
        ((i, *model_input(s, samples, predictor.min_samples)) for i, s in enumerate(segments) if s.speech is not False),
        key=lambda item: item[1],
    )
    budget = batch_seconds * predictor.sample_rate
    buffer, buffer_start, next_wanted = np.zeros(0, dtype=np.float32), 0, 0
    pending: list[tuple[int, np.ndarray]] = []
    pending_samples = 0

    def flush() -> None:
        lengths = np.asarray([len(wave) for _, wave in pending])
        for batch in length_batches(lengths, budget):
            waves = [pending[j][1] for j in batch]
            for j, probs in zip(batch, ensemble_probs(predictor, waves, device, precision), strict=True):
                segments[pending[j][0]].probs = probs
        pending.clear()

    for block in stream_audio(path, predictor.sample_rate, STREAM_BLOCK):
        buffer = np.concatenate([buffer, block])
        buffer_end = buffer_start + len(buffer)
        while next_wanted < len(wanted) and wanted[next_wanted][2] <= buffer_end:
            i, start, end = wanted[next_wanted]
            pending.append((i, buffer[start - buffer_start : end - buffer_start].copy()))
            pending_samples += end - start
            next_wanted += 1
            if pending_samples >= budget:  # never more than --batch-seconds of copies waiting
                flush()
                pending_samples = 0
        keep_from = min(wanted[next_wanted][1], buffer_end) if next_wanted < len(wanted) else buffer_end
        buffer, buffer_start = buffer[keep_from - buffer_start :], keep_from
        bar.update(len(block) / predictor.sample_rate * share)
    check_decoded_length(path, samples, buffer_start + len(buffer), predictor)
    for i, start, _ in wanted[next_wanted:]:  # a decoder may stop a few samples short of the header's length
        wave = buffer[max(0, start - buffer_start) :]
        pending.append((i, wave.copy() if len(wave) >= predictor.min_samples else buffer[-predictor.min_samples :]))
    if pending:
        flush()


def smoothed(segments: list[Segment], neighbours: int) -> None:
    """Each speech segment's scores become the duration-weighted mean over itself and `neighbours` speech
    segments on each side (non-speech rows are skipped over, not averaged in)."""
    speech = [s for s in segments if s.probs is not None]
    raw = [s.probs for s in speech]
    for k, segment in enumerate(speech):
        near = range(max(0, k - neighbours), min(len(speech), k + neighbours + 1))
        weights = np.asarray([speech[j].end - speech[j].start for j in near], dtype=np.float64)
        segment.probs = np.average(np.stack([raw[j] for j in near]), axis=0, weights=weights).astype(np.float32)


def output_columns(classes: list[str]) -> list[str]:
    return ["file", "start_s", "end_s", "speech", "emotion", *[f"score_{c}" for c in classes], "error"]


def file_rows(path: str, segments: list[Segment], classes: list[str], rate: int) -> list[dict]:
    rows = []
    for s in segments:
        row = {"file": path, "start_s": s.start / rate, "end_s": s.end / rate, "speech": s.speech}
        if s.probs is not None:
            row["emotion"] = classes[int(np.argmax(s.probs))]
            row.update({f"score_{c}": float(p) for c, p in zip(classes, s.probs, strict=True)})
        rows.append(row)
    return rows


def check_options(segments: str, max_segment_s: float, smooth: int, predictor: Predictor) -> int:
    """The longest speech piece in samples; bad values are a `ConfigError` naming the option."""
    if segments not in SEGMENT_MODES:
        raise ConfigError(f"--segments {segments!r} is not one of {', '.join(SEGMENT_MODES)}")
    if not (math.isfinite(max_segment_s) and max_segment_s * predictor.sample_rate >= predictor.min_samples):
        raise ConfigError(f"--max-segment {max_segment_s} must be a number of seconds the model can score")
    if smooth < 0:
        raise ConfigError(f"--smooth {smooth} must be ≥ 0 (0 = no smoothing)")
    return round(max_segment_s * predictor.sample_rate)


def timeline(
    model: Predictor | str | os.PathLike,
    inputs: Iterable[str | os.PathLike],
    *,
    fold: int | None = None,
    segments: str = "vad",
    vad: VadOptions = VadOptions(),
    max_segment_s: float = 10.0,
    window_s: float | None = None,
    hop_s: float | None = None,
    smooth: int = 0,
    device: str = "auto",
    precision: str = "auto",
    batch_seconds: float = 120.0,
    progress: bool = False,
) -> pd.DataFrame:
    """Segment rows of every recording in `inputs` (columns in the module docstring), scored with `model`
    (a `Predictor`, a model folder or an experiment's results folder, see `predict.find_models`)."""
    if isinstance(model, Predictor) and fold is not None:
        raise ValueError("timeline: pass `fold` to load_predictor, not with a loaded Predictor")
    vad.check()
    predictor = model if isinstance(model, Predictor) else load_predictor(model, fold)
    rate = predictor.sample_rate
    longest = check_options(segments, max_segment_s, smooth, predictor)
    windows = check_windows(window_s, hop_s, predictor) if segments == "windows" else None
    if segments == "windows" and windows is None:
        raise ConfigError("--segments windows needs --window S")
    if segments != "windows" and (window_s is not None or hop_s is not None):
        raise ConfigError(f"--window and --hop cut windows; with --segments {segments} they would be ignored")
    vad_model = load_vad() if segments == "vad" else None
    torch_device = pick_device(device)
    for m in predictor.models:
        m.to(torch_device)
    rows: list[dict] = []
    for path, problem in expand_inputs(inputs):
        samples = 0
        if problem is None:
            _, samples, problem = probe(path, rate, predictor.min_samples)
        if problem is None:
            try:
                rows += file_timeline(
                    path,
                    predictor,
                    samples,
                    segments,
                    vad_model,
                    vad,
                    longest,
                    windows,
                    smooth,
                    device=torch_device,
                    precision=precision,
                    batch_seconds=batch_seconds,
                    progress=progress,
                )
                continue
            except AudioError as err:
                problem = unusable(err)
        log.warning("skipped '%s': %s", path, problem)
        rows.append({"file": path, "error": problem})
    table = pd.DataFrame(rows, columns=output_columns(predictor.classes))
    table["speech"] = table["speech"].astype("boolean")
    return table


def file_timeline(
    path: str,
    predictor: Predictor,
    samples: int,
    mode: str,
    vad_model,
    vad: VadOptions,
    longest: int,
    windows: tuple[int, int] | None,
    smooth: int,
    *,
    device: torch.device,
    precision: str,
    batch_seconds: float,
    progress: bool,
) -> list[dict]:
    """One recording's segment rows; an unusable stretch of audio is an `AudioError`."""
    rate = predictor.sample_rate
    bar = tqdm(total=round(samples / rate, 1), unit="s", desc=os.path.basename(path), disable=not progress, leave=False)
    with bar:
        if mode == "vad":
            spans = speech_spans(path, vad_model, vad, bar)
            cut = vad_segments(spans, samples, rate, longest)
        elif mode == "windows":
            cut = [Segment(a, b, None) for a, b in window_bounds(samples, *windows)]
        else:
            cut = [Segment(0, samples, None)]
        share = 0.5 if mode == "vad" else 1.0
        score_stream(
            path,
            predictor,
            cut,
            samples,
            device=device,
            precision=precision,
            batch_seconds=batch_seconds,
            bar=bar,
            share=share,
        )
    scored = [s.probs for s in cut if s.probs is not None]
    if scored and not np.isfinite(np.stack(scored)).all():
        return [{"file": path, "error": "the model's scores of it are not finite (its samples reach extreme values?)"}]
    if smooth:
        smoothed(cut, smooth)
    return file_rows(path, cut, predictor.classes, rate)
