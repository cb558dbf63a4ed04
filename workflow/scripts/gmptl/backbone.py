"""Self-supervised speech backbones (HuBERT, WavLM, wav2vec2, data2vec-audio) through one interface.

`SpeechEncoder` runs the backbone on a padded batch and returns the frame-level hidden states of
the requested 1-based transformer layers (layer L = output of the L-th transformer block, as in
fairseq's `simple_kmeans`; in Hugging Face terms `hidden_states[L]`), the last layer, and the
valid-frame mask. Padding never changes a valid frame:

- group-norm feature encoders (hubert-base style, `feat_extract_norm="group"`) normalise each
  channel over the whole sequence, so the convolutional encoder runs on each utterance unpadded;
- layer-norm encoders run batched (a valid frame's receptive field never reaches the padding);
- the transformer gets the frame mask, padded frames are zeroed before the positional convolution;
- data2vec-audio's stacked positional convolutions spread padding into valid frames, so its
  utterances are encoded one at a time (and padded afterwards).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

from .errors import BackboneError
from .fileio import file_digest, stable_hash

log = logging.getLogger(__name__)

SUPPORTED_TYPES = ("hubert", "wavlm", "wav2vec2", "data2vec-audio")
TINY_MARKER = "gmptl_tiny.json"  # written into the demo's random tiny backbone


def _not_found(name: str) -> BackboneError:
    return BackboneError(
        f"backbone '{name}' is neither a local folder nor a model in the Hugging Face cache (no network "
        f"is used); download it once with `hf download {name}` on a machine with network, or set "
        "`backbone` to a local folder written by save_pretrained"
    )


def load_backbone_config(name: str):
    """The backbone's transformers config, from a local folder or the local hub cache only."""
    path = Path(name)
    if path.exists() and not (path / "config.json").is_file():
        raise BackboneError(f"backbone folder '{name}' has no config.json; it must be a save_pretrained folder")
    try:
        config = AutoConfig.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError) as err:
        raise _not_found(name) from err
    if config.model_type not in SUPPORTED_TYPES:
        raise BackboneError(
            f"backbone '{name}' is a '{config.model_type}' model; supported: {', '.join(SUPPORTED_TYPES)}"
        )
    return config


def input_normalization(name: str) -> bool:
    """Whether the backbone expects zero-mean unit-variance input (preprocessor `do_normalize`)."""
    try:
        extractor = Wav2Vec2FeatureExtractor.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError):
        config = load_backbone_config(name)
        return getattr(config, "feat_extract_norm", "group") == "layer"
    return bool(extractor.do_normalize)


def load_backbone(name: str) -> nn.Module:
    """The bare backbone (e.g. `HubertModel`) with layerdrop off; weights from disk only."""
    load_backbone_config(name)
    try:
        model = AutoModel.from_pretrained(name, local_files_only=True, layerdrop=0.0)
    except OSError as err:
        raise _not_found(name) from err
    return model


def make_tiny_hubert(out_dir: str | Path, hidden_size: int = 64, num_layers: int = 2, seed: int = 0) -> None:
    """Write a tiny, randomly initialised HuBERT (hubert-base layout, 49.8 frames/s) to `out_dir`."""
    torch.manual_seed(seed)
    config = HubertConfig(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        intermediate_size=2 * hidden_size,
        conv_dim=(32,) * 7,
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        feat_extract_norm="group",
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        layerdrop=0.0,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
    )
    model = HubertModel(config)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=False, return_attention_mask=False
    ).save_pretrained(out_dir)
    (out_dir / TINY_MARKER).write_text(json.dumps({"seed": seed, "note": "random weights, demo only"}) + "\n")


