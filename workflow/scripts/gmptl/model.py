"""One model class: a speech backbone plus heads (utterance emotion, utterance gender, GMP frame heads).

A training stage is a choice of initial weights, active heads and loss weights (see `stages`);
all stages share this class and the training loop in `train`. Writing and reading model folders is
`gmptl.model_folder`'s.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import SpeechEncoder, input_normalization, load_backbone

log = logging.getLogger(__name__)


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
        self.score = nn.Linear(dim, 1) if kind == "attentive" else None  # None: mean pooling

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
