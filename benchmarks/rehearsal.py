"""Rehearsal at real shapes: randomly initialised HuBERT-base- and -large-shaped backbones through every stage.

Per shape: extraction of a few short utterances (gmptl.features), k-means at k = 4096 on 100k frames
(gmptl.kmeans; synthetic frames of the backbone's width around the extracted ones, extraction of
100k frames — 33 min of audio — being too slow on 2 cores), a few stage-1 updates on those labels
and stage-2 (AM-Softmax) updates from the stage-1 backbone (gmptl.train, validation included),
prediction (gmptl.inference). No download: the backbones are built from transformers' HubertConfig.
Also checks gpumem's training activation term against the bytes a stage-1 step actually saves for
backward (saved-tensor hooks, unique storages). Prints one table: wall time and peak RSS increase
per stage.

    python benchmarks/rehearsal.py [--shapes base large] [--kmeans-iter 3]   (base ≈ 3 min, large ≈ 8 min on 2 cores)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch
from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))
from gmptl import gpumem  # noqa: E402
from gmptl.backbone import SpeechEncoder, input_normalization, load_backbone  # noqa: E402
from gmptl.data import Batch, Utterances, attach_frame_labels  # noqa: E402
from gmptl.features import extract_features  # noqa: E402
from gmptl.frames import layer_dataset, open_h5, read_alignment  # noqa: E402
from gmptl.inference import predict  # noqa: E402
from gmptl.kmeans import fit_kmeans, nearest  # noqa: E402
from gmptl.model import HeadSpec, build_model  # noqa: E402
from gmptl.settings import AudioSettings, RuntimeSettings, TrainSettings  # noqa: E402
from gmptl.stages import StageSpec  # noqa: E402
from gmptl.train import forward_batch, train_stage  # noqa: E402

CLASSES = ["neu", "hap", "ang", "sad"]
CPU = torch.device("cpu")
AUDIO = AudioSettings(16000, "error")


def hubert_config(shape: str) -> HubertConfig:
    """HuBERT-base (768 × 12, group-norm conv encoder) or -large (1024 × 24, layer norm, stable layer norm)."""
    if shape == "base":
        return HubertConfig(layerdrop=0.0)
    if shape == "large":
        return HubertConfig(
            hidden_size=1024,
            num_hidden_layers=24,
            num_attention_heads=16,
            intermediate_size=4096,
            feat_extract_norm="layer",
            do_stable_layer_norm=True,
            conv_bias=True,
            layerdrop=0.0,
        )
    raise ValueError(f"shape must be 'base' or 'large', got '{shape}'")


def write_backbone(shape: str, out_dir: Path) -> str:
    torch.manual_seed(0)
    config = hubert_config(shape)
    HubertModel(config).save_pretrained(out_dir)
    normalize = config.feat_extract_norm == "layer"
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, do_normalize=normalize).save_pretrained(out_dir)
    return str(out_dir)


def write_utterances(folder: Path, count: int, seconds: float) -> pd.DataFrame:
    """`count` short noise utterances (lengths 0.6–1 × `seconds`), half train, half valid."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(count):
        length = seconds * (0.6 + 0.4 * (i % 3) / 2)
        path = folder / f"u{i}.wav"
        sf.write(path, (0.1 * rng.standard_normal(int(length * 16000))).astype(np.float32), 16000, subtype="PCM_16")
        rows.append({"utt_id": f"u{i}", "path": str(path), "split": "train" if i % 2 == 0 else "valid", "s": length})
    return pd.DataFrame(rows)


def utterances(table: pd.DataFrame) -> Utterances:
    n = len(table)
    return Utterances(
        table["utt_id"].tolist(),
        table["path"].tolist(),
        np.arange(n) % len(CLASSES),
        np.arange(n) % 2,
        table["s"].to_numpy(),
    )


