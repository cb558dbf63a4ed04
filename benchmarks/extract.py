"""Benchmark: batched (length-sorted, padded) vs one-utterance-at-a-time feature extraction.

Throughput in audio seconds per second through `gmptl.features.extract_features` (HDF5 writing
included), for the demo's tiny HuBERT and for a randomly initialised HuBERT-base-shaped model
(12 layers, hidden 768, group-norm feature encoder), on synthetic utterances of 1–8 s.
Ends with one `name=value` line (the HuBERT-base row).

    python benchmarks/extract.py [--utterances 48]
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
from gmptl.backbone import SpeechEncoder, load_backbone, make_tiny_hubert  # noqa: E402
from gmptl.features import extract_features  # noqa: E402
from gmptl.runtime import configure_torch  # noqa: E402


def write_corpus(folder: Path, n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        seconds = float(rng.uniform(1, 8))
        path = folder / f"u{i}.wav"
        sf.write(path, (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32), 16000)
        rows.append({"utt_id": f"u{i}", "path": str(path), "split": "train", "seconds": seconds})
    return pd.DataFrame(rows)


def throughput(encoder: SpeechEncoder, table: pd.DataFrame, out: Path, batch_seconds: float) -> float:
    start = time.perf_counter()
    extract_features(
        encoder,
        table,
        [6 if encoder.model.config.num_hidden_layers >= 6 else 1],
        out,
        sample_rate=16000,
        on_format_mismatch="error",
        batch_seconds=batch_seconds,
        device=torch.device("cpu"),
    )
    return float(table["seconds"].sum()) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=48)
    args = parser.parse_args()
    configure_torch(torch.get_num_threads())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        table = write_corpus(tmp, args.utterances)
        make_tiny_hubert(tmp / "tiny")
        torch.manual_seed(0)
        models = {
            "tiny (demo)": SpeechEncoder(load_backbone(str(tmp / "tiny")), False),
            "hubert-base-shaped": SpeechEncoder(HubertModel(HubertConfig(layerdrop=0.0)), False),
        }
        print(
            f"{len(table)} utterances, {table['seconds'].sum():.0f} s of audio, "
            f"torch threads {torch.get_num_threads()}, cpu"
        )
        print(f"{'model':<20} {'per_utt_audio_s/s':>18} {'batched_audio_s/s':>18} {'speedup':>8}")
        speedup = None
        for name, encoder in models.items():
            subset = table if name.startswith("tiny") else table.iloc[: max(8, len(table) // 3)]
            single = throughput(encoder, subset, tmp / "a.h5", batch_seconds=1e-3)  # one utterance per batch
            batched = throughput(encoder, subset, tmp / "b.h5", batch_seconds=64.0)
            speedup = batched / single
            print(f"{name:<20} {single:>18.1f} {batched:>18.1f} {speedup:>8.2f}")
    print(f"speedup_vs_per_utterance={speedup:.2f}")


if __name__ == "__main__":
    main()
