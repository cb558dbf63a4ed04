"""Device check: one script, one table, under 8 minutes on one GPU machine (`--smoke`: small sizes, any CPU).

Rows: base-shaped extraction throughput beside the bare forward; k-means on 1M × 768 frames at
k = 512 and 4096 (beside faiss GPU when installed); stage-1 training-step rate at fp32 / bf16 / fp16
with peak memory beside `gmptl.gpumem`'s estimate; bf16-vs-fp32 k-means label agreement; with two
GPUs visible (or `--smoke`, on fake slots), two jobs on two GPU slots.

    python benchmarks/device_check.py            # on the GPU machine
    python benchmarks/device_check.py --smoke    # anywhere, a minute on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from transformers import HubertConfig, HubertModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))
from gmptl import gpumem, runtime  # noqa: E402
from gmptl.backbone import SpeechEncoder  # noqa: E402
from gmptl.data import Batch  # noqa: E402
from gmptl.kmeans import fit_kmeans, nearest  # noqa: E402
from gmptl.model import GmptlModel, HeadSpec  # noqa: E402
from gmptl.settings import TrainSettings  # noqa: E402
from gmptl.stages import StageSpec  # noqa: E402
from gmptl.train import Optimisation, _update, forward_batch, make_optimizer, make_scheduler  # noqa: E402

FULL = {"frames": 1_000_000, "dim": 768, "ks": (512, 4096), "kmeans_iter": 20, "audio_s": 120, "steps": 10}
SMOKE = {"frames": 20_000, "dim": 64, "ks": (16, 64), "kmeans_iter": 5, "audio_s": 6, "steps": 2}
ROWS: list[tuple[str, str, str]] = []


def row(check: str, value: str, note: str = "") -> None:
    ROWS.append((check, value, note))
    print(f"  {check}: {value} {note}", flush=True)


def config_for(smoke: bool) -> HubertConfig:
    if smoke:
        return HubertConfig(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, conv_dim=(32,) * 7
        )
    return HubertConfig(layerdrop=0.0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_bytes(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated() if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def extraction(device: torch.device, config: HubertConfig, audio_s: float) -> None:
    """Audio seconds per second through SpeechEncoder (the library path, bf16) and the bare HF forward."""
    torch.manual_seed(0)
    encoder = SpeechEncoder(HubertModel(config), False).eval().to(device)
    lengths = torch.tensor([int(s * 16000) for s in np.linspace(2, 8, max(1, int(audio_s / 5)))])
    waves = 0.1 * torch.randn(len(lengths), int(lengths.max()), device=device)
    lengths = lengths.to(device)
    rates = {}
    for name in ("library", "bare"):
        with torch.no_grad(), runtime.autocast(device, "bf16", allow_cpu=False):
            reset_peak(device)
            for _repeat in range(2):  # the first is a warm-up
                sync(device)
                start = time.perf_counter()
                for i in range(0, len(lengths), 8):
                    w, n = waves[i : i + 8], lengths[i : i + 8]
                    if name == "library":
                        encoder(w, n, [9 if config.num_hidden_layers >= 9 else 1])
                    else:
                        mask = torch.arange(w.shape[1], device=device)[None] < n[:, None]
                        encoder.model(w, attention_mask=mask.long())
                sync(device)
                rates[name] = float(lengths.sum()) / 16000 / (time.perf_counter() - start)
    row(
        "extract audio-s/s (library | bare forward)",
        f"{rates['library']:.0f} | {rates['bare']:.0f}",
        f"ratio {rates['library'] / rates['bare']:.2f}; group-norm conv runs per utterance in the library",
    )


def matched_agreement(a: np.ndarray, b: np.ndarray, k: int) -> float:
    table = np.zeros((k, k), np.int64)
    np.add.at(table, (a, b), 1)
    rows, cols = linear_sum_assignment(-table)
    return table[rows, cols].sum() / len(a)


def clustering(device: torch.device, sizes: dict) -> None:
    rng = np.random.default_rng(0)
    means = rng.normal(size=(2000, sizes["dim"])).astype(np.float32) * 2
    x = means[rng.integers(2000, size=sizes["frames"])] + rng.normal(size=(sizes["frames"], sizes["dim"])).astype(
        np.float32
    )
    frames = torch.from_numpy(x).to(device)
    for k in sizes["ks"]:
        labels = {}
        for precision in ("bf16", "fp32"):  # bf16 is what `auto` runs on CUDA; on a CPU it is emulated
            sync(device)
            start = time.perf_counter()
            fit = fit_kmeans(
                frames, k, seed=0, max_iter=sizes["kmeans_iter"], device=device, matmul_precision=precision
            )
            sync(device)
            seconds = time.perf_counter() - start
            labels[precision] = nearest(frames, torch.from_numpy(fit.centroids).to(device))[0].cpu().numpy()
            row(
                f"kmeans {len(x)}×{x.shape[1]} k={k} ({precision} matmuls)",
                f"{seconds:.1f} s",
                f"{fit.iterations} iterations, inertia {fit.inertia:.4g}",
            )
        agreement = matched_agreement(labels["bf16"], labels["fp32"], k)
        row(f"kmeans k={k} label agreement (bf16 vs fp32)", f"{agreement:.4f}")
        faiss_row(x, k, sizes["kmeans_iter"], device)


def faiss_row(x: np.ndarray, k: int, iterations: int, device: torch.device) -> None:
    try:
        import faiss
    except ImportError:
        row(f"faiss k={k}", "not installed")
        return
    gpu = device.type == "cuda" and hasattr(faiss, "StandardGpuResources")
    start = time.perf_counter()
    kmeans = faiss.Kmeans(x.shape[1], k, niter=iterations, seed=0, gpu=gpu, verbose=False)
    kmeans.train(x)
    row(f"faiss k={k} ({'GPU' if gpu else 'CPU'})", f"{time.perf_counter() - start:.1f} s", f"{iterations} iterations")


def train_settings() -> TrainSettings:
    return TrainSettings(1, None, None, 8, 1, 5e-5, 1e-3, 0.01, 0.0, 5.0, 6.0, False, True, "none", None)


def training(device: torch.device, config: HubertConfig, steps: int, smoke: bool) -> None:
    batch_size, crop_s, k = (2, 1.0, 64) if smoke else (8, 6.0, 512)
    samples = int(crop_s * 16000)
    name = f"L9_k{k}"
    shape = gpumem.shape_from_config(config)
    for precision in ("fp32", "bf16", "fp16"):
        torch.manual_seed(0)
        heads = HeadSpec(["neu", "hap", "ang", "sad"], emotion_pooling=None, gmp_heads={name: k})
        spec = StageSpec("stage1", heads, gmp_weights={name: 1.0}, mask_prob=0.08, mask_length=10, loss_on="masked")
        model = GmptlModel(SpeechEncoder(HubertModel(config), False), heads).to(device).train()
        model.encoder.freeze_feature_encoder()
        cfg = train_settings()
        optimizer = make_optimizer(model, cfg)
        scheduler = make_scheduler(optimizer, steps + 1, 0.0)
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        opt = Optimisation(optimizer, scheduler, scaler, None, steps + 1, steps + 1, cfg.max_grad_norm)
        frames = int(model.encoder.frame_lengths(torch.tensor([samples]))[0])
        batch = Batch(
            0.1 * torch.randn(batch_size, samples),
            torch.full((batch_size,), samples),
            torch.zeros(batch_size, dtype=torch.long),
            torch.zeros(batch_size, dtype=torch.long),
            {name: torch.randint(k, (batch_size, frames))},
        )
        reset_peak(device)
        for step in range(steps + 1):  # step 0 is a warm-up
            if step == 1:
                sync(device)
                start = time.perf_counter()
            with runtime.autocast(device, precision, allow_cpu=smoke):
                loss, _ = forward_batch(model, spec, batch, device, np.random.default_rng(step))
            scaler.scale(loss).backward()
            _update(model, opt)
        sync(device)
        rate = steps / (time.perf_counter() - start)
        estimate = gpumem.training_memory(
            shape,
            batch_size=batch_size,
            crop_s=crop_s,
            precision=precision,
            freeze_feature_encoder=True,
            frame_heads=(k,),
            utterance_heads=0,
        )
        measured = peak_bytes(device)
        allocator = estimate.total - gpumem.CONTEXT_BYTES
        memory = (
            f"peak {measured / 2**20:.0f} MiB vs gpumem {allocator / 2**20:.0f} MiB"
            if measured
            else (f"gpumem {allocator / 2**20:.0f} MiB (no allocator peak on CPU)")
        )
        row(f"train stage1 {precision} ({batch_size}×{crop_s:g} s, k={k})", f"{rate:.2f} steps/s", memory)
        del model, optimizer
        if device.type == "cuda":
            torch.cuda.empty_cache()


JOB = textwrap.dedent(
    """
    import json, os, sys
    from gmptl.gpu_slots import acquire_slot
    gpus = json.loads(sys.argv[2])
    with acquire_slot(gpus, 1, sys.argv[1], os.environ) as slot:
        import torch
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        x = torch.randn(2048, 2048, device=device)
        for _ in range(50):
            x = (x @ x).tanh()
        name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
        print(json.dumps({"slot": slot.device, "mode": slot.mode, "torch_sees": torch.cuda.device_count(),
                          "device": name, "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}))
    """
)


def two_slots(smoke: bool) -> None:
    gpus = torch.cuda.device_count()
    if gpus < 2 and not smoke:
        row("two jobs on two slots", "skipped", f"{gpus} GPU(s) visible")
        return
    env = {**os.environ, "PYTHONPATH": str(ROOT / "workflow" / "scripts")}
    devices: str | list = "auto"
    if smoke:
        env["GMPTL_FAKE_GPUS"], devices = "1", [0, 1]
    with tempfile.TemporaryDirectory() as locks:
        jobs = [
            subprocess.Popen(
                [sys.executable, "-c", JOB, locks, json.dumps(devices)], env=env, stdout=subprocess.PIPE, text=True
            )
            for _ in range(2)
        ]
        results = [json.loads(job.communicate(timeout=300)[0].strip().splitlines()[-1]) for job in jobs]
    slots = sorted(r["slot"] for r in results)
    row(
        "two jobs on two slots",
        " & ".join(slots),
        "; ".join(f"{r['mode']} slot {r['slot']}: torch sees {r['torch_sees']} ({r['device']})" for r in results),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="small sizes, runs on any CPU")
    args = parser.parse_args()
    sizes = SMOKE if args.smoke else FULL
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.smoke:
        raise SystemExit("no CUDA device is visible; run with --smoke on a CPU")
    config = config_for(args.smoke)
    began = time.perf_counter()
    label = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    print(f"device check on {label}, torch {torch.__version__}{' (smoke)' if args.smoke else ''}", flush=True)
    two_slots(args.smoke)  # first: its child jobs must start before this process holds the GPU busy
    extraction(device, config, sizes["audio_s"])
    clustering(device, sizes)
    training(device, config, sizes["steps"], args.smoke)
    width = max(len(check) for check, _, _ in ROWS)
    print(f"\n{'check':<{width}}  {'value':>22}  note")
    for check, value, note in ROWS:
        print(f"{check:<{width}}  {value:>22}  {note}")
    print(f"total {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
