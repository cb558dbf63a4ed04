"""What a stage learns from one batch, checked against the losses written out by hand with torch's functions."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gmptl.data import IGNORE, Batch, Utterances
from gmptl.errors import TrainingError
from gmptl.model import HeadSpec, build_model, with_margin
from gmptl.objectives import emotion_loss_weights, forward_batch, frame_hits, input_masks
from gmptl.settings import SpecAugment
from gmptl.stages import StageSpec

CLASSES = ["neu", "hap", "ang", "sad"]
LENGTHS = [16000, 9000, 12000]  # 49, 27 and 37 frames of the tiny HuBERT


@pytest.fixture(scope="module")
def models(tiny_backbone):
    torch.manual_seed(0)
    utterance = HeadSpec(CLASSES, "mean", "amsoftmax", 0.2, 30.0, gender_pooling="mean")
    frames = HeadSpec(CLASSES, None, gmp_heads={"L1_k8": 8, "L2_k4": 4})
    return {
        "utterance": build_model(tiny_backbone, utterance).eval(),
        "frames": build_model(tiny_backbone, frames).eval(),
    }


def batch(frames: int = 49, seed: int = 0) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    waves = torch.randn(len(LENGTHS), max(LENGTHS), generator=generator)
    lengths = torch.tensor(LENGTHS)
    for row, length in enumerate(LENGTHS):
        waves[row, length:] = 0
    labels = {}
    for name, k in (("L1_k8", 8), ("L2_k4", 4)):
        table = torch.randint(0, k, (len(LENGTHS), frames), generator=generator)
        table[1, 27:] = IGNORE  # beyond the utterance
        table[2, 37:] = IGNORE
        labels[name] = table
    return Batch(waves, lengths, torch.tensor([0, 2, 3]), torch.tensor([1, 0, 1]), labels)


def rng():
    return np.random.default_rng(7)


def test_utterance_stage_loss_is_the_weighted_sum_of_margin_emotion_ce_and_gender_ce(models):
    model, data = models["utterance"], batch()
    spec = StageSpec("stage2", model.spec, emotion_weight=1.5, gender_weight=0.3)
    weights = torch.tensor([1.0, 2.0, 0.5, 1.0])
    loss, out = forward_batch(model, spec, data, torch.device("cpu"), rng(), emotion_weights=weights)
    plain = model(data.waves, data.lengths)
    torch.testing.assert_close(out["emotion"], plain["emotion"])  # no masking without SpecAugment
    assert model.emotion_margin == pytest.approx(30.0 * 0.2)
    emotion = F.cross_entropy(with_margin(plain["emotion"], data.emotion, 6.0), data.emotion, weight=weights)
    gender = F.cross_entropy(plain["gender"], data.gender)
    assert set(out["losses"]) == {"emotion", "gender"}
    torch.testing.assert_close(out["losses"]["emotion"], emotion)
    torch.testing.assert_close(out["losses"]["gender"], gender)
    torch.testing.assert_close(loss, 1.5 * emotion + 0.3 * gender)
    assert out["time_mask"] is None
    unweighted, _ = forward_batch(model, spec, data, torch.device("cpu"), rng())
    margin_ce = F.cross_entropy(with_margin(plain["emotion"], data.emotion, 6.0), data.emotion)
    torch.testing.assert_close(unweighted, 1.5 * margin_ce + 0.3 * gender)
    assert not torch.allclose(margin_ce, F.cross_entropy(plain["emotion"], data.emotion))  # the margin counts


def test_an_objective_of_weight_zero_is_left_out(models):
    model, data = models["utterance"], batch()
    loss, out = forward_batch(model, StageSpec("mtl", model.spec, gender_weight=0.4), data, torch.device("cpu"), rng())
    assert set(out["losses"]) == {"gender"}
    torch.testing.assert_close(loss, 0.4 * out["losses"]["gender"])
    loss, out = forward_batch(model, StageSpec("mtl", model.spec, emotion_weight=1.0), data, torch.device("cpu"), rng())
    assert set(out["losses"]) == {"emotion"}
    torch.testing.assert_close(loss, out["losses"]["emotion"])


def frame_ce(logits, targets, counted):
    targets = torch.where(counted, targets[:, : logits.shape[1]], torch.full_like(targets[:, : logits.shape[1]], -1))
    keep = targets >= 0
    return F.cross_entropy(logits[keep], targets[keep])


@pytest.mark.parametrize("loss_on", ["all", "masked"])
def test_stage1_loss_is_the_weighted_frame_ce_of_every_head_on_valid_frames(models, loss_on):
    model, data = models["frames"], batch(frames=55)  # labels may run past the model's frames
    spec = StageSpec("stage1", model.spec, gmp_weights={"L1_k8": 1.0, "L2_k4": 0.25}, mask_prob=0.3, loss_on=loss_on)
    loss, out = forward_batch(model, spec, data, torch.device("cpu"), rng())
    mask = out["time_mask"]
    assert mask is not None and mask.shape == (3, 49) and mask.any()
    assert not (mask & ~out["frame_mask"]).any()  # only valid frames are masked
    again = model(data.waves, data.lengths, time_mask=mask)
    counted = out["frame_mask"] & (mask if loss_on == "masked" else True)
    expected = {name: frame_ce(again[name], data.frame_labels[name], counted) for name in ("L1_k8", "L2_k4")}
    assert set(out["losses"]) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(out["losses"][name], value)
    torch.testing.assert_close(loss, expected["L1_k8"] + 0.25 * expected["L2_k4"])
    if loss_on == "masked":
        everywhere = frame_ce(again["L1_k8"], data.frame_labels["L1_k8"], out["frame_mask"])
        assert not torch.allclose(out["losses"]["L1_k8"], everywhere)


def test_a_head_without_a_counted_frame_adds_no_loss(models):
    model, data = models["frames"], batch()
    data.frame_labels["L2_k4"][:] = IGNORE
    spec = StageSpec("stage1", model.spec, gmp_weights={"L1_k8": 1.0, "L2_k4": 1.0}, mask_prob=0.0)
    loss, out = forward_batch(model, spec, data, torch.device("cpu"), rng())
    assert out["time_mask"] is None
    assert set(out["losses"]) == {"L1_k8"}
    torch.testing.assert_close(loss, out["losses"]["L1_k8"])
    data.frame_labels["L1_k8"][:, 1:] = IGNORE  # one frame of each utterance is left to count
    loss, out = forward_batch(model, spec, data, torch.device("cpu"), rng())
    logits = model(data.waves, data.lengths)["L1_k8"]
    torch.testing.assert_close(loss, F.cross_entropy(logits[:, 0], data.frame_labels["L1_k8"][:, 0]))


def test_gmp_labels_shorter_than_the_models_frames_are_an_error(models):
    model, data = models["frames"], batch(frames=40)
    spec = StageSpec("stage1", model.spec, gmp_weights={"L1_k8": 1.0}, mask_prob=0.0)
    with pytest.raises(TrainingError, match="^GMP labels of head L1_k8 are shorter than the model's frames$"):
        forward_batch(model, spec, data, torch.device("cpu"), rng())


def test_stage1_masks_spans_of_its_mask_length_and_ignores_specaugment(models):
    model = models["frames"]
    lengths = torch.tensor(LENGTHS)
    augment = SpecAugment(0.5, 2, 0.5, 2)
    spec = StageSpec("stage1", model.spec, gmp_weights={"L1_k8": 1.0}, mask_prob=0.05, mask_length=6)
    times, channels = input_masks(model, spec, lengths, rng(), augment)
    assert channels is None and times.shape == (3, 49)
    assert times[1, 27:].sum() == 0 and times[2, 37:].sum() == 0
    runs = [len(run) for row in times.tolist() for run in "".join("1" if v else "0" for v in row).split("0") if run]
    assert runs and all(run >= 6 for run in runs[:-1] if run)  # spans of 6 frames (one may be cut by the end)
    spec.mask_prob = 0.0
    assert input_masks(model, spec, lengths, rng(), augment) == (None, None)


def test_specaugment_covers_its_fractions_of_frames_and_channels(models):
    model = models["utterance"]
    lengths = torch.full((64,), 16000)
    spec = StageSpec("stage2", model.spec, emotion_weight=1.0)
    assert input_masks(model, spec, lengths, rng(), None) == (None, None)
    times, channels = input_masks(model, spec, lengths, rng(), SpecAugment(0.3, 5, 0.2, 4))
    assert times.shape == (64, 49) and channels.shape == (64, model.encoder.hidden_size)
    # each frame starts a span with probability p / length: about 1 - (1 - p/L)^L of the frames are covered
    assert times.float().mean().item() == pytest.approx(1 - (1 - 0.3 / 5) ** 5, abs=0.04)
    assert channels.float().mean().item() == pytest.approx(1 - (1 - 0.2 / 4) ** 4, abs=0.04)
    times, channels = input_masks(model, spec, lengths, rng(), SpecAugment(0.0, 5, 0.2, 4))
    assert times is None and channels is not None
    times, channels = input_masks(model, spec, lengths, rng(), SpecAugment(0.3, 5, 0.0, 4))
    assert times is not None and channels is None


def test_frame_hits_count_valid_frames_and_the_selected_ones():
    logits = torch.zeros(2, 4, 3)
    logits[0, :, 1] = 1.0  # row 0 predicts 1 everywhere
    logits[1, :, 2] = 1.0  # row 1 predicts 2 everywhere
    targets = torch.tensor([[1, 1, 0, 1, 1], [2, IGNORE, 2, 0, 2]])  # one frame longer than the logits
    valid = torch.tensor([[True, True, True, False], [True, True, True, True]])
    assert frame_hits(logits, targets, valid) == (4, 6)  # row 0: 2 of 3, row 1: 2 of 3 (one IGNORE)
    where = torch.tensor([[False, True, True, True, True], [True, True, False, True, True]])
    assert frame_hits(logits, targets, valid, where) == (2, 4)


class Cfg:
    def __init__(self, class_weights: str):
        self.class_weights = class_weights


def utterances(emotion: list[int]) -> Utterances:
    n = len(emotion)
    return Utterances([f"u{i}" for i in range(n)], [""] * n, np.array(emotion), np.zeros(n, int), np.ones(n))


def test_emotion_loss_weights_are_balanced_and_logged(caplog, models):
    caplog.set_level(logging.INFO)
    spec = StageSpec("stage2", models["utterance"].spec, emotion_weight=1.0)
    data = utterances([0, 0, 0, 1, 2, 2])
    weights = emotion_loss_weights(Cfg("balanced"), spec, data, CLASSES, torch.device("cpu"))
    assert weights.dtype == torch.float32
    torch.testing.assert_close(weights, torch.tensor([6 / 9, 6 / 3, 6 / 6, 0.0]))  # n / (present × n_c); absent 0
    assert caplog.messages == ["stage2: emotion loss weights {'neu': 0.667, 'hap': 2.0, 'ang': 1.0, 'sad': 0.0}"]
    assert emotion_loss_weights(Cfg("none"), spec, data, CLASSES, torch.device("cpu")) is None
    no_emotion = StageSpec("stage1", models["frames"].spec, gmp_weights={"L1_k8": 1.0})
    assert emotion_loss_weights(Cfg("balanced"), no_emotion, data, CLASSES, torch.device("cpu")) is None


def test_specaugment_masks_the_utterance_stages_input(models):
    model, data = models["utterance"], batch()
    spec = StageSpec("stage2", model.spec, emotion_weight=1.0)
    augment = SpecAugment(0.4, 3, 0.4, 4)
    _, out = forward_batch(model, spec, data, torch.device("cpu"), rng(), augment=augment)
    times, channels = input_masks(model, spec, data.lengths, rng(), augment)  # the same draws
    assert out["time_mask"] is not None and torch.equal(out["time_mask"], times)
    torch.testing.assert_close(
        out["emotion"], model(data.waves, data.lengths, time_mask=times, channel_mask=channels)["emotion"]
    )
    assert not torch.allclose(out["emotion"], model(data.waves, data.lengths, time_mask=times)["emotion"])
    assert not torch.allclose(out["emotion"], model(data.waves, data.lengths)["emotion"])
