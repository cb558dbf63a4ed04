"""Heads, pooling, AM-Softmax, and model folders: round trip, self-description, integrity, no pickle."""

from __future__ import annotations

import json

import pytest
import torch

from gmptl.errors import BackboneError
from gmptl.model import AMSoftmax, HeadSpec, Pooling, build_model, masked_mean, with_margin
from gmptl.model_folder import load_model, save_model

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
    (tmp_path / "m").mkdir()
    with pytest.raises(BackboneError, match=r"model folder '.*m' has no model.json"):
        load_model(tmp_path / "m")


@pytest.fixture
def saved(tmp_path, tiny_backbone):
    torch.manual_seed(0)
    model = build_model(tiny_backbone, HeadSpec(CLASSES, "mean", "amsoftmax", 0.3, 20.0, gmp_heads={"L2_k8": 8}))
    save_model(model, tmp_path / "m", {"stage": "stage2", "fold": 3}, sample_rate=8000)
    return tmp_path / "m"


def test_model_folder_describes_itself_and_keeps_no_pickle(saved):
    meta = json.loads((saved / "model.json").read_text())
    assert sorted(p.name for p in saved.iterdir()) == ["backbone", "heads.safetensors", "model.json"]
    assert meta["spec"] == {
        "classes": CLASSES,
        "emotion_pooling": "mean",
        "emotion_classifier": "amsoftmax",
        "margin": 0.3,
        "scale": 20.0,
        "gender_pooling": None,
        "gmp_heads": {"L2_k8": 8},
    }
    assert meta["audio"] == {
        "sample_rate": 8000,
        "channels": 1,
        "frame_hop": 320,
        "frame_rate": 25.0,
        "input_normalization": False,
        "min_samples": 400,
    }
    assert meta["backbone"] == {"folder": "backbone", "model_type": "hubert", "hidden_size": 32, "num_layers": 2}
    assert meta["stage"] == "stage2" and meta["fold"] == 3
    assert set(meta["files"]) == {
        "heads.safetensors",
        "backbone/config.json",
        "backbone/model.safetensors",
        "backbone/preprocessor_config.json",
    }
    assert json.loads((saved / "backbone" / "preprocessor_config.json").read_text())["sampling_rate"] == 8000


