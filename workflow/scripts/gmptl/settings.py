"""Typed settings, built once from the validated config (or a stage recipe) and passed to the library.

Two kinds of settings exist, and they are kept apart on purpose:

- *result* settings (the sections `train`, `kmeans`, `mtl`, `stage1`, `stage2`: what a stage is fitted on
  and how) decide a stage's output; they are part of its recipe, its identity (`gmptl.recipes`) and the
  only rerun trigger;
- *runtime* settings (`RuntimeSettings`, the config's `runtime:` section one to one: device, precision,
  threads, GPU slots, batch sizes of inference, k-means chunking, checkpoint/log intervals, loader
  threads, keep_features, check_full_release, tensorboard) cannot change a result beyond floating-point
  noise and never name a cached output.

Each dataclass here has exactly the fields of its schema section (tests/test_config.py checks it) and
no defaults of its own: every default is in workflow/schemas/config.schema.yaml (`gmptl.schema`).
Adding a setting means adding it to the schema and to its dataclass.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields

from . import schema
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


def _section(cls, values: dict, where: str, leave_out=()):
    """`cls` from a validated config section, the keys in `leave_out` (e.g. a nested `train`) left out."""
    return _from_dict(cls, {key: value for key, value in values.items() if key not in leave_out}, where)


@dataclass(frozen=True)
class SpecAugment:
    """Time and channel masking of the projected features during the utterance stages (HF `mask_time_prob` style).

    `time_mask_prob` / `channel_mask_prob` are the expected fractions of frames / channels covered:
    each frame (channel) starts a span of `*_length` with probability `prob / length`.
    """

    time_mask_prob: float
    time_mask_length: int
    channel_mask_prob: float
    channel_mask_length: int

    @property
    def active(self) -> bool:
        return self.time_mask_prob > 0 or self.channel_mask_prob > 0


# Train keys that act only where an emotion loss is trained; left out of stage-1 recipes.
UTTERANCE_ONLY_TRAIN_KEYS = ("class_weights", "specaugment")


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation of one training stage (`train` merged with `<stage>.train`), result settings only.

    Length: `steps` optimiser updates when set (passes over the data cycle as needed), else `epochs`
    passes. Validation (and checkpoint selection) every `valid_every_steps` updates when set, else at
    the end of every pass, and always after the last update. `class_weights` and `specaugment` act on the
    emotion loss only: None in stage 1 (left out of its recipe).
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
    class_weights: str | None  # none | balanced: weights of the emotion cross-entropy (utterance stages only)
    specaugment: SpecAugment | None  # utterance stages only

    @classmethod
    def from_dict(cls, values: dict) -> TrainSettings:
        values = {"class_weights": None, "specaugment": None, **values}
        if isinstance(values["specaugment"], dict):
            values["specaugment"] = _from_dict(SpecAugment, values["specaugment"], "train.specaugment")
        return _from_dict(cls, values, "train settings")

    @classmethod
    def for_stage(cls, values: dict, stage: str) -> TrainSettings:
        """A stage's train settings from its merged `train` section (stage 1 without the utterance-only keys)."""
        drop = UTTERANCE_ONLY_TRAIN_KEYS if stage == "stage1" else ()
        return cls.from_dict({key: value for key, value in values.items() if key not in drop})

    def to_dict(self) -> dict:
        """The recipe form: every setting, the utterance-only ones left out where they do not apply (None)."""
        values = asdict(self)
        return {k: v for k, v in values.items() if not (k in UTTERANCE_ONLY_TRAIN_KEYS and v is None)}

    @property
    def augment(self) -> SpecAugment | None:
        """The SpecAugment to apply while training, None when off or not applicable."""
        return self.specaugment if self.specaugment is not None and self.specaugment.active else None


