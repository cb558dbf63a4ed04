"""The three training stages as data: heads, loss weights, masking and checkpoint selection, read from a recipe."""

from __future__ import annotations

from dataclasses import dataclass, field

from .model import HeadSpec
from .settings import MtlSettings, Stage1Settings, Stage2Settings

VALID_UAR, VALID_LOSS = "valid_uar", "valid_loss"


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
    def selection(self) -> str:
        """The validation figure that picks the best checkpoint: UAR when an emotion loss is trained, else the loss."""
        return VALID_UAR if self.emotion_weight > 0 else VALID_LOSS

    @property
    def selects_by_uar(self) -> bool:
        return self.selection == VALID_UAR

    def improved(self, current: dict, best: dict | None) -> bool:
        """Whether a validation row beats the best so far (higher UAR, or lower loss)."""
        if best is None:
            return True
        if self.selects_by_uar:
            return current[VALID_UAR] > best[VALID_UAR]
        return current[VALID_LOSS] < best[VALID_LOSS]


def stage_spec(recipe, classes: list[str] | None = None) -> StageSpec:
    """The spec of a training recipe (a `gmptl.recipes.TrainingRecipe` or its JSON form)."""
    from .recipes import from_json

    recipe = from_json(recipe)
    classes = list(classes) if classes is not None else recipe.data.classes
    init = "pretrained" if recipe.init.kind == "backbone" else recipe.init.kind
    cfg = recipe.settings
    if isinstance(cfg, MtlSettings):
        weight = cfg.gender_weight
        heads = HeadSpec(classes, cfg.pooling, "linear", gender_pooling=cfg.pooling if weight > 0 else None)
        return StageSpec("mtl", heads, emotion_weight=1.0, gender_weight=weight, init=init)
    if isinstance(cfg, Stage1Settings):
        heads = recipe.gmp.heads
        return StageSpec(
            "stage1",
            HeadSpec(classes, emotion_pooling=None, gmp_heads={head.name: head.k for head in heads}),
            gmp_weights={head.name: float(cfg.loss_weights[head.name]) for head in heads},
            mask_prob=cfg.mask_prob,
            mask_length=cfg.mask_length,
            loss_on=cfg.loss_on,
            init=init,
        )
    if isinstance(cfg, Stage2Settings):
        weight = cfg.gender_weight
        heads = HeadSpec(
            classes,
            cfg.pooling,
            cfg.classifier,
            cfg.margin,
            cfg.scale,
            gender_pooling=cfg.pooling if weight > 0 else None,
        )
        return StageSpec("stage2", heads, emotion_weight=1.0, gender_weight=weight, init=init)
    raise ValueError(f"recipe kind '{recipe.kind}' is not a training stage")
