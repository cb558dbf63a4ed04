"""Typed settings, built once from the validated config (or a stage recipe) and passed to the library.

Two kinds of settings exist, and they are kept apart on purpose:

- *result* settings (a stage's recipe: what it is fitted on and how) decide a stage's output; they are
  its identity (`gmptl.recipes`) and the only rerun trigger;
- *runtime* settings (`RuntimeSettings`: device, precision, threads, inference batch sizes, k-means
  chunking, checkpoint/log intervals, loader threads) cannot change a result beyond floating-point
  noise; they are read from the top level of the config and never name a cached output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

from .errors import ConfigError

HEAD_NAME = re.compile(r"^L(?P<layer>\d+)_k(?P<k>\d+)$")


@dataclass(frozen=True, order=True)
class GmpHead:
    """One GMP scale: the k-means of one backbone layer at one cluster count."""

    layer: int
    k: int

    @property
    def name(self) -> str:
        """The head's name in configs, checkpoints and logs: 'L<layer>_k<k>'."""
        return f"L{self.layer}_k{self.k}"

    @property
    def file_stem(self) -> str:
        """The stem of its label file: 'layer<layer>_k<k>'."""
        return f"layer{self.layer}_k{self.k}"

    @classmethod
    def parse(cls, name: str) -> GmpHead:
        match = HEAD_NAME.match(name)
        if not match:
            raise ConfigError(f"'{name}' is not a GMP head name; expected 'L<layer>_k<k>', e.g. L9_k512")
        return cls(int(match["layer"]), int(match["k"]))

    @classmethod
    def grid(cls, layers, ks) -> list[GmpHead]:
        """Every (layer, k) pair, layers outer, in config order."""
        return [cls(int(layer), int(k)) for layer in layers for k in ks]


def _from_dict(cls, values: dict, where: str):
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {unknown}")
    missing = sorted(names - set(values))
    if missing:
        raise ConfigError(f"{where}: missing setting(s) {missing}")
    return cls(**values)


@dataclass(frozen=True)
class SpecAugment:
    """Time and channel masking of the projected features during the utterance stages (HF `mask_time_prob` style).

    `time_mask_prob` / `channel_mask_prob` are the expected fractions of frames / channels covered:
    each frame (channel) starts a span of `*_length` with probability `prob / length`.
    """

    time_mask_prob: float = 0.0
    time_mask_length: int = 10
    channel_mask_prob: float = 0.0
    channel_mask_length: int = 10

    @property
    def active(self) -> bool:
        return self.time_mask_prob > 0 or self.channel_mask_prob > 0


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation of one training stage (`train` merged with `<stage>.train`), result settings only.

    Length: `steps` optimiser updates when set (passes over the data cycle as needed), else `epochs`
    passes. Validation (and checkpoint selection) every `valid_every_steps` updates when set, else at
    the end of every pass, and always after the last update.
    """

    epochs: int
    steps: int | None
    valid_every_steps: int | None
    batch_size: int
    grad_accum: int
    lr: float
    head_lr: float
    weight_decay: float
    warmup_fraction: float
    max_grad_norm: float
    max_crop_s: float
    balanced_sampling: bool
    freeze_feature_encoder: bool
    class_weights: str = "none"  # none | balanced: weights of the emotion cross-entropy (utterance stages only)
    specaugment: SpecAugment = SpecAugment()  # utterance stages only; absent from stage-1 recipes

    @classmethod
    def from_dict(cls, values: dict) -> TrainSettings:
        values = {"class_weights": "none", "specaugment": None, **values}
        if isinstance(values["specaugment"], dict):
            values["specaugment"] = _from_dict(SpecAugment, values["specaugment"], "train.specaugment")
        elif values["specaugment"] is None:
            values["specaugment"] = SpecAugment()
        return _from_dict(cls, values, "train settings")


@dataclass(frozen=True)
class KMeansSettings:
    """How the GMP centroids are fitted (result settings; `chunk_frames` is a runtime setting)."""

    fit_fraction: float
    max_fit_frames: int
    n_init: int
    init_frames: int
    max_iter: int
    tol: float

    @classmethod
    def from_dict(cls, values: dict) -> KMeansSettings:
        return _from_dict(cls, values, "kmeans settings")


@dataclass(frozen=True)
class AudioSettings:
    """How utterances are decoded: the backbone's rate and what to do with other formats."""

    sample_rate: int
    on_format_mismatch: str

    @classmethod
    def from_corpus(cls, corpus: dict) -> AudioSettings:
        """From the `corpus` config section (or a recipe's `data.corpus`)."""
        return cls(int(corpus["sample_rate"]), corpus["on_format_mismatch"])


@dataclass(frozen=True)
class RuntimeSettings:
    """Where and how fast a job runs; never part of a stage's identity."""

    device: str = "auto"
    precision: str = "auto"
    threads: int = 1
    extract_batch_seconds: float = 160.0
    eval_batch_seconds: float = 120.0
    kmeans_chunk_frames: int = 32768
    demo: bool = False  # the demo run: its tiny random backbone is expected, not warned about
    checkpoint_minutes: float = 10.0  # a training job saves its resume state at least this often
    log_every_s: float = 60.0  # long jobs log their progress at most this often (and at each epoch end)
    loader_workers: int = 2  # background threads decoding training audio (0: in the training thread)

    @classmethod
    def from_config(cls, config: dict, threads: int | None = None) -> RuntimeSettings:
        """From the top level of a validated config; `threads` is what the scheduler granted."""
        return cls(
            device=config["device"],
            precision=config["precision"],
            threads=int(threads if threads is not None else config["threads"]),
            extract_batch_seconds=float(config["features"]["batch_seconds"]),
            eval_batch_seconds=float(config["train"]["eval_batch_seconds"]),
            kmeans_chunk_frames=int(config["kmeans"]["chunk_frames"]),
            demo=bool(config["demo"]["enabled"]),
            checkpoint_minutes=float(config["train"]["checkpoint_minutes"]),
            log_every_s=float(config["log_every_s"]),
            loader_workers=int(config["train"]["loader_workers"]),
        )
