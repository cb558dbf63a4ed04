"""`gmptl export`: a trained model out of gmptl, as one ONNX graph or as a stock `transformers` model, each
folder with a model card (`README.md`, `gmptl.model_card`).

- **ONNX** (`export_onnx`): one graph from raw audio to class scores — input normalisation, the backbone's
  convolutions and transformer, pooling and classifier — with inputs `waves` (batch, samples; float32, 0-padded)
  and `lengths` (batch; int64, valid samples of each row), outputs `scores` (the head's scores) and `probs`
  (their softmax); batch and length are dynamic. A padded batch gives each row the scores it gets alone: the
  first convolution's group norm (hubert-base, wav2vec2-base) is computed over each row's valid frames, which is
  what gmptl's per-utterance convolution does, and attention is masked to the valid frames. Beside it
  `gmptl-onnx.json` (classes, sample rate, shortest input, the graph's sha256), which `gmptl predict` reads.
- **transformers** (`export_transformers`): `AutoModelForAudioClassification` of the backbone's type
  (HubertForSequenceClassification …) with the fine-tuned backbone, an identity projector (it commutes with mean
  pooling) and a linear classifier, plus the feature extractor, so that
  `transformers.pipeline("audio-classification", model=OUT)` loads it with stock classes. A linear head is
  reproduced exactly. An AM-Softmax head scores s·cos θ = s·(w/‖w‖)·(x/‖x‖); the stock classifier computes
  (s·w/‖w‖)·x, which is s·cos θ times ‖x‖ > 0: the same top label and ranking, softer or sharper
  probabilities. Attentive pooling has no stock head and is refused, as is a fold ensemble (one model per folder).
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .errors import BackboneError, ConfigError
from .fileio import atomic_path, file_digest
from .model import AMSoftmax, GmptlModel
from .model_card import ExperimentResults, model_card
from .model_folder import load_model
from .onnx_model import ONNX_FILE, ONNX_FORMAT, ONNX_META
from .predict import find_models

log = logging.getLogger(__name__)

OPSET = 17
TARGETS = ("onnx", "transformers")


class _ValidConvFeatures(nn.Module):
    """The backbone's convolutional feature encoder on a padded batch, each row as if it were alone.

    Convolutions without padding keep every valid output independent of the padding; the one thing that mixes
    positions is a group norm over time after the first convolution (`feat_extract_norm: group`), here computed
    over each row's valid positions only.
    """

    def __init__(self, encoder):
        super().__init__()
        self.extractor = encoder.model.feature_extractor
        self.group_norm = encoder.per_utterance_cnn

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if not self.group_norm:
            return self.extractor(waves).transpose(1, 2)
        first, *rest = self.extractor.conv_layers
        hidden = first.conv(waves[:, None])
        kernel, stride = first.conv.kernel_size[0], first.conv.stride[0]
        valid_count = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
        positions = torch.arange(hidden.shape[2], device=hidden.device)[None]
        valid = (positions < valid_count[:, None]).to(hidden.dtype)[:, None]
        count = valid_count.to(hidden.dtype).clamp_min(1.0)[:, None, None]
        mean = (hidden * valid).sum(2, keepdim=True) / count
        var = (((hidden - mean) * valid) ** 2).sum(2, keepdim=True) / count
        norm = first.layer_norm
        hidden = (hidden - mean) / torch.sqrt(var + norm.eps) * norm.weight[None, :, None] + norm.bias[None, :, None]
        hidden = first.activation(hidden)
        for layer in rest:
            hidden = layer(hidden)
        return hidden.transpose(1, 2)


class ScoringGraph(nn.Module):
    """waves (B, S), lengths (B,) → (scores, probs) of the emotion head: what `ONNX_FILE` computes."""

    def __init__(self, model: GmptlModel):
        super().__init__()
        self.model = model
        self.conv = _ValidConvFeatures(model.encoder)

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        encoder = self.model.encoder
        if encoder.normalize_input:
            waves = encoder._normalize(waves, lengths)
        frames = encoder.frame_lengths(lengths)
        extract = self.conv(waves, lengths)
        mask = torch.arange(extract.shape[1], device=waves.device)[None] < frames[:, None]
        projected = encoder.model.feature_projection(extract)
        hidden = projected[0] if isinstance(projected, tuple) else projected
        last = encoder.model.encoder(hidden, attention_mask=mask)[0]
        scores = self.model.emotion(last, mask).float()
        return scores, torch.softmax(scores, dim=1)


def source_model(model: str | Path, fold: int | None) -> tuple[Path, Path | None, str]:
    """(model folder, the experiment's results folder or None, a sentence naming it) of `gmptl export MODEL`."""
    folders, description = find_models(model, fold)
    if len(folders) > 1:
        raise ConfigError(
            f"'{model}' is {len(folders)} fold models (no deploy/ model): an export holds one model; give --fold N, "
            "or build the deploy model (deploy: in the config)"
        )
    path = Path(model)
    exp_dir = None if (path / "model.json").is_file() else path
    if exp_dir is None and path.name == "deploy" and (path.parent / "stages.tsv").is_file():
        exp_dir = path.parent
    return folders[0], exp_dir, description


def export_model(model: str | Path, to: str, out: str | Path, fold: int | None = None) -> Path:
    """Export the model `model` stands for (a model folder, or results/<exp> with its deploy model or `fold`) as
    `to` (onnx | transformers) into the folder `out`, with its model card; `out` appears only when complete."""
    if to not in TARGETS:
        raise ConfigError(f"--to {to}: one of {', '.join(TARGETS)}")
    folder, exp_dir, description = source_model(model, fold)
    loaded, meta = load_model(folder)
    if loaded.emotion is None:
        stage = meta.get("stage")
        raise BackboneError(f"model folder '{folder}' has no emotion head (stage '{stage}'); export a stage-2 model")
    loaded.eval()
    results = ExperimentResults.read(exp_dir) if exp_dir is not None else None
    meta = {**meta, "stage_ids": stage_ids(folder, exp_dir, int(meta.get("fold", -1)), meta.get("seed"))}
    log.info("exporting %s as %s into '%s'", description, to, out)
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        if to == "onnx":
            notes = export_onnx(loaded, meta, tmp)
            usage = onnx_usage(meta)
        else:
            notes = export_transformers(loaded, meta, tmp)
            usage = transformers_usage()
        card = model_card(meta, kind=to, results=results, usage=usage, notes=notes)
        (tmp / "README.md").write_text(card, encoding="utf-8")
    return Path(out)


def stage_ids(folder: Path, exp_dir: Path | None, fold: int, seed) -> dict[str, str]:
    """Stage → recipe id of the stages this model was built from (its experiment's stages.tsv, this fold), or
    of the model's own cache folder (results/cache/<stage>/<id>/fold<N>)."""
    ids = {}
    stages = exp_dir / "stages.tsv" if exp_dir is not None else None
    if stages is not None and stages.is_file():
        table = pd.read_csv(stages, sep="\t", dtype=str, keep_default_na=False)
        rows = table[(table["fold"] == str(fold)) & (table.get("seed", str(seed)) == str(seed))]
        for _, row in rows.iterrows():
            label = row["stage"] + (f" {row['head']}" if row.get("head") else "")
            ids[label] = row["id"]
    resolved = folder.resolve()
    if not ids and resolved.parent.parent.parent.name == "cache":
        ids[resolved.parent.parent.name] = resolved.parent.name
    return ids


# --- ONNX -----------------------------------------------------------------------------------------------------


def check_exportable(model: GmptlModel) -> None:
    """What the ONNX graph cannot express, as one sentence."""
    if model.encoder.per_utterance:
        raise ConfigError(
            f"a {model.encoder.model.config.model_type} backbone encodes each utterance alone (its positional "
            "convolutions would see the padding), which one batched ONNX graph cannot express; export hubert, "
            "wav2vec2 or wavlm models"
        )


def export_onnx(model: GmptlModel, meta: dict, out: Path) -> list[str]:
    """Write `ONNX_FILE` and `ONNX_META` into `out`; returns the card's notes (none: the scores are exact)."""
    check_exportable(model)
    graph = ScoringGraph(model).eval()
    rate = int(meta["audio"]["sample_rate"])
    example_lengths = torch.tensor([rate, rate * 3 // 4])
    example = torch.zeros(2, rate)
    example[0].normal_(0, 0.1)
    example[1, : rate * 3 // 4].normal_(0, 0.1)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on shape arithmetic: the graph is checked against torch
        torch.onnx.export(
            graph,
            (example, example_lengths),
            str(out / ONNX_FILE),
            input_names=["waves", "lengths"],
            output_names=["scores", "probs"],
            dynamic_axes={
                "waves": {0: "batch", 1: "samples"},
                "lengths": {0: "batch"},
                "scores": {0: "batch"},
                "probs": {0: "batch"},
            },
            opset_version=OPSET,
            dynamo=False,
        )
    description = {
        "format": ONNX_FORMAT,
        "classes": meta["spec"]["classes"],
        "sample_rate": rate,
        "min_samples": int(meta["audio"]["min_samples"]),
        "opset": OPSET,
        "inputs": {
            "waves": "float32 (batch, samples): mono audio at sample_rate, rows 0-padded to the longest",
            "lengths": "int64 (batch): valid samples of each row",
        },
        "outputs": {"scores": "float32 (batch, classes): the head's scores", "probs": "their softmax"},
        "source": {key: meta.get(key) for key in ("stage", "fold", "seed", "code_version", "backbone_source")},
        "files": {ONNX_FILE: file_digest(out / ONNX_FILE, length=None)},
    }
    (out / ONNX_META).write_text(json.dumps(description, indent=2, default=str) + "\n")
    return []


def onnx_usage(meta: dict) -> str:
    rate = int(meta["audio"]["sample_rate"])
    return f"""With gmptl (torch is imported by the command; the scores come from onnxruntime):

```
gmptl predict --model THIS_FOLDER recording.wav …
```

With onnxruntime, numpy and soundfile only (mono audio at {rate} Hz; resample other rates first):

```python
import json, numpy as np, onnxruntime as ort, soundfile as sf
info = json.load(open("THIS_FOLDER/gmptl-onnx.json"))
session = ort.InferenceSession("THIS_FOLDER/model.onnx", providers=["CPUExecutionProvider"])
wave, rate = sf.read("recording.wav", dtype="float32")
assert rate == info["sample_rate"] and wave.ndim == 1
probs = session.run(["probs"], {{"waves": wave[None], "lengths": np.array([len(wave)], dtype=np.int64)}})[0][0]
print(info["classes"][int(probs.argmax())], dict(zip(info["classes"], probs.round(3))))
```

Several recordings: pad them with zeros to one length and pass their lengths; each row scores as if alone."""


# --- transformers ---------------------------------------------------------------------------------------------


def export_transformers(model: GmptlModel, meta: dict, out: Path) -> list[str]:
    """Save a stock audio-classification model and its feature extractor into `out`; returns the card's notes."""
    from transformers import AutoModelForAudioClassification, Wav2Vec2FeatureExtractor

    spec = model.spec
    if spec.emotion_pooling != "mean":
        raise ConfigError(
            f"the model pools frames with '{spec.emotion_pooling}' pooling, which no stock transformers "
            "audio-classification head computes (they mean-pool); export it --to onnx instead"
        )
    backbone = model.encoder.model
    config = backbone.config.__class__.from_dict(backbone.config.to_dict())
    config.num_labels = len(spec.classes)
    config.id2label = dict(enumerate(spec.classes))
    config.label2id = {label: i for i, label in enumerate(spec.classes)}
    config.classifier_proj_size = config.hidden_size
    config.use_weighted_layer_sum = False
    stock = AutoModelForAudioClassification.from_config(config)
    getattr(stock, stock.base_model_prefix).load_state_dict(backbone.state_dict())
    weight, bias, notes = _linear_head(model)
    with torch.no_grad():
        stock.projector.weight.copy_(torch.eye(config.hidden_size))
        stock.projector.bias.zero_()
        stock.classifier.weight.copy_(weight)
        stock.classifier.bias.copy_(bias)
    stock.eval().save_pretrained(out, safe_serialization=True)
    Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=int(meta["audio"]["sample_rate"]),
        padding_value=0.0,
        do_normalize=bool(model.encoder.normalize_input),
        return_attention_mask=False,
    ).save_pretrained(out)
    return notes


def _linear_head(model: GmptlModel) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The stock classifier's weight and bias, and what it cannot reproduce."""
    classifier = model.emotion.classifier
    if isinstance(classifier, AMSoftmax):
        weight = classifier.scale * F.normalize(classifier.weight.detach().float(), dim=-1)
        note = (
            "The transformers export scores the AM-Softmax head as a linear layer: s·(w/‖w‖)·x instead of "
            "s·(w/‖w‖)·(x/‖x‖). Both rank the classes identically (the same top label), but its "
            "probabilities are sharper or softer by the pooled vector's norm; for gmptl's exact scores use the "
            "ONNX export or the gmptl model folder."
        )
        return weight, torch.zeros(len(weight)), [note]
    return classifier.linear.weight.detach().float(), classifier.linear.bias.detach().float(), []


def transformers_usage() -> str:
    return """With the stock transformers API (no custom code, no `trust_remote_code`):

```python
from transformers import pipeline
classify = pipeline("audio-classification", model="THIS_FOLDER")
print(classify("recording.wav"))          # a file path needs ffmpeg; or {"raw": wave, "sampling_rate": 16000}
```

or `AutoModelForAudioClassification.from_pretrained("THIS_FOLDER")` with
`AutoFeatureExtractor.from_pretrained("THIS_FOLDER")`. Give one recording at a time (or pass the attention
mask): the model mean-pools over all frames it is given."""
