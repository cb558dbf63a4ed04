"""Benchmark: training steps per second with the background loader vs. audio held in memory.

Runs `gmptl.train.train_stage` (stage 2: AM-Softmax emotion head) for a few optimiser updates on
synthetic utterances, for the demo's tiny HuBERT and for a randomly initialised HuBERT-base-shaped
model (`transformers.HubertConfig()` defaults), in three input modes:

- `memory`: every utterance decoded beforehand and held in memory (no decoding while training);
- `loader`: decoded, resampled (files at `--file-rate`) and cropped in `--workers` background threads;
- `inline`: decoded in the training thread (loader_workers 0), for reference.

Resume-state writes are stubbed out (they cost the same in every mode); there is no validation. Each
mode runs `--repeats` times (alternating) and the fastest run counts. The last line is
`loader_overhead=<max over models of memory steps/s ÷ loader steps/s>` (goal ≤ 1.05).

    python benchmarks/train_input.py [--steps 20] [--base-steps 4] [--workers 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch
from transformers import HubertConfig, HubertModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))
import gmptl.train as train  # noqa: E402
from gmptl.audio import load_audio  # noqa: E402
from gmptl.backbone import make_tiny_hubert  # noqa: E402
from gmptl.data import Utterances  # noqa: E402
from gmptl.model import HeadSpec, build_model  # noqa: E402
from gmptl.runtime import configure_torch  # noqa: E402
from gmptl.settings import AudioSettings, RuntimeSettings, SpecAugment, TrainSettings  # noqa: E402
from gmptl.stages import StageSpec  # noqa: E402

CLASSES = ["neu", "hap", "ang", "sad"]


def write_corpus(folder: Path, n: int, rate: int, seed: int = 0) -> Utterances:
    """`n` noise utterances of 1–2.5 s (the demo's lengths) at `rate` Hz, 16-bit PCM."""
    rng = np.random.default_rng(seed)
    paths, durations = [], []
    for i in range(n):
        seconds = float(rng.uniform(1.0, 2.5))
        paths.append(str(folder / f"u{i}.wav"))
        sf.write(paths[-1], (0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32), rate, "PCM_16")
        durations.append(seconds)
    labels = np.arange(n) % len(CLASSES)
    return Utterances([f"u{i}" for i in range(n)], paths, labels, labels % 2, np.asarray(durations))


def settings(steps: int, batch_size: int, crop_s: float) -> TrainSettings:
    return TrainSettings(
        epochs=1,
        steps=steps,
        valid_every_steps=None,
        batch_size=batch_size,
        grad_accum=1,
        lr=1e-4,
        head_lr=1e-3,
        weight_decay=0.01,
        warmup_fraction=0.1,
        max_grad_norm=1.0,
        max_crop_s=crop_s,
        balanced_sampling=False,
        freeze_feature_encoder=True,
        class_weights="none",
        specaugment=SpecAugment(time_mask_prob=0.05),
    )


def run(backbone: str, data: Utterances, cfg: TrainSettings, workers: int, read, state: Path) -> float:
    """Seconds of one `train_stage` call."""
    spec = StageSpec("stage2", HeadSpec(CLASSES, emotion_classifier="amsoftmax"), emotion_weight=1.0)
    torch.manual_seed(0)
    model = build_model(backbone, spec.heads)
    began = time.perf_counter()
    train.train_stage(
        model,
        spec,
        data,
        None,
        cfg,
        classes=CLASSES,
        device=torch.device("cpu"),
        audio=AudioSettings(16000, "convert"),
        seed=0,
        state_dir=state,
        fingerprint={"benchmark": time.time()},
        runtime=RuntimeSettings(device="cpu", loader_workers=workers, log_every_s=3600),
        read=read,
    )
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="updates per run, tiny model")
    parser.add_argument("--base-steps", type=int, default=4, help="updates per run, HuBERT-base-shaped model")
    parser.add_argument("--workers", type=int, default=2, help="loader threads")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the training thread")
    parser.add_argument("--file-rate", type=int, default=16000, help="sample rate of the files (resampled to 16 kHz)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    configure_torch(args.threads)
    train.save_state = lambda *_args, **_kwargs: None  # resume writes cost the same in every mode
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = write_corpus(tmp, args.utterances, args.file_rate)
        memory = {i: load_audio(path, 16000) for i, path in enumerate(data.paths)}
        make_tiny_hubert(tmp / "tiny", hidden_size=64, num_layers=2)
        HubertModel(HubertConfig()).save_pretrained(tmp / "base")
        models = {
            "demo tiny HuBERT (batch 8, 3 s crops)": (str(tmp / "tiny"), settings(args.steps, 8, 3.0)),
            "HuBERT-base shape (batch 2, 1 s crops)": (str(tmp / "base"), settings(args.base_steps, 2, 1.0)),
        }
        modes = {"memory": (0, memory.get), "loader": (args.workers, None), "inline": (0, None)}
        rows = []
        for model, (backbone, cfg) in models.items():
            run(backbone, data, settings(2, cfg.batch_size, cfg.max_crop_s), 0, memory.get, tmp / "state")  # warm-up
            times = {mode: [] for mode in modes}
            for _ in range(args.repeats):
                for mode, (workers, read) in modes.items():
                    times[mode].append(run(backbone, data, cfg, workers, read, tmp / "state"))
            for mode, seconds in times.items():
                rows.append({"model": model, "input": mode, "steps": cfg.steps, "seconds": min(seconds)})
                rows[-1]["steps/s"] = cfg.steps / rows[-1]["seconds"]
    table = pd.DataFrame(rows)
    print(f"{args.utterances} utterances at {args.file_rate} Hz; threads: {args.workers} loader, {args.threads} torch")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    speed = table.pivot(index="model", columns="input", values="steps/s")
    print(f"loader_overhead={float((speed['memory'] / speed['loader']).max()):.3f}")


if __name__ == "__main__":
    main()