def synthetic_frames(seed_frames: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """`n` frames of the extracted frames' width: random extracted frames plus noise of their spread."""
    rng = np.random.default_rng(seed)
    spread = seed_frames.std(0, keepdims=True)
    picks = seed_frames[rng.integers(len(seed_frames), size=n)]
    return (picks + 0.5 * spread * rng.standard_normal(picks.shape, dtype=np.float32)).astype(np.float32)


def train_settings(steps: int, crop_s: float) -> TrainSettings:
    return TrainSettings(
        epochs=1,
        steps=steps,
        valid_every_steps=None,
        batch_size=2,
        grad_accum=1,
        lr=5e-5,
        head_lr=1e-3,
        weight_decay=0.01,
        warmup_fraction=0.0,
        max_grad_norm=5.0,
        max_crop_s=crop_s,
        balanced_sampling=False,
        freeze_feature_encoder=True,
        class_weights="none",
        specaugment=None,
    )


class PeakRss:
    """Peak resident memory above the level at entry, sampled every 5 ms from /proc."""

    def __init__(self):
        self.peak = self.base = 0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> PeakRss:
        self.base = self.peak = self.rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.rss())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())

    @property
    def increase(self) -> int:
        return self.peak - self.base


@dataclass
class Row:
    shape: str
    stage: str
    seconds: float
    peak_rss_mib: float
    note: str = ""


def timed(shape: str, stage: str, rows: list[Row], work: Callable[[], str | None]):
    start = time.perf_counter()
    with PeakRss() as memory:
        note = work()
    rows.append(Row(shape, stage, time.perf_counter() - start, memory.increase / 2**20, note or ""))


