"""Every precision mode runs on the CPU and stays close to fp32: extraction, k-means, training, inference.

A CPU run is fp32 by default (`runtime.autocast_dtype`); these tests ask for bf16/fp16 on the CPU with
`allow_cpu=True`, patched into the modules that call `autocast`, so the library code itself runs the mode.
Each comparison also checks that the mode really ran (the result differs from fp32), so a mode that
silently falls back to fp32 fails.

Tolerances, from the unit roundoff u of the format (bf16: 8-bit significand, u = 2⁻⁸ ≈ 3.9e-3;
fp16: 11-bit, u = 2⁻¹¹ ≈ 4.9e-4), and the ~10 roundings in series of the tiny backbone (7 convs,
projection, 2 transformer blocks), whose errors add up roughly as √n·u … n·u:
- features: relative Frobenius error ≤ 10·u (bf16 0.04, fp16 0.005);
- loss of each of a few training steps: relative difference ≤ 10·u (the loss is a mean over
  many frames, so errors average out rather than add). The steps use a small learning rate (1e-4):
  AdamW's first updates are about lr·sign(gradient), so a near-zero gradient whose sign the low
  precision flips moves a weight by 2·lr either way; at 1e-3 that divergence of the trajectories,
  not the forward error, reached 9 % on the AM-Softmax stage (scale 30) by the third step;
- predictions: softmax scores within 10·u·s for scores of logits of scale s ≈ 1 (bf16 0.04, fp16
  0.005); the top label agrees wherever fp32's top-two margin is above twice that;
- k-means with bf16 matmul inputs (float32 accumulation) on a Gaussian mixture: ≥ 99 % of the
  frames in the same cluster (after matching clusters) and inertia within 0.1 %; only frames within
  ~u·‖x‖‖c‖ of a tie can move, a small share of mixture data.
"""

from __future__ import annotations

import copy
import functools

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_wav
from scipy.optimize import linear_sum_assignment

from gmptl import features, inference, runtime
from gmptl.backbone import SpeechEncoder, input_normalization, load_backbone
from gmptl.data import Batch, Utterances
from gmptl.frames import layer_dataset, open_h5
from gmptl.kmeans import fit_kmeans, matmul_dtype, nearest, partial_distances
from gmptl.model import HeadSpec, build_model
from gmptl.settings import AudioSettings, TrainSettings
from gmptl.stages import StageSpec
from gmptl.train import Optimisation, _update, forward_batch, make_optimizer, make_scheduler

CPU = torch.device("cpu")
CLASSES = ["neu", "hap", "ang", "sad"]
UNIT_ROUNDOFF = {"bf16": 2.0**-8, "fp16": 2.0**-11}
TOLERANCE = {mode: 10 * u for mode, u in UNIT_ROUNDOFF.items()}
MODES = ["bf16", "fp16"]
# The fp16 grad scaler's initial scale in the comparisons. torch's default, 2¹⁶, overflows the fp16
# gradients of the AM-Softmax stage (scale 30) here and skips its first three updates while it
# calibrates (65536 → 8192), which the comparison with fp32 would count as error. 2¹⁰ skips none with
# transformers 5.25 but one with 5.0 (the floor: its tiny HuBERT is initialised differently); 2⁴ skips
# none with either.
SCALE = 2.0**4


def cpu_autocast(monkeypatch, module) -> None:
    """Let `module`'s autocast run bf16/fp16 on the CPU."""
    monkeypatch.setattr(module, "autocast", functools.partial(runtime.autocast, allow_cpu=True))


def relative_error(value: np.ndarray, reference: np.ndarray) -> float:
    return float(np.linalg.norm(value - reference) / np.linalg.norm(reference))


# The switch ----------------------------------------------------------------------------------------


