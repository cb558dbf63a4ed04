"""One model class: a speech backbone plus heads (utterance emotion, utterance gender, GMP frame heads).

A training stage is a choice of initial weights, active heads and loss weights (see `stages`);
all stages share this class and the training loop in `train`.

A model folder holds `backbone/` (save_pretrained in safetensors, readable by `backbone.load_backbone`,
so the feature rule and later stages can start from it), `heads.safetensors` (every other weight) and
`model.json`: everything needed to rebuild the model without the workflow (head layout, classes, audio
format, backbone kind), the sha256 of every weight/config file (checked on load), and provenance.
Nothing on the load path unpickles: weights are read with safetensors (a pre-safetensors `heads.pt`
with `torch.load(weights_only=True)`).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import Wav2Vec2FeatureExtractor

from .backbone import SpeechEncoder, input_normalization, load_backbone
from .errors import BackboneError
from .fileio import file_digest

log = logging.getLogger(__name__)

FORMAT = "gmptl-model/2"
DEFAULT_SAMPLE_RATE = 16000  # the rate every supported backbone was pre-trained at
HEADS = "heads.safetensors"
LEGACY_HEADS = "heads.pt"  # written before FORMAT 2: pickled, read with weights_only=True
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
RESERVED = ("format", "spec", "audio", "backbone", "files")


@dataclass
class HeadSpec:
    """Which heads a model carries and how they are shaped."""

    classes: list[str]
    emotion_pooling: str | None = "mean"  # None: no emotion head
    emotion_classifier: str = "linear"  # linear | amsoftmax
    margin: float = 0.2
    scale: float = 30.0
    gender_pooling: str | None = None  # None: no gender head
    gmp_heads: dict[str, int] = field(default_factory=dict)  # "L9_k512" -> k


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over valid frames: (B, T, D) with (B, T) mask → (B, D)."""
    weights = mask.to(hidden.dtype)[..., None]
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class Pooling(nn.Module):
    """Utterance pooling over valid frames only: `mean` or `attentive` (learned frame weights)."""

    def __init__(self, kind: str, dim: int):
        super().__init__()
        self.kind = kind
        self.score = nn.Linear(dim, 1) if kind == "attentive" else None

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.score is None:
            return masked_mean(hidden, mask)
        scores = self.score(hidden).squeeze(-1).masked_fill(~mask, torch.finfo(hidden.dtype).min)
        weights = torch.softmax(scores.float(), dim=1).to(hidden.dtype)
        return (hidden * weights[..., None]).sum(1)


class AMSoftmax(nn.Module):
    """Cosine classifier: scores s·cos θ. Training subtracts the margin from the target (`with_margin`)."""

    def __init__(self, dim: int, classes: int, margin: float, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, dim) * 0.01)
        self.margin, self.scale = margin, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * (F.normalize(x.float(), dim=-1) @ F.normalize(self.weight.float(), dim=-1).T)


def with_margin(scores: torch.Tensor, targets: torch.Tensor, margin: float) -> torch.Tensor:
    """AM-Softmax training logits s·(cos θ − m·onehot) from scores s·cos θ (`margin` = s·m)."""
    if margin == 0:
        return scores
    return scores - margin * F.one_hot(targets, scores.shape[1]).to(scores.dtype)


class LinearClassifier(nn.Module):
    def __init__(self, dim: int, classes: int):
        super().__init__()
        self.linear = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).float()


class UtteranceHead(nn.Module):
    def __init__(self, pooling: str, dim: int, classifier: nn.Module):
        super().__init__()
        self.pooling = Pooling(pooling, dim)
        self.classifier = classifier

    def forward(self, hidden, mask) -> torch.Tensor:
        return self.classifier(self.pooling(hidden, mask))


