"""Benchmark: `gmptl predict --timeline` on long recordings, memory against length, real-time factor.

A recording of N minutes is written block by block: espeak-ng sentences (rendered once, Debian's
espeak-ng; band-limited harmonic bursts where it is absent) in random order, joined by pauses of
0.3–2.0 s. Each run is a fresh process (`python -m gmptl.cli predict ...`); its wall time and peak
resident memory (`os.wait4`) are measured. Rows:

    timeline       --timeline (silero-vad, streamed two-pass scoring, TSV + PNG + HTML with embedded audio)
    timeline-tsv   the same, TSV only (no PNG, no page: what the segmentation and scoring cost alone)
    windows        the reference: `predict --window 10` (decodes the whole file into memory first)

for the demo-sized tiny HuBERT (hidden 64, 2 layers) and a randomly initialised HuBERT-base-shaped model
(12 layers, hidden 768; slow on a CPU, so a shorter recording). RTF = wall time / audio time.

    python benchmarks/timeline.py [--minutes 6 60] [--base-minutes 3]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch
from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

SCRIPTS = Path(__file__).resolve().parents[1] / "workflow" / "scripts"
sys.path.insert(0, str(SCRIPTS))
from gmptl.backbone import make_tiny_hubert  # noqa: E402
from gmptl.model import HeadSpec, build_model  # noqa: E402
from gmptl.model_folder import save_model  # noqa: E402

RATE = 16000
SENTENCES = [
    "The quick brown fox jumps over the lazy dog",
    "I cannot believe you did that again",
    "Please bring me the red book from the top shelf",
    "We will meet at the station tomorrow morning",
    "Nobody told me the meeting was cancelled",
    "That is the best news I have heard all year",
    "Why would anyone leave the door open in winter",
    "I am so tired of waiting for the bus",
]


def clips(rng: np.random.Generator) -> list[np.ndarray]:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        t = np.arange(int(2.5 * RATE)) / RATE
        return [
            (0.3 * np.sin(2 * np.pi * f * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
            for f in rng.uniform(120, 300, 8)
        ]
    out = []
    for sentence in SENTENCES:
        wav = subprocess.run([espeak, "--stdout", sentence], capture_output=True, check=True).stdout
        wave, rate = sf.read(io.BytesIO(wav), dtype="float32")
        out.append(soxr.resample(wave, rate, RATE).astype(np.float32))
    return out


def write_recording(path: Path, minutes: float, seed: int = 0) -> None:
    """`minutes` of sentences and pauses, written block by block (the writer's memory stays small too)."""
    rng = np.random.default_rng(seed)
    pieces = clips(rng)
    left = int(minutes * 60 * RATE)
    with sf.SoundFile(path, "w", RATE, 1, "PCM_16") as out:
        while left > 0:
            block = np.concatenate([pieces[rng.integers(len(pieces))], np.zeros(int(rng.uniform(0.3, 2.0) * RATE))])
            out.write(block[:left])
            left -= len(block[:left])


def model_folder(out: Path, shape: str) -> Path:
    backbone = out / f"{shape}-backbone"
    if shape == "tiny":
        make_tiny_hubert(backbone, seed=0)
    else:
        torch.manual_seed(0)
        HubertModel(HubertConfig(layerdrop=0.0)).save_pretrained(backbone)
        Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=RATE, do_normalize=False).save_pretrained(backbone)
    model = build_model(str(backbone), HeadSpec(["neu", "hap", "ang", "sad"], "mean", "linear"))
    save_model(model, out / shape, {"stage": "stage2"}, sample_rate=RATE)
    return out / shape


def measure(command: list[str]) -> tuple[float, float]:
    """(wall seconds, peak resident MiB) of one process."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(SCRIPTS)}
    start = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    err = child.stderr.read().decode()
    if status != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{err[-3000:]}")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[6, 60])
    parser.add_argument("--base-minutes", type=float, nargs="*", default=[3])
    args = parser.parse_args()
    cli = [sys.executable, "-m", "gmptl.cli", "predict", "--device", "cpu"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, espeak-ng: {bool(shutil.which('espeak-ng'))}")
    print(f"{'model':<6} {'run':<13} {'minutes':>7} {'segments':>8} {'wall s':>8} {'RTF':>7} {'peak MiB':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for shape, lengths in (("tiny", args.minutes), ("base", args.base_minutes)):
            if not lengths:
                continue
            model = model_folder(tmp, shape)
            for minutes in lengths:
                audio = tmp / f"call-{minutes:g}min.wav"
                write_recording(audio, minutes)
                runs = {
                    "timeline": ["--timeline", "-o", str(tmp / "t.tsv")],
                    "timeline-tsv": ["--timeline", "--no-pictures", "-o", str(tmp / "t-only.tsv")],
                    "windows": ["--window", "10", "-o", str(tmp / "w.tsv")],
                }
                for name, options in runs.items():
                    wall, peak = measure([*cli, "--model", str(model), *options, str(audio)])
                    table = tmp / ("t.tsv" if name == "timeline" else "t-only.tsv" if name != "windows" else "w.tsv")
                    rows = sum(1 for _ in table.open()) - 1
                    rtf = wall / (minutes * 60)
                    print(f"{shape:<6} {name:<13} {minutes:>7g} {rows:>8} {wall:>8.1f} {rtf:>7.4f} {peak:>9.0f}")
                audio.unlink()


if __name__ == "__main__":
    main()
