"""The three training stages as data: heads, loss weights, masking and checkpoint selection."""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import gmp_heads
from .model import HeadSpec


@dataclass
class StageSpec:
    name: str
    heads: HeadSpec
    emotion_weight: float = 0.0
    gender_weight: float = 0.0
    gmp_weights: dict[str, float] = field(default_factory=dict)
    mask_prob: float = 0.0
    mask_length: int = 10
    loss_on: str = "all"  # frame CE on masked | all frames
    init: str = "pretrained"  # pretrained | mtl | stage1

    @property
    def selects_by_uar(self) -> bool:
        """Best checkpoint by validation UAR when an emotion loss is trained, else by validation loss."""
        return self.emotion_weight > 0


def stage_spec(stage: str, settings: dict, classes: list[str]) -> StageSpec:
    """The spec of `stage` (mtl | stage1 | stage2) under one experiment's settings."""
    if stage == "mtl":
        cfg = settings["mtl"]
        weight = cfg["gender_weight"]
        heads = HeadSpec(classes, cfg["pooling"], "linear", gender_pooling=cfg["pooling"] if weight > 0 else None)
        return StageSpec("mtl", heads, emotion_weight=1.0, gender_weight=weight)
    if stage == "stage1":
        cfg = settings["stage1"]
        names = gmp_heads(settings["gmp"]["layers"], settings["gmp"]["k"])
        ks = {name: int(name.split("_k")[1]) for name in names}
        weights = {name: float(cfg["loss_weights"].get(name, 1.0)) for name in names}
        heads = HeadSpec(classes, emotion_pooling=None, gmp_heads=ks)
        return StageSpec(
            "stage1",
            heads,
            gmp_weights=weights,
            mask_prob=cfg["mask_prob"],
            mask_length=cfg["mask_length"],
            loss_on=cfg["loss_on"],
            init=cfg["init"],
        )
    if stage == "stage2":
        cfg = settings["stage2"]
        weight = cfg["gender_weight"]
        heads = HeadSpec(
            classes,
            cfg["pooling"],
            cfg["classifier"],
            cfg["margin"],
            cfg["scale"],
            gender_pooling=cfg["pooling"] if weight > 0 else None,
        )
        return StageSpec("stage2", heads, emotion_weight=1.0, gender_weight=weight, init=cfg["init"])
    raise ValueError(f"unknown stage '{stage}'")
