"""`gmptl export`: the ONNX graph against the torch model (padded batches, every backbone kind), the stock
transformers model, the model card, and what cannot be exported."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from gmptl.cli import main
from gmptl.errors import BackboneError, ConfigError
from gmptl.export import export_model
from gmptl.model import HeadSpec, build_model
from gmptl.model_folder import save_model
from gmptl.predict import predict_files

pytest.importorskip("onnxruntime")

CLASSES = ["neu", "hap", "ang", "sad"]
SCORES = [f"score_{c}" for c in CLASSES]


def tiny_backbone_of(kind: str, out) -> str:
    """A tiny random backbone of `kind` (hubert: group-norm convolutions; wav2vec2-large style: layer norm)."""
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model, WavLMConfig, WavLMModel

    common = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )
    torch.manual_seed(3)
    if kind == "hubert":
        model = HubertModel(HubertConfig(feat_extract_norm="group", **common))
    elif kind == "wav2vec2":
        model = Wav2Vec2Model(Wav2Vec2Config(feat_extract_norm="layer", do_stable_layer_norm=True, **common))
    else:
        model = WavLMModel(WavLMConfig(feat_extract_norm="layer", do_stable_layer_norm=True, **common))
    model.save_pretrained(out)
    return str(out)


def model_folder(backbone: str, out, pooling="mean", classifier="amsoftmax", seed=1):
    torch.manual_seed(seed)
    model = build_model(backbone, HeadSpec(CLASSES, pooling, classifier))
    with torch.no_grad():
        for p in model.head_parameters():
            p.normal_(0, 1.0)
    save_model(model, out, {"stage": "stage2", "fold": 1, "seed": 42}, sample_rate=16000)
    return model.eval()


def waves_of(lengths, seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    t = [np.arange(n) / 16000 for n in lengths]
    return [
        (0.2 * np.sin(2 * np.pi * rng.uniform(100, 900) * x) + 0.05 * rng.normal(size=len(x))).astype(np.float32)
        for x in t
    ]


def padded(waves):
    lengths = torch.tensor([len(w) for w in waves])
    return torch.nn.utils.rnn.pad_sequence([torch.from_numpy(w) for w in waves], batch_first=True), lengths


@pytest.mark.parametrize(
    "kind, pooling, classifier",
    [
        ("hubert", "mean", "amsoftmax"),
        ("hubert", "attentive", "linear"),
        ("wav2vec2", "mean", "linear"),
        ("wavlm", "mean", "amsoftmax"),
    ],
)
def test_the_onnx_graph_scores_padded_batches_as_the_torch_model_scores_each_recording(
    tmp_path, kind, pooling, classifier
):
    import onnxruntime as ort

    backbone = tiny_backbone_of(kind, tmp_path / "backbone")
    model = model_folder(backbone, tmp_path / "model", pooling, classifier)
    export_model(tmp_path / "model", "onnx", tmp_path / "onnx")
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    for lengths in ([16000, 23000, 7000], [9000], [40000, 5000]):  # other batch sizes and lengths than traced
        waves = waves_of(lengths, seed=len(lengths))
        batch, lens = padded(waves)
        scores, probs = session.run(None, {"waves": batch.numpy(), "lengths": lens.numpy()})
        with torch.no_grad():
            alone = torch.cat([model(torch.from_numpy(w)[None], torch.tensor([len(w)]))["emotion"] for w in waves])
        np.testing.assert_allclose(scores, alone.numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(probs, torch.softmax(alone, 1).numpy(), atol=1e-5, rtol=0)


def test_predict_scores_an_onnx_export_like_the_model_folder(tmp_path, tiny_backbone):
    model_folder(tiny_backbone, tmp_path / "model")
    paths = []
    for i, wave in enumerate(waves_of([12000, 30000, 8000, 17000])):
        paths.append(str(tmp_path / f"clip{i}.wav"))
        sf.write(paths[-1], wave, 16000)
    assert main(["export", str(tmp_path / "model"), "--to", "onnx", str(tmp_path / "onnx")]) == 0
    torch_table = predict_files(tmp_path / "model", paths, batch_seconds=2.0)
    onnx_table = predict_files(tmp_path / "onnx", paths, batch_seconds=2.0)
    assert onnx_table["predicted"].tolist() == torch_table["predicted"].tolist()
    np.testing.assert_allclose(onnx_table[SCORES].to_numpy(), torch_table[SCORES].to_numpy(), atol=1e-5)
    described = json.loads((tmp_path / "onnx" / "gmptl-onnx.json").read_text())
    assert described["classes"] == CLASSES and described["sample_rate"] == 16000


def test_an_altered_onnx_graph_is_refused_naming_the_file(tmp_path, tiny_backbone, capsys):
    model_folder(tiny_backbone, tmp_path / "model")
    export_model(tmp_path / "model", "onnx", tmp_path / "onnx")
    with open(tmp_path / "onnx" / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(BackboneError, match="model.onnx' is missing or differs from its recorded sha256"):
        predict_files(tmp_path / "onnx", [str(tmp_path / "x.wav")])


def test_the_transformers_export_loads_with_stock_classes_and_keeps_the_top_label(tmp_path, tiny_backbone):
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification, pipeline

    waves = waves_of([12000, 20000, 9000, 15000, 30000], seed=4)
    for classifier in ("linear", "amsoftmax"):
        model = model_folder(tiny_backbone, tmp_path / classifier, classifier=classifier, seed=5)
        export_model(tmp_path / classifier, "transformers", tmp_path / f"{classifier}_hf")
        stock = AutoModelForAudioClassification.from_pretrained(tmp_path / f"{classifier}_hf").eval()
        assert type(stock).__name__ == "HubertForSequenceClassification"
        assert [stock.config.id2label[i] for i in range(4)] == CLASSES
        extractor = AutoFeatureExtractor.from_pretrained(tmp_path / f"{classifier}_hf")
        classify = pipeline("audio-classification", model=str(tmp_path / f"{classifier}_hf"))
        for wave in waves:
            with torch.no_grad():
                ours = model(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))["emotion"][0]
                inputs = extractor(wave, sampling_rate=16000, return_tensors="pt")
                theirs = stock(**inputs).logits[0]
            assert int(theirs.argmax()) == int(ours.argmax())
            assert classify({"raw": wave, "sampling_rate": 16000}, top_k=1)[0]["label"] == CLASSES[int(ours.argmax())]
            if classifier == "linear":  # exact: the same affine map of the same mean-pooled frames
                np.testing.assert_allclose(theirs.numpy(), ours.numpy(), atol=1e-4)
            else:  # s·cos θ times the pooled norm: the same ranking
                assert torch.argsort(theirs).tolist() == torch.argsort(ours).tolist()
    card = (tmp_path / "amsoftmax_hf" / "README.md").read_text()
    assert "same top label" in card and "AM-Softmax" in card
    assert "AM-Softmax head as a linear layer" not in (tmp_path / "linear_hf" / "README.md").read_text()


def test_what_a_format_cannot_express_is_refused_in_one_sentence(tmp_path, tiny_backbone):
    model_folder(tiny_backbone, tmp_path / "attentive", pooling="attentive")
    with pytest.raises(ConfigError, match="'attentive' pooling, which no stock transformers"):
        export_model(tmp_path / "attentive", "transformers", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing partial
    with pytest.raises(ConfigError, match="--to tflite: one of onnx, transformers"):
        export_model(tmp_path / "attentive", "tflite", tmp_path / "out")
    from transformers import Data2VecAudioConfig, Data2VecAudioModel

    config = Data2VecAudioConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=5,
        num_conv_pos_embedding_groups=4,
    )
    Data2VecAudioModel(config).save_pretrained(tmp_path / "data2vec")
    model_folder(str(tmp_path / "data2vec"), tmp_path / "d2v")
    with pytest.raises(ConfigError, match="data2vec-audio backbone encodes each utterance alone"):
        export_model(tmp_path / "d2v", "onnx", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_every_export_carries_a_hugging_face_model_card(tmp_path, tiny_backbone):
    model_folder(tiny_backbone, tmp_path / "model")
    export_model(tmp_path / "model", "onnx", tmp_path / "onnx")
    text = (tmp_path / "onnx" / "README.md").read_text()
    assert text.startswith("---\n")
    header = yaml.safe_load(text.split("---\n")[1])
    assert header["pipeline_tag"] == "audio-classification" and header["library_name"] == "onnx"
    for section in (
        "## Data and protocol",
        "## Results",
        "## Intended use and limitations",
        "## How it was trained",
        "## How to run it",
    ):
        assert section in text
    assert "No evaluation tables were found" in text  # a bare model folder: the card says so
