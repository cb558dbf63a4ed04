"""Benchmark: batched (length-sorted, padded) vs one-utterance-at-a-time feature extraction.

Throughput in audio seconds per second through `gmptl.features.extract_features` (HDF5 writing
included), for the demo's tiny HuBERT and for a randomly initialised HuBERT-base-shaped model
(12 layers, hidden 768, group-norm feature encoder), on synthetic utterances of 1–8 s. Also the
backbone's bare forward (`model(waves, attention_mask=...)`, the whole padded batch at once) on the
same batches, with the audio already decoded and padded and nothing written: `overhead` is the
extraction time over that (reading audio, padding, per-utterance CNN of group-norm encoders, HDF5).
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
from gmptl.audio import load_audio  # noqa: E402
from gmptl.backbone import SpeechEncoder, load_backbone, make_tiny_hubert  # noqa: E402
from gmptl.data import length_batches  # noqa: E402
from gmptl.features import extract_features, pad_batch  # noqa: E402
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


@torch.no_grad()
def bare_forward_throughput(encoder: SpeechEncoder, table: pd.DataFrame, batch_seconds: float) -> float:
    """Audio seconds per second of the plain backbone forward on extract_features' batches (audio pre-decoded)."""
    waves = [load_audio(path, 16000) for path in table["path"]]
    batches = length_batches(np.asarray([len(w) for w in waves]), int(batch_seconds * 16000))
    inputs = [pad_batch([waves[i] for i in batch], torch.device("cpu")) for batch in batches]
    model = encoder.model.eval()
    start = time.perf_counter()
    for padded, lengths in inputs:
        mask = torch.arange(padded.shape[1])[None] < lengths[:, None]
        model(padded, attention_mask=mask.long())
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
        header = ("per_utt_audio_s/s", "batched_audio_s/s", "speedup", "forward_audio_s/s", "overhead")
        print(f"{'model':<20} " + " ".join(f"{name:>18}" for name in header))
        speedup = overhead = None
        for name, encoder in models.items():
            subset = table if name.startswith("tiny") else table.iloc[: max(8, len(table) // 3)]
            single = throughput(encoder, subset, tmp / "a.h5", batch_seconds=1e-3)  # one utterance per batch
            batched = throughput(encoder, subset, tmp / "b.h5", batch_seconds=64.0)
            forward = bare_forward_throughput(encoder, subset, batch_seconds=64.0)
            speedup, overhead = batched / single, forward / batched
            values = (f"{single:.1f}", f"{batched:.1f}", f"{speedup:.2f}", f"{forward:.1f}", f"{overhead:.3f}")
            print(f"{name:<20} " + " ".join(f"{value:>18}" for value in values))
    print(f"speedup_vs_per_utterance={speedup:.2f} overhead_vs_forward={overhead:.3f}")


if __name__ == "__main__":
    main()