def saved_activation_bytes(step: Callable[[], torch.Tensor], model: torch.nn.Module) -> int:
    """Bytes of the distinct storages autograd saves for backward while `step()` runs its forward, `model`'s
    parameters (saved by every linear layer, counted as weights) left out."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = step()
    loss.backward()
    return sum(storages.values())


def activation_check(backbone: str, shape: str, crop_s: float, k: int) -> tuple[int, int]:
    """(measured, estimated) activation bytes of one fp32 stage-1 training forward, batch 2, frozen conv encoder."""
    torch.manual_seed(0)
    name = f"L9_k{k}"
    heads = HeadSpec(CLASSES, emotion_pooling=None, gmp_heads={name: k})
    spec = StageSpec("stage1", heads, gmp_weights={name: 1.0}, mask_prob=0.08, mask_length=10, loss_on="masked")
    model = build_model(backbone, heads).train()
    model.encoder.freeze_feature_encoder()
    samples = int(crop_s * 16000)
    frames = int(model.encoder.frame_lengths(torch.tensor([samples]))[0])
    batch = Batch(
        0.1 * torch.randn(2, samples),
        torch.tensor([samples, samples]),
        torch.tensor([0, 1]),
        torch.tensor([0, 1]),
        {name: torch.randint(k, (2, frames))},
    )
    measured = saved_activation_bytes(
        lambda: forward_batch(model, spec, batch, CPU, np.random.default_rng(0))[0], model
    )
    estimate = gpumem.training_memory(
        gpumem.shape_from_config(hubert_config(shape)),
        batch_size=2,
        crop_s=crop_s,
        precision="fp32",
        freeze_feature_encoder=True,
        frame_heads=(k,),
        utterance_heads=0,
        attention="eager",  # CPU training with attention dropout runs sdpa's math path, which keeps T² probabilities
    )
    return measured, estimate.activations


def rehearse(
    shape: str,
    workdir: Path,
    *,
    count: int = 6,
    seconds: float = 2.0,
    kmeans_frames: int = 100_000,
    k: int = 4096,
    kmeans_iter: int = 3,
    steps: int = 2,
) -> list[Row]:
    """Every stage once at `shape`; one `Row` per stage."""
    rows: list[Row] = []
    backbone = write_backbone(shape, workdir / f"{shape}_backbone")
    table = write_utterances(workdir / "wav", count, seconds)
    layer = 9 if shape == "base" else 18
    features = workdir / f"{shape}_features.h5"

    def extract():
        encoder = SpeechEncoder(load_backbone(backbone), input_normalization(backbone))
        extract_features(
            encoder,
            table[["utt_id", "path", "split"]],
            [layer],
            features,
            sample_rate=16000,
            on_format_mismatch="error",
            batch_seconds=8.0,
            device=CPU,
        )
        return f"{table['s'].sum():.1f} s audio, layer {layer}"

    timed(shape, "extract", rows, extract)
    with open_h5(features) as handle:
        frames = layer_dataset(handle, layer)[:].astype(np.float32)
        alignment = read_alignment(handle)
    fit: dict = {}

    def cluster():
        x = synthetic_frames(frames, kmeans_frames)
        fit["result"] = fit_kmeans(x, k, seed=0, n_init=1, init_frames=20_000, max_iter=kmeans_iter)
        return f"{kmeans_frames} × {x.shape[1]} frames, k = {k}, {fit['result'].iterations} Lloyd iterations"

    timed(shape, "kmeans", rows, cluster)
    labels = nearest(torch.from_numpy(frames), torch.from_numpy(fit["result"].centroids))[0].numpy()
    name = f"L{layer}_k{k}"
    data = {split: utterances(table[table["split"] == split].reset_index(drop=True)) for split in ("train", "valid")}
    for split in data.values():
        attach_frame_labels(split, name, alignment, labels, str(features))
    runtime = RuntimeSettings(device="cpu", loader_workers=0, eval_batch_seconds=8.0)
    models: dict = {}

    def stage(kind: str):
        torch.manual_seed(0)
        if kind == "stage1":
            heads = HeadSpec(CLASSES, emotion_pooling=None, gmp_heads={name: k})
            spec = StageSpec("stage1", heads, gmp_weights={name: 1.0}, mask_prob=0.08, mask_length=10, loss_on="masked")
        else:
            heads = HeadSpec(CLASSES, "mean", "amsoftmax", margin=0.2, scale=30.0)
            spec = StageSpec("stage2", heads, emotion_weight=1.0)
        model = build_model(backbone, heads)
        if kind == "stage2":
            model.encoder.load_state_dict(models["stage1"].encoder.state_dict())
        result = train_stage(
            model,
            spec,
            data["train"],
            data["valid"],
            train_settings(steps, seconds),
            classes=CLASSES,
            device=CPU,
            audio=AUDIO,
            seed=0,
            state_dir=workdir / f"{shape}_{kind}.resume",
            fingerprint={"rehearsal": shape, "stage": kind},
            runtime=runtime,
        )
        models[kind] = model
        last = result.history.iloc[-1]
        return f"{steps} updates + validation, train_loss {last['train_loss']:.3f}, valid_loss {last['valid_loss']:.3f}"

    timed(shape, "stage1", rows, lambda: stage("stage1"))
    timed(shape, "stage2", rows, lambda: stage("stage2"))
    scores: dict = {}

    def score():
        everyone = utterances(table)
        predicted = predict(models["stage2"], everyone, CLASSES, CPU, AUDIO, 8.0, "fp32")
        scores["table"] = predicted
        return f"{len(predicted)} utterances, predicted {dict(predicted['predicted'].value_counts())}"

    timed(shape, "predict", rows, score)
    models.clear()

    def check():
        measured, estimated = activation_check(backbone, shape, seconds, k)
        ratio = estimated / measured
        return f"activations saved {measured / 2**20:.0f} MiB, gpumem {estimated / 2**20:.0f} MiB ({ratio:.2f}×)"

    timed(shape, "activation check", rows, check)
    return rows


def print_table(rows: list[Row]) -> None:
    print(f"{'shape':<6} {'stage':<17} {'wall_s':>8} {'peak_rss_MiB':>13}  note")
    for row in rows:
        print(f"{row.shape:<6} {row.stage:<17} {row.seconds:>8.1f} {row.peak_rss_mib:>13.0f}  {row.note}")


def quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["base", "large"], choices=["base", "large"])
    parser.add_argument("--kmeans-iter", type=int, default=3)
    parser.add_argument("--kmeans-frames", type=int, default=100_000)
    args = parser.parse_args()
    quiet_transformers()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu")
    rows = []
    for shape in args.shapes:
        with tempfile.TemporaryDirectory() as tmp:
            rows += rehearse(shape, Path(tmp), kmeans_iter=args.kmeans_iter, kmeans_frames=args.kmeans_frames)
    print_table(rows)


if __name__ == "__main__":
    main()