class GmptlModel(nn.Module):
    """Backbone + heads. `forward` returns the scores of every active head and the frame mask."""

    def __init__(self, encoder: SpeechEncoder, spec: HeadSpec):
        super().__init__()
        self.encoder, self.spec = encoder, spec
        dim, n_classes = encoder.hidden_size, len(spec.classes)
        self.emotion = None
        if spec.emotion_pooling:
            classifier = (
                AMSoftmax(dim, n_classes, spec.margin, spec.scale)
                if spec.emotion_classifier == "amsoftmax"
                else LinearClassifier(dim, n_classes)
            )
            self.emotion = UtteranceHead(spec.emotion_pooling, dim, classifier)
        self.gender = UtteranceHead(spec.gender_pooling, dim, LinearClassifier(dim, 2)) if spec.gender_pooling else None
        self.frame_heads = nn.ModuleDict({name: nn.Linear(dim, k) for name, k in spec.gmp_heads.items()})
        embed = getattr(encoder.model, "masked_spec_embed", None)
        init = embed.detach().clone() if embed is not None else torch.rand(dim) - 0.5
        self.mask_embedding = nn.Parameter(init.float())

    @property
    def emotion_margin(self) -> float:
        """s·m of an AM-Softmax emotion head (0 for a linear head): what training subtracts from the target."""
        classifier = self.emotion.classifier if self.emotion is not None else None
        return classifier.scale * classifier.margin if isinstance(classifier, AMSoftmax) else 0.0

    def forward(self, waves, lengths, *, time_mask=None, channel_mask=None) -> dict[str, torch.Tensor]:
        """Scores of every head. `time_mask` (B, T) replaces frames by the mask embedding, `channel_mask`
        (B, D) zeroes feature channels; both act on the projected features (the transformer's input)."""
        with zeroed_channels(self.encoder, channel_mask):
            _, hidden, mask = self.encoder(waves, lengths, (), time_mask, self.mask_embedding)
        out = {"frame_mask": mask}
        if self.emotion is not None:
            out["emotion"] = self.emotion(hidden, mask)
        if self.gender is not None:
            out["gender"] = self.gender(hidden, mask)
        for name, head in self.frame_heads.items():
            out[name] = head(hidden).float()
        return out

    def head_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith("encoder.")]

    def backbone_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())


@contextlib.contextmanager
def zeroed_channels(encoder: SpeechEncoder, channel_mask: torch.Tensor | None) -> Iterator[None]:
    """Zero the channels where `channel_mask` (B, D) is true in the output of the backbone's feature projection.

    A forward hook, so it holds for batched and utterance-by-utterance encoding alike (rows are consumed
    in order). No-op without a mask.
    """
    if channel_mask is None:
        yield
        return
    row = 0

    def hook(_module, _inputs, output):
        nonlocal row
        hidden = output[0] if isinstance(output, tuple) else output
        keep = ~channel_mask[row : row + hidden.shape[0], None, :]
        row += hidden.shape[0]
        hidden = hidden * keep.to(hidden.dtype)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = encoder.model.feature_projection.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def build_model(backbone: str, spec: HeadSpec) -> GmptlModel:
    """A model whose backbone comes from `backbone` (hub id, local folder or a model folder's backbone/)."""
    return GmptlModel(SpeechEncoder(load_backbone(backbone), input_normalization(backbone)), spec)


def min_samples(encoder: SpeechEncoder) -> int:
    """The shortest input (samples) from which the backbone makes at least one frame."""
    lengths = torch.arange(1, 64 * encoder.frame_hop + 1)
    return int(lengths[encoder.frame_lengths(lengths) >= 1][0])


def describe_model(model: GmptlModel, sample_rate: int) -> dict:
    """What model.json records so the model can be rebuilt and fed without the workflow."""
    config = model.encoder.model.config
    return {
        "format": FORMAT,
        "spec": asdict(model.spec),
        "audio": {
            "sample_rate": sample_rate,
            "channels": 1,
            "frame_hop": model.encoder.frame_hop,
            "frame_rate": sample_rate / model.encoder.frame_hop,
            "input_normalization": bool(model.encoder.normalize_input),
            "min_samples": min_samples(model.encoder),
        },
        "backbone": {
            "folder": "backbone",
            "model_type": config.model_type,
            "hidden_size": config.hidden_size,
            "num_layers": config.num_hidden_layers,
        },
    }


def save_model(model: GmptlModel, out_dir: str | Path, metadata: dict, *, sample_rate: int | None = None) -> None:
    """Write the model folder (backbone/, heads.safetensors, model.json) into `out_dir`.

    `sample_rate` is the rate the model's input audio is resampled to (the corpus' `sample_rate`);
    without it, `metadata["sample_rate"]`, else 16000.
    """
    metadata = dict(metadata)
    rate = int(sample_rate or metadata.get("sample_rate") or DEFAULT_SAMPLE_RATE)
    metadata.pop("sample_rate", None)
    clash = sorted(set(metadata) & set(RESERVED))
    if clash:
        raise ValueError(f"save_model: metadata keys {clash} are reserved for the model description")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.encoder.model.save_pretrained(out_dir / "backbone", safe_serialization=True)
    Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=rate,
        padding_value=0.0,
        do_normalize=model.encoder.normalize_input,
        return_attention_mask=False,
    ).save_pretrained(out_dir / "backbone")
    heads = {
        name: value.detach().cpu().contiguous().clone()
        for name, value in model.state_dict().items()
        if not name.startswith("encoder.")
    }
    save_file(heads, out_dir / HEADS, metadata={"format": FORMAT})
    files = sorted(p for p in (out_dir / "backbone").rglob("*") if p.is_file()) + [out_dir / HEADS]
    description = describe_model(model, rate)
    description["files"] = {p.relative_to(out_dir).as_posix(): file_digest(p, length=None) for p in files}
    (out_dir / "model.json").write_text(json.dumps({**metadata, **description}, indent=2, default=str) + "\n")