def recorded_tiny_demo_model(model_json: Path) -> bool:
    """The `backbone_source.tiny_demo_model` flag a model folder's model.json records (False when absent).

    An unreadable model.json counts as False here; loading that model folder reports it.
    """
    try:
        meta = json.loads(model_json.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    source = meta.get("backbone_source") if isinstance(meta, dict) else None
    return isinstance(source, dict) and source.get("tiny_demo_model") is True


def is_tiny_demo_model(folder: str | Path) -> bool:
    """Whether `folder` is gmptl's tiny random demo backbone, or descends from it.

    The demo backbone carries the marker file. A model folder trained from it (and that folder's
    `backbone/`, which later stages start from) records the flag in its model.json, so every
    descendant — multi-task, stage-1, stage-2, deploy model — inherits it.
    """
    folder = Path(folder)
    if (folder / TINY_MARKER).is_file():
        return True
    if (folder / "model.json").is_file():
        return recorded_tiny_demo_model(folder / "model.json")
    return folder.name == "backbone" and recorded_tiny_demo_model(folder.parent / "model.json")


def backbone_digest(name: str) -> str:
    """A short digest of a backbone folder's config and weight files (the hub id itself when it is not a folder)."""
    folder = Path(name)
    if not folder.is_dir():
        return f"hub:{name}"
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors", ".bin"))
    return stable_hash({path.name: file_digest(path, length=None) for path in files})


def num_layers(model: nn.Module) -> int:
    return len(model.encoder.layers)


def check_layers(model: nn.Module, layers: list[int], name: str) -> None:
    """Every requested layer exists in the backbone (1-based)."""
    bad = [layer for layer in layers if not 1 <= layer <= num_layers(model)]
    if bad:
        raise BackboneError(
            f"config key 'gmp.layers' asks for layer(s) {bad}, but backbone '{name}' has "
            f"{num_layers(model)} transformer layers (valid: 1..{num_layers(model)})"
        )


class SpeechEncoder(nn.Module):
    """A backbone that encodes padded waveforms into per-layer frame features with a frame mask."""

    def __init__(self, model: nn.Module, normalize_input: bool):
        super().__init__()
        self.model = model
        self.normalize_input = normalize_input
        self.per_utterance_cnn = getattr(model.config, "feat_extract_norm", "layer") == "group"
        self.per_utterance = model.config.model_type == "data2vec-audio"

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def frame_hop(self) -> int:
        """Samples between consecutive frames (320 for HuBERT: 50 frames/s at 16 kHz)."""
        return int(np.prod(self.model.config.conv_stride))

    def frame_lengths(self, num_samples: torch.Tensor) -> torch.Tensor:
        """Frames the backbone makes of utterances of `num_samples` samples."""
        return self.model._get_feat_extract_output_lengths(num_samples).long()

    def freeze_feature_encoder(self) -> None:
        """No gradients through the convolutional encoder (HF's own switch, which also stops input grads)."""
        self.model.feature_extractor._freeze_parameters()

    def _normalize(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        valid = torch.arange(waves.shape[1], device=waves.device)[None] < lengths[:, None]
        count = lengths[:, None].clamp(min=1).to(waves.dtype)
        mean = (waves * valid).sum(1, keepdim=True) / count
        var = (((waves - mean) * valid) ** 2).sum(1, keepdim=True) / count
        return torch.where(valid, (waves - mean) / torch.sqrt(var + 1e-7), torch.zeros_like(waves))

    def _conv_features(self, waves: torch.Tensor, lengths: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        extractor = self.model.feature_extractor
        if not self.per_utterance_cnn:
            return extractor(waves).transpose(1, 2)
        out = waves.new_zeros(waves.shape[0], int(frames.max()), self.model.config.conv_dim[-1])
        for i, n in enumerate(lengths.tolist()):
            out[i, : frames[i]] = extractor(waves[i : i + 1, :n])[0].transpose(0, 1)
        return out

    def forward(
        self,
        waves: torch.Tensor,
        lengths: torch.Tensor,
        layers: list[int] = (),
        time_mask: torch.Tensor | None = None,
        mask_embedding: torch.Tensor | None = None,
    ) -> tuple[dict[int, torch.Tensor], torch.Tensor, torch.Tensor]:
        """Encode `waves` (B, S) with valid `lengths` (B,).

        Returns ({layer: (B, T, D)}, last layer (B, T, D), frame mask (B, T)). Frames where
        `time_mask` is true are replaced by `mask_embedding` before the transformer.
        """
        if not self.per_utterance or len(waves) == 1:
            return self._encode(waves, lengths, layers, time_mask, mask_embedding)
        outputs = [
            self._encode(
                waves[i : i + 1, : int(n)],
                lengths[i : i + 1],
                layers,
                None if time_mask is None else time_mask[i : i + 1],
                mask_embedding,
            )
            for i, n in enumerate(lengths.tolist())
        ]
        frames = max(out[1].shape[1] for out in outputs)

        def stack(tensors):
            return torch.cat([F.pad(t, (0, 0, 0, frames - t.shape[1])) for t in tensors])

        hidden = {layer: stack([out[0][layer] for out in outputs]) for layer in layers}
        mask = torch.arange(frames, device=waves.device)[None] < self.frame_lengths(lengths)[:, None]
        return hidden, stack([out[1] for out in outputs]), mask

    def _encode(self, waves, lengths, layers, time_mask, mask_embedding):
        if self.normalize_input:
            waves = self._normalize(waves, lengths)
        frames = self.frame_lengths(lengths)
        extract = self._conv_features(waves, lengths, frames)
        frame_mask = torch.arange(extract.shape[1], device=waves.device)[None] < frames[:, None]
        projected = self.model.feature_projection(extract)
        hidden = projected[0] if isinstance(projected, tuple) else projected
        if time_mask is not None and mask_embedding is not None:
            time_mask = time_mask[:, : hidden.shape[1]]
            hidden = torch.where(time_mask[..., None], mask_embedding.to(hidden.dtype), hidden)
        captured: dict[int, torch.Tensor] = {}
        handles = [
            self.model.encoder.layers[layer - 1].register_forward_hook(self._capture(captured, layer))
            for layer in layers
        ]
        try:
            last = self.model.encoder(hidden, attention_mask=frame_mask)[0]
        finally:
            for handle in handles:
                handle.remove()
        return captured, last, frame_mask

    @staticmethod
    def _capture(store: dict, layer: int):
        def hook(_module, _inputs, output):
            store[layer] = output[0] if isinstance(output, tuple) else output

        return hook
