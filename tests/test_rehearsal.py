"""Real shapes rehearsed: a HuBERT-base-shaped random backbone through every stage, and the memory estimate."""

from __future__ import annotations

import sys

import pytest
from conftest import ROOT

from gmptl import gpumem

sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.mark.slow
def test_a_base_shaped_backbone_runs_every_stage_and_its_activations_match_gpumem(tmp_path):
    import rehearsal

    rows = rehearsal.rehearse("base", tmp_path, count=4, seconds=1.0, kmeans_frames=100_000, k=4096, kmeans_iter=1)
    assert [row.stage for row in rows] == ["extract", "kmeans", "stage1", "stage2", "predict", "activation check"]
    assert "100000 × 768 frames, k = 4096" in rows[1].note
    assert "4 utterances" in rows[4].note
    ratio = float(rows[5].note.split("(")[1].rstrip("×)"))
    assert 0.85 < ratio < 1.15  # gpumem's activation term within 15 % of the bytes saved for backward


def base_shape() -> gpumem.BackboneShape:
    from transformers import HubertConfig

    return gpumem.shape_from_config(HubertConfig())


def test_the_base_shape_is_counted_without_memory():
    shape = base_shape()
    assert (shape.hidden, shape.layers, shape.ffn, shape.hop) == (768, 12, 3072, 320)
    assert 94e6 < shape.params < 95e6 and 4.1e6 < shape.conv_params < 4.3e6  # hubert-base: 94.4M, conv 4.2M


def test_training_memory_counts_weights_gradients_adamw_and_activations():
    shape = base_shape()

    def estimate(**overrides):
        settings = dict(batch_size=8, crop_s=6.0, precision="bf16", freeze_feature_encoder=True, frame_heads=(512,))
        return gpumem.training_memory(shape, **{**settings, **overrides})

    frozen, trained = estimate(), estimate(freeze_feature_encoder=False)
    assert trained.gradients - frozen.gradients == 4 * shape.conv_params
    assert trained.optimizer == 2 * trained.gradients  # AdamW: two fp32 moments per trained parameter
    assert trained.activations > frozen.activations  # the conv encoder's activations are kept
    assert estimate(precision="fp32").activations > frozen.activations
    assert estimate(batch_size=16).activations > 1.9 * frozen.activations
    assert estimate(attention="eager").activations > frozen.activations
    assert estimate(frame_heads=(64, 512, 4096)).activations > frozen.activations
    assert 2 < frozen.total / 2**30 < 20  # hubert-base, 8 × 6 s in bf16: a few GiB
    with pytest.raises(ValueError, match="precision 'fp8'"):
        estimate(precision="fp8")


def test_extraction_memory_grows_with_the_batch_and_fits_a_small_gpu():
    shape = base_shape()
    small = gpumem.extraction_memory(shape, batch_seconds=40, precision="bf16", kept_layers=1)
    large = gpumem.extraction_memory(shape, batch_seconds=160, precision="bf16", kept_layers=1)
    assert small.gradients == small.optimizer == 0 and large.activations > 3.9 * small.activations
    assert gpumem.fits(large, 8) and not gpumem.fits(large, 0.5)