def test_loading_never_calls_torch_load(saved, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.load called while loading a model folder")

    monkeypatch.setattr(torch, "load", refuse)
    model, meta = load_model(saved)
    assert model.emotion is not None and meta["audio"]["sample_rate"] == 8000


def test_an_altered_heads_file_is_named(saved):
    data = bytearray((saved / "heads.safetensors").read_bytes())
    data[-1] ^= 0x01
    (saved / "heads.safetensors").write_bytes(bytes(data))
    with pytest.raises(BackboneError, match=r"'.*m/heads.safetensors' differs from the sha256 recorded in model.json"):
        load_model(saved)


def test_a_missing_backbone_file_is_named(saved):
    (saved / "backbone" / "model.safetensors").unlink()
    with pytest.raises(BackboneError, match=r"lacks 'backbone/model.safetensors' \(listed in model.json\)"):
        load_model(saved)


def test_a_missing_or_broken_model_json_is_named(saved):
    (saved / "model.json").write_text("{not json")
    with pytest.raises(BackboneError, match=r"'.*m/model.json' is not valid JSON"):
        load_model(saved)
    (saved / "model.json").unlink()
    with pytest.raises(BackboneError, match="has no model.json"):
        load_model(saved)


def test_a_pickled_weight_file_beside_the_backbone_is_refused(saved):
    torch.save({"w": torch.zeros(1)}, saved / "backbone" / "pytorch_model.bin")
    with pytest.raises(BackboneError, match=r"pytorch_model.bin' is a pickled weight file; gmptl loads safetensors"):
        load_model(saved)


class RunsCode:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('ran')",))


def test_a_folder_of_another_format_is_refused_and_never_unpickled(saved, monkeypatch, tmp_path):
    meta = json.loads((saved / "model.json").read_text())
    legacy = {k: v for k, v in meta.items() if k not in ("format", "files", "audio", "backbone")}
    (saved / "model.json").write_text(json.dumps(legacy))
    monkeypatch.chdir(tmp_path)
    torch.save({"emotion.classifier.weight": RunsCode()}, saved / "heads.pt")  # torch.load(weights_only=False) runs it
    (saved / "heads.safetensors").unlink()
    with pytest.raises(BackboneError, match=r"has format 'None'; this gmptl reads gmptl-model/2"):
        load_model(saved)
    assert not (tmp_path / "PWNED").exists()


def test_metadata_cannot_overwrite_the_model_description(tmp_path, tiny_backbone):
    model = build_model(tiny_backbone, HeadSpec(CLASSES, "mean"))
    with pytest.raises(ValueError, match=r"metadata keys \['files'\] are reserved"):
        save_model(model, tmp_path / "m", {"files": {}})


# --- each head and switch, stated exactly ----------------------------------------------------------


def test_masked_mean_divides_by_the_valid_frames_and_an_empty_row_is_zero():
    hidden = torch.arange(12, dtype=torch.float32).reshape(2, 3, 2)
    mask = torch.tensor([[True, False, False], [False, False, False]])
    torch.testing.assert_close(masked_mean(hidden, mask), torch.tensor([[0.0, 1.0], [0.0, 0.0]]))


def test_attentive_pooling_is_a_softmax_over_valid_frames_and_mean_pooling_has_no_weights():
    torch.manual_seed(0)
    attentive, mean = Pooling("attentive", 4), Pooling("mean", 4)
    assert list(mean.parameters()) == [] and attentive.score is not None
    hidden = torch.randn(1, 5, 4)
    mask = torch.tensor([[True, True, True, False, False]])
    weights = torch.softmax(attentive.score(hidden[0, :3]).squeeze(-1), dim=0)
    torch.testing.assert_close(attentive(hidden, mask)[0], (weights[:, None] * hidden[0, :3]).sum(0))
    assert not torch.allclose(attentive(hidden, mask), mean(hidden, mask))


def test_the_margin_is_subtracted_for_any_nonzero_margin_and_every_class_count():
    scores, targets = torch.zeros(2, 4), torch.tensor([0, 1])  # the batch holds neither class 2 nor 3
    expected = torch.tensor([[-1.0, 0, 0, 0], [0, -1.0, 0, 0]])
    torch.testing.assert_close(with_margin(scores, targets, 1.0), expected)
    assert with_margin(scores, targets, 0.0) is scores


def test_am_softmax_starts_from_small_weights():
    torch.manual_seed(0)
    weight = AMSoftmax(256, 4, margin=0.2, scale=30.0).weight
    assert 0.008 < float(weight.std()) < 0.012  # N(0, 0.01²), as the AM-Softmax recipes initialise it


@pytest.mark.parametrize("classifier", ["linear", "amsoftmax"])
def test_heads_are_built_as_their_spec_says(tiny_backbone, classifier):
    from gmptl.model import LinearClassifier

    spec = HeadSpec(CLASSES, "attentive", classifier, 0.3, 20.0, gender_pooling="attentive")
    model = build_model(tiny_backbone, spec)
    emotion = model.emotion.classifier
    if classifier == "amsoftmax":
        assert isinstance(emotion, AMSoftmax) and (emotion.margin, emotion.scale) == (0.3, 20.0)
        assert model.emotion_margin == pytest.approx(6.0)
    else:
        assert isinstance(emotion, LinearClassifier) and model.emotion_margin == 0.0
    assert model.emotion.pooling.score is not None and model.gender.pooling.score is not None
    assert model.gender.pooling.score.in_features == model.encoder.hidden_size
    mean = build_model(tiny_backbone, HeadSpec(CLASSES, "mean", gender_pooling=None))
    assert mean.emotion.pooling.score is None and mean.gender is None
    assert build_model(tiny_backbone, HeadSpec(CLASSES, None)).emotion_margin == 0.0


def test_the_mask_embedding_starts_as_the_backbones_own(tiny_backbone):
    model = build_model(tiny_backbone, HeadSpec(CLASSES, "mean"))
    torch.testing.assert_close(model.mask_embedding.detach(), model.encoder.model.masked_spec_embed.detach().float())
    assert model.mask_embedding.requires_grad


def test_a_backbone_without_a_mask_embedding_gets_a_small_random_one(tmp_path):
    from transformers import HubertConfig, HubertModel

    from gmptl.backbone import make_tiny_hubert

    make_tiny_hubert(tmp_path / "b", hidden_size=32, num_layers=1)
    config = HubertConfig.from_pretrained(tmp_path / "b")
    config.mask_time_prob = config.mask_feature_prob = 0.0  # HF then builds no masked_spec_embed
    HubertModel(config).save_pretrained(tmp_path / "b")
    model = build_model(str(tmp_path / "b"), HeadSpec(CLASSES, "mean"))
    assert getattr(model.encoder.model, "masked_spec_embed", None) is None
    values = model.mask_embedding.detach()
    assert values.shape == (32,) and values.min() >= -0.5 and values.max() < 0.5 and values.std() > 0.1


def test_build_model_follows_the_backbones_input_normalization(tmp_path, tiny_backbone):
    import shutil

    assert build_model(tiny_backbone, HeadSpec(CLASSES, "mean")).encoder.normalize_input is False
    copy = tmp_path / "normalizing"
    shutil.copytree(tiny_backbone, copy)
    config = json.loads((copy / "preprocessor_config.json").read_text())
    (copy / "preprocessor_config.json").write_text(json.dumps({**config, "do_normalize": True}))
    assert build_model(str(copy), HeadSpec(CLASSES, "mean")).encoder.normalize_input is True


def test_a_full_time_or_channel_mask_hides_the_audio(tiny_backbone):
    torch.manual_seed(0)
    model = build_model(tiny_backbone, HeadSpec(CLASSES, "mean")).eval()
    waves, lengths = torch.randn(2, 16000), torch.tensor([16000, 16000])
    waves[1] = torch.randn(16000) * 3  # another utterance of the same length
    frames = model(waves, lengths)["frame_mask"]
    everything = torch.ones_like(frames)
    with torch.no_grad():
        plain = model(waves, lengths)["emotion"]
        timed = model(waves, lengths, time_mask=everything)["emotion"]
        channels = model(waves, lengths, channel_mask=torch.ones(2, model.encoder.hidden_size, dtype=torch.bool))
        assert not torch.allclose(plain[0], plain[1])
        torch.testing.assert_close(timed[0], timed[1])  # every frame is the mask embedding
        torch.testing.assert_close(channels["emotion"][0], channels["emotion"][1])  # every channel is zero
        model.mask_embedding.add_(1.0)
        assert not torch.allclose(model(waves, lengths, time_mask=everything)["emotion"], timed)
