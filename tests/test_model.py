"""Heads, pooling, AM-Softmax and the model folder round trip."""

from __future__ import annotations

import pytest
import torch

from gmptl.model import AMSoftmax, HeadSpec, Pooling, build_model, load_model, masked_mean, save_model, with_margin

CLASSES = ["neu", "hap", "ang", "sad"]


def test_pooling_ignores_padded_frames():
    hidden = torch.randn(2, 6, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    padded = hidden.clone()
    padded[0, 3:] = 1e6
    torch.testing.assert_close(masked_mean(padded, mask)[0], hidden[0, :3].mean(0))
    attentive = Pooling("attentive", 4)
    torch.testing.assert_close(attentive(padded, mask)[0], attentive(hidden[:1, :3], mask[:1, :3])[0])


def test_am_softmax_scores_are_scaled_cosines_and_training_subtracts_the_margin_from_the_target_only():
    head = AMSoftmax(8, 4, margin=0.2, scale=30.0)
    x, targets = torch.randn(5, 8), torch.tensor([0, 1, 2, 3, 0])
    scores = head(x)
    cosine = torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(head.weight, dim=1).T
    torch.testing.assert_close(scores, 30.0 * cosine)
    diff = scores - with_margin(scores, targets, 30.0 * 0.2)
    expected = torch.zeros_like(diff)
    expected[torch.arange(5), targets] = 30.0 * 0.2
    torch.testing.assert_close(diff, expected)


def test_heads_follow_the_spec(tiny_backbone):
    spec = HeadSpec(CLASSES, "mean", "amsoftmax", gender_pooling="mean", gmp_heads={"L1_k8": 8, "L2_k16": 16})
    model = build_model(tiny_backbone, spec).eval()
    waves, lengths = torch.randn(2, 16000), torch.tensor([16000, 9000])
    out = model(waves, lengths)
    assert out["emotion"].shape == (2, 4) and out["gender"].shape == (2, 2)
    assert out["L1_k8"].shape == (2, 49, 8) and out["L2_k16"].shape == (2, 49, 16)
    assert out["frame_mask"].sum(1).tolist() == [49, 27]
    bare = build_model(tiny_backbone, HeadSpec(CLASSES, None)).eval()
    assert set(bare(waves, lengths)) == {"frame_mask"}


def test_model_folder_round_trip_and_backbone_is_reusable(tmp_path, tiny_backbone):
    torch.manual_seed(0)
    spec = HeadSpec(CLASSES, "attentive", "linear", gender_pooling="mean")
    model = build_model(tiny_backbone, spec).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    save_model(model, tmp_path / "m", {"stage": "mtl"})
    loaded, meta = load_model(tmp_path / "m")
    waves, lengths = torch.randn(2, 12000), torch.tensor([12000, 8000])
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(waves, lengths)["emotion"], model(waves, lengths)["emotion"])
    assert meta["stage"] == "mtl" and meta["spec"]["emotion_pooling"] == "attentive"
    other = build_model(str(tmp_path / "m" / "backbone"), HeadSpec(CLASSES, "mean"))
    torch.testing.assert_close(
        other.encoder.model.encoder.layers[0].attention.k_proj.weight,
        model.encoder.model.encoder.layers[0].attention.k_proj.weight,
    )


def test_model_folder_without_metadata_is_a_clear_error(tmp_path):
    from gmptl.errors import BackboneError

    (tmp_path / "m").mkdir()
    with pytest.raises(BackboneError, match="has no model.json"):
        load_model(tmp_path / "m")