@dataclass(frozen=True)
class KMeansSettings:
    """How the GMP centroids are fitted (the `kmeans` section)."""

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
class MtlSettings:
    """The gender-augmented multi-task model (the `mtl` section, its `train` apart)."""

    gender_weight: float
    pooling: str

    @classmethod
    def from_dict(cls, values: dict) -> MtlSettings:
        return _section(cls, values, "mtl settings", leave_out=("train",))


@dataclass(frozen=True)
class Stage1Settings:
    """Stage 1, frame CE on the GMPs (the `stage1` section, its `init` and `train` apart).

    `loss_weights` maps every GMP head of the stage to its weight (`for_heads` fills unlisted heads).
    """

    loss_weights: dict
    loss_on: str
    mask_prob: float
    mask_length: int

    @classmethod
    def from_dict(cls, values: dict) -> Stage1Settings:
        return _section(cls, values, "stage1 settings", leave_out=("train", "init"))

    def for_heads(self, heads: list[GmpHead]) -> Stage1Settings:
        """The settings with a weight for every head: as configured, else 1 (the schema's documented default)."""
        weights = {head.name: float(self.loss_weights.get(head.name, 1.0)) for head in heads}
        return Stage1Settings(weights, self.loss_on, self.mask_prob, self.mask_length)


@dataclass(frozen=True)
class Stage2Settings:
    """Stage 2, utterance emotion (the `stage2` section, its `init` and `train` apart)."""

    classifier: str
    margin: float
    scale: float
    pooling: str
    gender_weight: float

    @classmethod
    def from_dict(cls, values: dict) -> Stage2Settings:
        return _section(cls, values, "stage2 settings", leave_out=("train", "init"))


@dataclass(frozen=True)
class AudioSettings:
    """How utterances are decoded: the backbone's rate and what to do with other formats."""

    sample_rate: int
    on_format_mismatch: str

    @classmethod
    def from_corpus(cls, corpus: dict) -> AudioSettings:
        """From the `corpus` config section (or a recipe's `data.corpus`)."""
        return cls(int(corpus["sample_rate"]), corpus["on_format_mismatch"])


_RUNTIME = schema.defaults("runtime")


@dataclass(frozen=True)
class RuntimeSettings:
    """Where and how fast a job runs (the config's `runtime:` section); never part of a stage's identity.

    Defaults are the schema's; `demo` (the demo run: its tiny random backbone is expected, not warned
    about) comes from `demo.enabled`.
    """

    device: str = _RUNTIME["device"]
    precision: str = _RUNTIME["precision"]
    threads: int = _RUNTIME["threads"]
    gpus: str | tuple[int, ...] = _RUNTIME["gpus"]
    jobs_per_gpu: int = _RUNTIME["jobs_per_gpu"]
    gpu_lock_dir: str | None = _RUNTIME["gpu_lock_dir"]
    trust_scheduler: bool = _RUNTIME["trust_scheduler"]
    extract_batch_seconds: float = _RUNTIME["extract_batch_seconds"]
    eval_batch_seconds: float = _RUNTIME["eval_batch_seconds"]
    kmeans_chunk_frames: int = _RUNTIME["kmeans_chunk_frames"]
    checkpoint_minutes: float = _RUNTIME["checkpoint_minutes"]
    loader_workers: int = _RUNTIME["loader_workers"]
    log_every_s: float = _RUNTIME["log_every_s"]
    keep_features: bool = _RUNTIME["keep_features"]
    check_full_release: bool = _RUNTIME["check_full_release"]
    tensorboard: bool = _RUNTIME["tensorboard"]
    demo: bool = False

    @classmethod
    def from_config(cls, config: dict, threads: int | None = None) -> RuntimeSettings:
        """From a validated config's `runtime:` section; `threads` is what the scheduler granted."""
        values = dict(config["runtime"])
        if isinstance(values["gpus"], list):
            values["gpus"] = tuple(values["gpus"])
        if threads is not None:
            values["threads"] = int(threads)
        return _from_dict(cls, {**values, "demo": bool(config["demo"]["enabled"])}, "config key 'runtime'")
