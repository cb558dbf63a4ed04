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