def read_model_json(model_dir: Path) -> dict:
    """model.json of a model folder; missing or unreadable is a `BackboneError` naming it."""
    path = model_dir / "model.json"
    if not path.is_file():
        raise BackboneError(
            f"model folder '{model_dir}' has no model.json; copy the whole folder, or rerun the rule that trains it"
        )
    try:
        meta = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BackboneError(f"'{path}' is not valid JSON ({err}); re-copy the model folder") from err
    if not isinstance(meta, dict) or not isinstance(meta.get("spec"), dict):
        raise BackboneError(f"'{path}' has no 'spec' section; it was not written by gmptl's save_model")
    return meta


def verify_files(model_dir: Path, meta: dict) -> None:
    """Every file model.json lists exists, has its recorded sha256, and no pickled weights sit beside them."""
    files = meta.get("files")
    if not isinstance(files, dict) or HEADS not in files:
        raise BackboneError(f"'{model_dir / 'model.json'}' lists no files with their sha256; re-save the model")
    for name, digest in files.items():
        path = model_dir / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise BackboneError(f"'{model_dir / 'model.json'}' lists '{name}', which is outside the model folder")
        if not path.is_file():
            raise BackboneError(
                f"model folder '{model_dir}' lacks '{name}' (listed in model.json); copy the whole folder"
            )
        if file_digest(path, length=None) != digest:
            raise BackboneError(
                f"'{path}' differs from the sha256 recorded in model.json (altered or damaged); "
                "re-copy the model folder, or rerun the rule that trains it"
            )
    pickles = sorted(p for p in (model_dir / "backbone").rglob("*") if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise BackboneError(f"'{pickles[0]}' is a pickled weight file; gmptl loads safetensors only: remove it")


def read_heads(model_dir: Path, meta: dict) -> dict[str, torch.Tensor]:
    """The head weights: safetensors (verified first), or a pre-format-2 `heads.pt` without pickle code."""
    if meta.get("format") == FORMAT:
        verify_files(model_dir, meta)
        try:
            return load_file(model_dir / HEADS)
        except (SafetensorError, OSError) as err:
            raise BackboneError(f"'{model_dir / HEADS}' cannot be read ({err}); re-copy the model folder") from err
    if meta.get("format") is not None:
        raise BackboneError(f"'{model_dir / 'model.json'}' has format '{meta['format']}'; this gmptl reads {FORMAT}")
    legacy = model_dir / LEGACY_HEADS
    if not legacy.is_file():
        raise BackboneError(f"model folder '{model_dir}' lacks '{HEADS}'; copy the whole folder")
    log.warning("model folder '%s' predates checksummed safetensors heads; its files are not verified", model_dir)
    try:
        return torch.load(legacy, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to read weights is the same user error
        raise BackboneError(
            f"'{legacy}' cannot be read as plain weights ({err}); rerun the rule that trains it"
        ) from err


def load_model(model_dir: str | Path) -> tuple[GmptlModel, dict]:
    """A model folder written by `save_model`, checked against model.json, and its metadata."""
    model_dir = Path(model_dir)
    meta = read_model_json(model_dir)
    heads = read_heads(model_dir, meta)
    try:
        spec = HeadSpec(**meta["spec"])
    except TypeError as err:
        raise BackboneError(f"'{model_dir / 'model.json'}': 'spec' does not describe heads ({err})") from err
    model = build_model(str(model_dir / "backbone"), spec)
    result = model.load_state_dict(heads, strict=False)
    missing = [key for key in result.missing_keys if not key.startswith("encoder.")]
    if missing or result.unexpected_keys:
        raise BackboneError(
            f"model folder '{model_dir}': its head weights do not match model.json "
            f"(missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}); rerun the rule that trains it"
        )
    meta.setdefault("audio", {"sample_rate": backbone_sample_rate(model_dir / "backbone")})
    return model, meta


def backbone_sample_rate(backbone_dir: Path) -> int:
    """The rate in a backbone folder's preprocessor config (what pre-format-2 folders recorded)."""
    path = backbone_dir / "preprocessor_config.json"
    if not path.is_file():
        return DEFAULT_SAMPLE_RATE
    return int(json.loads(path.read_text()).get("sampling_rate", DEFAULT_SAMPLE_RATE))
