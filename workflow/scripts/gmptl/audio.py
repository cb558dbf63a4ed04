"""Audio I/O with soundfile; resampling with soxr. Mono float32 at the backbone's rate."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from .errors import AudioError


@dataclass(frozen=True)
class AudioInfo:
    """What a wav header says, read without decoding."""

    sample_rate: int
    channels: int
    frames: int
    subtype: str = ""  # libsndfile's sample format (PCM_16, FLOAT …); "" when not read from a header

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE"})  # the only sample formats that can hold NaN or Inf
CHECK_BLOCK = 1 << 20  # frames decoded at a time when a float file is checked for non-finite samples


class TruncatedAudioError(AudioError):
    """A WAV file holds fewer data bytes than its header declares (libsndfile would silently trim it)."""

    def __init__(self, path: str | os.PathLike, detail: str):
        self.detail = detail
        super().__init__(f"audio file '{path}' is truncated: {detail}; re-copy it from the corpus")


class NonFiniteAudioError(AudioError):
    """A float audio file holds NaN or Inf samples (they would turn every score and loss into NaN)."""

    def __init__(self, path: str | os.PathLike, detail: str):
        self.detail = detail
        super().__init__(
            f"audio file '{path}' {detail}; re-export it from its source with finite samples, or remove it"
        )


def wav_data_sizes(path: str | os.PathLike) -> tuple[int, int] | None:
    """(declared, present) bytes of the `data` chunk of a RIFF/WAVE file; None for other files.

    None too when the header declares no usable size (0 or 0xFFFFFFFF, as streaming writers leave it).
    """
    with open(path, "rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        while True:
            chunk = handle.read(8)
            if len(chunk) < 8:
                return None
            name, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if name == b"data":
                if size in (0, 0xFFFFFFFF):
                    return None
                return size, os.fstat(handle.fileno()).st_size - handle.tell()
            handle.seek(size + (size & 1), os.SEEK_CUR)


def check_complete(path: str | os.PathLike, frames: int, rate: int) -> None:
    """A WAV whose `data` chunk is shorter than its header declares is a `TruncatedAudioError`.

    `frames` and `rate` are what libsndfile reports (it counts the frames present).
    """
    sizes = wav_data_sizes(path)
    if sizes is not None and sizes[1] < sizes[0]:
        declared, present = sizes
        seconds = frames / rate
        detail = f"its header declares {seconds * declared / present:.2f} s of audio but the file holds {seconds:.2f} s"
        raise TruncatedAudioError(path, detail)


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Sample rate, channels and length from the file header; a truncated WAV is an error."""
    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError) as err:
        raise AudioError(f"audio file '{path}' cannot be read ({err}); re-copy it from the corpus") from err
    if info.frames <= 0:
        raise AudioError(f"audio file '{path}' holds no samples; re-copy it from the corpus")
    check_complete(path, info.frames, info.samplerate)
    return AudioInfo(int(info.samplerate), int(info.channels), int(info.frames), str(info.subtype))


def first_non_finite(data: np.ndarray) -> tuple[int, float] | None:
    """(frame, value) of the first NaN or Inf sample of `data` (frames × channels), None when all are finite."""
    finite = np.isfinite(data)
    if finite.all():
        return None
    frame = int(np.argmin(finite.all(axis=1)))
    return frame, float(data[frame][~finite[frame]][0])


def check_finite(path: str | os.PathLike, data: np.ndarray, rate: int, offset: int = 0) -> None:
    """Decoded samples (frames × channels, starting at frame `offset`) with NaN or Inf are a `NonFiniteAudioError`."""
    bad = first_non_finite(data)
    if bad is not None:
        frame, value = bad[0] + offset, bad[1]
        raise NonFiniteAudioError(path, f"holds a non-finite sample ({value}) at {frame / rate:.3f} s (frame {frame})")


