"""The three training stages as data: heads, loss weights, masking and checkpoint selection, read from a recipe."""

from __future__ import annotations

from dataclasses import dataclass, field

from .model import HeadSpec
from .settings import GmpHead


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


def stage_spec(recipe: dict, classes: list[str]) -> StageSpec:
    """The spec of a training recipe (kind mtl | stage1 | stage2, see `gmptl.recipes`)."""
    kind = recipe["kind"]
    (init, _), *_ = recipe["init"].items()
    init = "pretrained" if init == "backbone" else init
    if kind == "mtl":
        cfg = recipe["mtl"]
        weight = cfg["gender_weight"]
        heads = HeadSpec(classes, cfg["pooling"], "linear", gender_pooling=cfg["pooling"] if weight > 0 else None)
        return StageSpec("mtl", heads, emotion_weight=1.0, gender_weight=weight, init=init)
    if kind == "stage1":
        cfg = recipe["stage1"]
        heads = [GmpHead.parse(name) for name in recipe["gmp"]["heads"]]
        return StageSpec(
            "stage1",
            HeadSpec(classes, emotion_pooling=None, gmp_heads={head.name: head.k for head in heads}),
            gmp_weights={head.name: float(cfg["loss_weights"].get(head.name, 1.0)) for head in heads},
            mask_prob=cfg["mask_prob"],
            mask_length=cfg["mask_length"],
            loss_on=cfg["loss_on"],
            init=init,
        )
    if kind == "stage2":
        cfg = recipe["stage2"]
        weight = cfg["gender_weight"]
        heads = HeadSpec(
            classes,
            cfg["pooling"],
            cfg["classifier"],
            cfg["margin"],
            cfg["scale"],
            gender_pooling=cfg["pooling"] if weight > 0 else None,
        )
        return StageSpec("stage2", heads, emotion_weight=1.0, gender_weight=weight, init=init)
    raise ValueError(f"recipe kind '{kind}' is not a training stage")
