"""Model folders: what `save_model` writes and `load_model` reads back, checked.

A model folder holds `backbone/` (save_pretrained in safetensors, readable by `backbone.load_backbone`,
so the feature rule and later stages can start from it), `heads.safetensors` (every other weight) and
`model.json`: everything needed to rebuild the model without the workflow (head layout, classes, audio
format, backbone kind), the sha256 of every weight/config file (checked on load), and provenance.
Nothing on the load path unpickles: weights are read with safetensors only.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import Wav2Vec2FeatureExtractor

from .errors import BackboneError
from .fileio import file_digest
from .model import GmptlModel, HeadSpec, build_model, min_samples

log = logging.getLogger(__name__)

FORMAT = "gmptl-model/2"
DEFAULT_SAMPLE_RATE = 16000  # the rate every supported backbone was pre-trained at
HEADS = "heads.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
RESERVED = ("format", "spec", "audio", "backbone", "files")


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
    """The head weights (safetensors), after every listed file is verified against its sha256."""
    if meta.get("format") != FORMAT:
        raise BackboneError(
            f"'{model_dir / 'model.json'}' has format '{meta.get('format')}'; this gmptl reads {FORMAT} "
            "(rerun the rule that trains it)"
        )
    verify_files(model_dir, meta)
    try:
        return load_file(model_dir / HEADS)
    except (SafetensorError, OSError) as err:
        raise BackboneError(f"'{model_dir / HEADS}' cannot be read ({err}); re-copy the model folder") from err


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
    return model, meta