def check_finite_file(path: str | os.PathLike, subtype: str, rate: int) -> None:
    """Decode a float file (subtype FLOAT or DOUBLE) block by block and refuse NaN / Inf; other subtypes pass."""
    if subtype not in FLOAT_SUBTYPES:
        return
    offset = 0
    try:
        for block in sf.blocks(str(path), blocksize=CHECK_BLOCK, dtype="float32", always_2d=True):
            check_finite(path, block, rate, offset)
            offset += len(block)
    except (RuntimeError, sf.LibsndfileError) as err:
        raise AudioError(f"audio file '{path}' cannot be decoded ({err}); re-copy it from the corpus") from err


def checked_audio_info(path: str | os.PathLike) -> AudioInfo:
    """`audio_info` (header, truncation) and, for float files only, a decode that refuses NaN / Inf samples."""
    info = audio_info(path)
    check_finite_file(path, info.subtype, info.sample_rate)
    return info


def check_format(path: str | os.PathLike, info: AudioInfo, sample_rate: int, on_mismatch: str) -> bool:
    """True when `path` needs conversion at load time; raises when `on_mismatch` is 'error'."""
    matches = info.sample_rate == sample_rate and info.channels == 1
    if not matches and on_mismatch == "error":
        raise AudioError(
            f"audio file '{path}' is {info.sample_rate} Hz with {info.channels} channel(s), expected "
            f"{sample_rate} Hz mono; convert it, or set corpus.on_format_mismatch: convert"
        )
    return not matches


def load_audio(path: str | os.PathLike, sample_rate: int, on_mismatch: str = "convert") -> np.ndarray:
    """Decode `path` as mono float32 at `sample_rate` (channels averaged, soxr 'HQ' resampling).

    A NaN or Inf sample is a `NonFiniteAudioError` naming the file and the sample's time.
    """
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as err:
        raise AudioError(f"audio file '{path}' cannot be read ({err}); re-copy it from the corpus") from err
    if data.shape[0] == 0:
        raise AudioError(f"audio file '{path}' holds no samples; re-copy it from the corpus")
    check_format(path, AudioInfo(rate, data.shape[1], data.shape[0]), sample_rate, on_mismatch)
    check_finite(path, data, rate)
    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if rate != sample_rate:
        wave = soxr.resample(wave, rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(wave, dtype=np.float32)


def stream_audio(path: str | os.PathLike, sample_rate: int, block_frames: int = 1 << 18) -> Iterator[np.ndarray]:
    """Decode `path` block by block as mono float32 at `sample_rate`: memory does not grow with the file's length.

    Channels are averaged and the rate converted with soxr's streaming 'HQ' resampler (the same filter as
    `load_audio`; block seams can change the last float digits). A NaN or Inf sample is a
    `NonFiniteAudioError` naming its time; a decoding failure part-way is an `AudioError`.
    """
    offset, resampler = 0, None
    try:
        with sf.SoundFile(str(path)) as handle:
            rate = int(handle.samplerate)
            if rate != sample_rate:
                resampler = soxr.ResampleStream(rate, sample_rate, 1, dtype="float32", quality="HQ")
            while True:
                data = handle.read(block_frames, dtype="float32", always_2d=True)
                last = len(data) < block_frames
                check_finite(path, data, rate, offset)
                offset += len(data)
                wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
                if resampler is not None:
                    wave = resampler.resample_chunk(np.ascontiguousarray(wave), last=last)
                if len(wave):
                    yield np.ascontiguousarray(wave, dtype=np.float32)
                if last:
                    return
    except (RuntimeError, sf.LibsndfileError) as err:
        raise AudioError(f"audio file '{path}' cannot be decoded ({err}); re-copy it from the corpus") from err


def resampled_frames(frames: int, rate: int, target_rate: int) -> int:
    """Number of samples `frames` samples at `rate` become at `target_rate` (as soxr produces)."""
    if rate == target_rate:
        return frames
    return (2 * frames * target_rate + rate) // (2 * rate)  # exact, halves rounded up (as soxr)