def test_cpu_runs_fp32_unless_a_mode_is_explicitly_allowed_there():
    assert runtime.autocast_dtype("cpu", "bf16") is None and runtime.autocast_dtype("cpu", "fp16") is None
    assert runtime.autocast_dtype("cpu", "auto", allow_cpu=True) is None
    assert runtime.autocast_dtype("cpu", "bf16", allow_cpu=True) == torch.bfloat16
    assert runtime.autocast_dtype("cpu", "fp16", allow_cpu=True) == torch.float16
    assert runtime.autocast_dtype("cuda", "auto") == torch.bfloat16
    assert runtime.autocast_dtype("cuda", "fp16") == torch.float16
    assert runtime.autocast_dtype("cuda", "fp32") is None
    with runtime.autocast(CPU, "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with runtime.autocast(CPU, "bf16", allow_cpu=True):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


# Extraction ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def utterances(tmp_path_factory) -> pd.DataFrame:
    folder = tmp_path_factory.mktemp("precision")
    rows = []
    for i, seconds in enumerate([1.3, 0.9, 0.7, 1.1]):
        path = folder / f"u{i}.wav"
        write_wav(path, seconds, seed=i)
        rows.append({"utt_id": f"u{i}", "path": str(path), "split": "train", "seconds": seconds})
    return pd.DataFrame(rows)


def extracted(backbone: str, table: pd.DataFrame, out, precision: str) -> dict[int, np.ndarray]:
    encoder = SpeechEncoder(load_backbone(backbone), input_normalization(backbone))
    features.extract_features(
        encoder,
        table,
        [1, 2],
        out,
        sample_rate=16000,
        on_format_mismatch="error",
        batch_seconds=2.5,
        device=CPU,
        precision=precision,
    )
    with open_h5(out) as handle:
        return {layer: layer_dataset(handle, layer)[:].astype(np.float32) for layer in (1, 2)}


@pytest.mark.parametrize("mode", MODES)
def test_extraction_in_a_low_precision_mode_is_close_to_fp32(mode, tiny_backbone, utterances, tmp_path, monkeypatch):
    reference = extracted(tiny_backbone, utterances, tmp_path / "fp32.h5", "fp32")
    cpu_autocast(monkeypatch, features)
    low = extracted(tiny_backbone, utterances, tmp_path / f"{mode}.h5", mode)
    for layer in (1, 2):
        error = relative_error(low[layer], reference[layer])
        assert UNIT_ROUNDOFF[mode] / 4 < error < TOLERANCE[mode], (layer, error)  # ran the mode, stayed close


# K-means ----------------------------------------------------------------------------------------------


def mixture(n: int = 20_000, dim: int = 48, components: int = 24, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(components, dim)) * 1.5
    return (means[rng.integers(components, size=n)] + rng.normal(size=(n, dim))).astype(np.float32)


def matched_agreement(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Share of frames in the same cluster after the best one-to-one matching of cluster ids."""
    table = np.zeros((k, k), np.int64)
    np.add.at(table, (a, b), 1)
    rows, cols = linear_sum_assignment(-table)
    return table[rows, cols].sum() / len(a)


def test_bf16_kmeans_matmuls_label_like_fp32():
    x, k = mixture(), 24
    runs = {p: fit_kmeans(x, k, seed=0, matmul_precision=p, chunk=4096) for p in ("fp32", "bf16")}
    frames = torch.from_numpy(x)
    labels = {p: nearest(frames, torch.from_numpy(r.centroids))[0].numpy() for p, r in runs.items()}
    assert matched_agreement(labels["bf16"], labels["fp32"], k) >= 0.99
    assert abs(runs["bf16"].inertia / runs["fp32"].inertia - 1) <= 1e-3


def test_cpu_kmeans_is_fp32_unless_bf16_is_asked_for():
    assert matmul_dtype(CPU) == torch.float32 and matmul_dtype(CPU, "fp32") == torch.float32
    assert matmul_dtype(CPU, "bf16") == torch.bfloat16


def test_bf16_partial_distances_round_the_inputs_and_sum_in_fp32():
    torch.manual_seed(0)
    block, centroids = torch.randn(64, 32), torch.randn(16, 32)
    c_sq = (centroids * centroids).sum(1)
    low = partial_distances(block, centroids.T.contiguous().to(torch.bfloat16), c_sq)
    rounded = c_sq[None] - 2 * block.bfloat16().float() @ centroids.bfloat16().float().T
    exact = partial_distances(block, centroids.T.contiguous(), c_sq)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, rounded, rtol=1e-5, atol=1e-4)
    assert not torch.allclose(low, exact, rtol=1e-5, atol=1e-4)


def test_the_cuda_kmeans_matmul_has_a_cpu_kernel_matching_the_emulation():
    block, c_t = torch.randn(8, 16).bfloat16(), torch.randn(16, 4).bfloat16()
    try:
        out = torch.mm(block, c_t, out_dtype=torch.float32)
    except (NotImplementedError, RuntimeError):
        pytest.skip("torch has no CPU kernel for aten::mm.dtype (bf16 inputs, fp32 output): the CPU emulates it")
    torch.testing.assert_close(out, block.float() @ c_t.float())


# Training ---------------------------------------------------------------------------------------------


def train_settings() -> TrainSettings:
    return TrainSettings(
        epochs=1,
        steps=3,
        valid_every_steps=None,
        batch_size=3,
        grad_accum=1,
        lr=1e-4,  # see the module docstring
        head_lr=1e-4,
        weight_decay=0.01,
        warmup_fraction=0.0,
        max_grad_norm=5.0,
        max_crop_s=1.0,
        balanced_sampling=False,
        freeze_feature_encoder=False,
        class_weights="none",
        specaugment=None,
    )


def stage_setup(stage: str, backbone: str) -> tuple[torch.nn.Module, StageSpec, list[Batch]]:
    """A model, its stage and three fixed batches (stage1: frame labels of one GMP head, masked input)."""
    torch.manual_seed(0)
    if stage == "stage1":
        heads = HeadSpec(CLASSES, emotion_pooling=None, gmp_heads={"L2_k8": 8})
        spec = StageSpec("stage1", heads, gmp_weights={"L2_k8": 1.0}, mask_prob=0.08, mask_length=5, loss_on="masked")
    else:
        heads = HeadSpec(CLASSES, "mean", "amsoftmax", margin=0.2, scale=30.0)
        spec = StageSpec("stage2", heads, emotion_weight=1.0)
    model = build_model(backbone, heads)
    generator = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(3):
        waves = 0.1 * torch.randn(3, 16000, generator=generator)
        lengths = torch.tensor([16000, 12000, 9000])
        frames = int(model.encoder.frame_lengths(lengths).max())
        labels = {"L2_k8": torch.randint(8, (3, frames), generator=generator)} if stage == "stage1" else {}
        emotion = torch.randint(4, (3,), generator=generator)
        batches.append(Batch(waves, lengths, emotion, torch.tensor([0, 1, 0]), labels))
    return model, spec, batches


def optimisation(model, cfg: TrainSettings, total: int, scaler: torch.amp.GradScaler) -> Optimisation:
    """The optimiser, schedule and scaler of `total` updates, as `train_stage` builds them."""
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, total, cfg.warmup_fraction)
    return Optimisation(optimizer, scheduler, scaler, None, total, total, cfg.max_grad_norm)


def training_losses(model, spec, batches, precision: str, scaler: torch.amp.GradScaler) -> list[float]:
    """The loss of each of a few updates, as `train_stage` makes them (autocast forward, scaled backward, `_update`)."""
    opt = optimisation(model, train_settings(), len(batches), scaler)
    model.train()
    losses = []
    for step, batch in enumerate(batches):
        with runtime.autocast(CPU, precision, allow_cpu=True):
            loss, _ = forward_batch(model, spec, batch, CPU, np.random.default_rng(step))
        scaler.scale(loss).backward()
        _update(model, opt)
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
@pytest.mark.parametrize("mode", MODES)
def test_a_few_training_steps_in_a_low_precision_mode_follow_fp32(mode, stage, tiny_backbone):
    model, spec, batches = stage_setup(stage, tiny_backbone)
    reference = training_losses(copy.deepcopy(model), spec, batches, "fp32", torch.amp.GradScaler("cpu", enabled=False))
    scaler = torch.amp.GradScaler("cpu", init_scale=SCALE, enabled=mode == "fp16")
    low = training_losses(model, spec, batches, mode, scaler)
    differences = [abs(a / b - 1) for a, b in zip(low, reference, strict=True)]
    assert max(differences) < TOLERANCE[mode], differences
    assert max(differences) > 0  # the mode ran
    if mode == "fp16":
        assert scaler.get_scale() == SCALE  # no step was skipped (growth only after 2000 good steps)


def test_the_fp16_grad_scaler_skips_a_step_with_an_inf_gradient_and_halves_its_scale(tiny_backbone):
    model, spec, batches = stage_setup("stage2", tiny_backbone)
    scaler = torch.amp.GradScaler("cpu", init_scale=SCALE)
    opt = optimisation(model, train_settings(), 2, scaler)
    model.train()

    def step(poison: bool) -> dict[str, torch.Tensor]:
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        with runtime.autocast(CPU, "fp16", allow_cpu=True):
            loss, _ = forward_batch(model, spec, batches[0], CPU, np.random.default_rng(0))
        scaler.scale(loss).backward()
        if poison:
            next(p for p in model.parameters() if p.grad is not None).grad.view(-1)[0] = float("inf")
        _update(model, opt)
        return before

    before = step(poison=False)
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert scaler.get_scale() == SCALE
    before = step(poison=True)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # skipped
    assert scaler.get_scale() == SCALE / 2  # halved


# Inference --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_predictions_in_a_low_precision_mode_agree_with_fp32(mode, tiny_backbone, utterances, monkeypatch):
    torch.manual_seed(0)
    model = build_model(tiny_backbone, HeadSpec(CLASSES, "mean", "linear"))
    with torch.no_grad():
        model.emotion.classifier.linear.weight.mul_(20)  # spread the random scores so top labels mean something
    n = len(utterances)
    data = Utterances(
        utterances["utt_id"].tolist(),
        utterances["path"].tolist(),
        np.arange(n) % 4,
        np.zeros(n, np.int64),
        utterances["seconds"].to_numpy(),
    )
    audio = AudioSettings(16000, "error")
    columns = [f"score_{c}" for c in CLASSES]
    reference = inference.predict(model, data, CLASSES, CPU, audio, 2.5, "fp32")
    cpu_autocast(monkeypatch, inference)
    low = inference.predict(model, data, CLASSES, CPU, audio, 2.5, mode)
    diff = np.abs(low[columns].to_numpy() - reference[columns].to_numpy())
    assert 0 < diff.max() < TOLERANCE[mode], diff.max()
    top2 = np.sort(reference[columns].to_numpy(), axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 2 * TOLERANCE[mode]
    assert clear.any()
    assert (low["predicted"][clear] == reference["predicted"][clear]).all()
