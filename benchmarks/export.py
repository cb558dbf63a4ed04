"""Benchmark: scoring recordings with the torch model vs its ONNX export (onnxruntime), on this CPU.

Two model shapes with random weights: the demo's tiny HuBERT (width 64, 2 layers) and a hubert-base-shaped one
(width 768, 12 layers, 512-channel convolutions: 94 M parameters). Each scores the same recordings (5 s each, or
--seconds) one at a time and in padded batches of --batch; the table gives seconds per audio second (the
real-time factor, lower is faster) and the largest score difference between the two.

    python benchmarks/export.py [--recordings 16] [--seconds 5] [--batch 8] [--threads 2]   (a few minutes)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))
from gmptl.backbone import make_tiny_hubert  # noqa: E402
from gmptl.export import export_model  # noqa: E402
from gmptl.model import HeadSpec, build_model  # noqa: E402
from gmptl.model_folder import save_model  # noqa: E402
from gmptl.onnx_model import OnnxScorer  # noqa: E402

CLASSES = ["neu", "hap", "ang", "sad"]


def base_shaped_hubert(out: Path) -> None:
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    HubertModel(HubertConfig()).save_pretrained(out)  # HubertConfig's defaults are hubert-base's shape


def torch_probs(model, waves: list[np.ndarray]) -> np.ndarray:
    lengths = torch.tensor([len(w) for w in waves])
    batch = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(w) for w in waves], batch_first=True)
    with torch.no_grad():
        return torch.softmax(model(batch, lengths)["emotion"], 1).numpy()


def timed(score, waves: list[np.ndarray], batch: int) -> tuple[float, np.ndarray]:
    score(waves[:1])  # warm-up
    start = time.perf_counter()
    out = np.concatenate([score(waves[i : i + batch]) for i in range(0, len(waves), batch)])
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recordings", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    lengths = rng.integers(int(0.6 * args.seconds * 16000), int(1.4 * args.seconds * 16000), args.recordings)
    waves = [(0.1 * rng.normal(size=n)).astype(np.float32) for n in lengths]
    audio_s = lengths.sum() / 16000
    print(f"{args.recordings} recordings, {audio_s:.0f} s of audio, {args.threads} threads, torch {torch.__version__}")
    print(f"{'model':<12} {'batch':>5} {'torch s/s':>10} {'onnx s/s':>10} {'speed-up':>9} {'max |Δp|':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_tiny_hubert(tmp / "tiny")
        base_shaped_hubert(tmp / "base")
        for name in ("tiny", "base"):
            model = build_model(str(tmp / name), HeadSpec(CLASSES, "mean", "amsoftmax")).eval()
            save_model(model, tmp / f"{name}_model", {"stage": "stage2"}, sample_rate=16000)
            export_model(tmp / f"{name}_model", "onnx", tmp / f"{name}_onnx")
            scorer = OnnxScorer.load(tmp / f"{name}_onnx", threads=args.threads)
            for batch in (1, args.batch):
                t_torch, p_torch = timed(lambda w, m=model: torch_probs(m, w), waves, batch)
                t_onnx, p_onnx = timed(scorer.probs, waves, batch)
                diff = float(np.abs(p_torch - p_onnx).max())
                print(
                    f"{name:<12} {batch:>5} {t_torch / audio_s:>10.4f} {t_onnx / audio_s:>10.4f} "
                    f"{t_torch / t_onnx:>8.2f}x {diff:>9.1e}"
                )


if __name__ == "__main__":
    main()
