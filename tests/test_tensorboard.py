"""TensorBoard event files of training jobs: what they hold, and that a resumed job continues its curves once."""

from __future__ import annotations

import logging
import shutil

import pandas as pd
import pytest
import test_train
import torch
from test_train import CLASSES, kill_settings, recipe_for, settings_for

from gmptl.events import EventLog, cut_events, event_files, events_folder, open_event_log, read_scalars
from gmptl.settings import RuntimeSettings
from gmptl.stages import stage_spec

corpus, gmp_labels = test_train.corpus, test_train.gmp_labels  # the training tests' fixtures: a corpus, its GMPs
STAGE1 = {"steps": 8, "valid_every_steps": 3, "batch_size": 4, "lr": 2e-3, "head_lr": 1e-2}


def train(stage, corpus, config, settings, out, gmp=None, **runtime):
    """Run one training job of fold 1, its events into `out`.tb; the event folder."""
    from gmptl.jobs import run_training

    events = out.parent / f"{out.name}.tb"
    run_training(
        recipe_for(stage, config, settings),
        manifest_path=str(corpus / "manifest.tsv"),
        folds_path=str(corpus / "folds.tsv"),
        fold=1,
        runtime=RuntimeSettings(device="cpu", loader_workers=0, **runtime),
        init_model=None,
        gmp_paths=gmp or {},
        out_dir=str(out),
        state_dir=f"{out}.resume",
        events_dir=str(events),
    )
    return events


def steps(scalars: dict, tag: str) -> list[int]:
    return [step for step, _ in scalars[tag]]


def values(scalars: dict, tag: str) -> list[float]:
    return [value for _, value in scalars[tag]]


def history_column(tag: str) -> str:
    """The history.tsv column a validation tag shows: valid/uar → valid_uar, gmp_L1_k4/majority → majority_L1_k4."""
    group, score = tag.split("/")
    return f"valid_{score}" if group == "valid" else f"{score}_{group.removeprefix('gmp_')}"


def stage_settings(stage: str, backbone: str):
    return settings_for(backbone, stage1={"mask_prob": 0.2, "mask_length": 2, "loss_on": "all", "train": STAGE1})


@pytest.mark.parametrize(
    ("stage", "objectives", "validation"),
    [
        ("mtl", ["emotion", "gender"], ["valid/loss", "valid/uar", "valid/war"]),
        (
            "stage1",
            ["L1_k4", "L2_k4"],
            ["valid/loss"]
            + [f"gmp_{h}/{s}" for h in ("L1_k4", "L2_k4") for s in ("valid_acc", "valid_acc_masked", "majority")],
        ),
        ("stage2", ["emotion"], ["valid/loss", "valid/uar", "valid/war"]),
    ],
)
def test_a_training_job_writes_loss_per_objective_learning_rates_and_validation_scores(
    stage, objectives, validation, corpus, tiny_backbone, gmp_labels, tmp_path
):
    config, settings = stage_settings(stage, tiny_backbone)
    out = tmp_path / stage
    scalars = read_scalars(train(stage, corpus, config, settings, out, gmp_labels if stage == "stage1" else None))
    history = pd.read_csv(out / "history.tsv", sep="\t")
    total = int(history["step"].iloc[-1])
    updates = list(range(1, total + 1))
    per_update = ["train/loss", *(f"train/loss_{name}" for name in objectives), "lr/backbone", "lr/heads"]
    assert {tag: steps(scalars, tag) for tag in per_update} == {tag: updates for tag in per_update}
    assert not {tag for tag in scalars if tag.startswith("train/loss_")} - set(per_update)  # only its objectives
    # the stage's loss is the weighted sum of its objectives' losses, update by update
    spec = stage_spec(recipe_for(stage, config, settings), CLASSES)
    weights = {"emotion": spec.emotion_weight, "gender": spec.gender_weight, **spec.gmp_weights}
    weighted = sum(weights[name] * torch.tensor(values(scalars, f"train/loss_{name}")) for name in objectives)
    torch.testing.assert_close(weighted, torch.tensor(values(scalars, "train/loss")), rtol=1e-5, atol=1e-6)
    # the rate an update used is the one the history shows after the update before it
    rates = dict(scalars["lr/backbone"])
    for step, rate in zip(history["step"].iloc[:-1], history["lr"].iloc[:-1], strict=True):
        assert rates[step + 1] == pytest.approx(rate, rel=1e-6)
    for tag in validation:  # one point per validation round: the history's value
        assert steps(scalars, tag) == list(history["step"]), tag
        assert values(scalars, tag) == pytest.approx(list(history[history_column(tag)]), rel=1e-6, nan_ok=True), tag
    assert not {tag for tag in scalars if not tag.startswith(("train/", "lr/"))} - set(validation)


def test_tensorboard_off_writes_no_event_files(corpus, tiny_backbone, tmp_path):
    config, settings = settings_for(tiny_backbone, train={"epochs": 1})
    events = train("stage2", corpus, config, settings, tmp_path / "stage2", tensorboard=False)
    assert (tmp_path / "stage2" / "model.json").is_file() and not events.exists()


def test_a_job_rerun_from_scratch_replaces_its_old_curves(corpus, tiny_backbone, tmp_path):
    config, settings = settings_for(tiny_backbone, train={"epochs": 1})
    out = tmp_path / "stage2"
    first = read_scalars(train("stage2", corpus, config, settings, out))
    shutil.rmtree(out)  # as Snakemake does before it reruns a job; the finished job left no resume state
    events = train("stage2", corpus, config, settings, out)
    assert read_scalars(events) == first and len(event_files(events)) == 1


class Crash(Exception):
    """The injected end of a job."""


def test_a_resumed_job_continues_its_curves_without_duplicated_steps(
    corpus, tiny_backbone, gmp_labels, tmp_path, monkeypatch, caplog
):
    """Stage 1 (rounds after updates 3, 6, 8) crashes in update 6: it has written events of updates 4 and 5 beyond
    its last checkpoint (update 3). The rerun resumes at update 3; afterwards every tag holds each step once, in
    the raw files as in TensorBoard's own reader, with the values of an uninterrupted run."""
    import gmptl.train

    config, settings = kill_settings("stage1", tiny_backbone)
    straight = read_scalars(train("stage1", corpus, config, settings, tmp_path / "straight", gmp_labels))
    assert steps(straight, "train/loss") == list(range(1, 9)) and steps(straight, "valid/loss") == [3, 6, 8]

    update, calls = gmptl.train._update, []

    def crash_in_update_6(*args):
        calls.append(1)
        if len(calls) == 6:
            raise Crash
        update(*args)

    monkeypatch.setattr(gmptl.train, "_update", crash_in_update_6)
    out = tmp_path / "crashed"
    with pytest.raises(Crash):
        train("stage1", corpus, config, settings, out, gmp_labels)
    events = tmp_path / "crashed.tb"
    assert steps(read_scalars(events), "train/loss") == [1, 2, 3, 4, 5]  # beyond the checkpoint at update 3

    monkeypatch.setattr(gmptl.train, "_update", update)
    with caplog.at_level(logging.INFO, logger="gmptl.train"):
        train("stage1", corpus, config, settings, out, gmp_labels)
    assert f"resuming stage1 from {out}.resume at step 3/8 (after round 1)" in caplog.text
    resumed = read_scalars(events)
    assert set(resumed) == set(straight)
    for tag, points in straight.items():
        assert resumed[tag] == points, tag  # each step once, in order, with the uninterrupted run's value

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    shown = EventAccumulator(str(events))
    shown.Reload()
    assert sorted(shown.Tags()["scalars"]) == sorted(straight)
    for tag, points in straight.items():
        assert [(e.step, e.value) for e in shown.Scalars(tag)] == points, tag


def test_cutting_events_keeps_earlier_steps_and_drops_a_record_a_kill_cut_short(tmp_path):
    log = open_event_log(tmp_path, None)
    log.scalars(1, {"a": 1.0})
    log.scalars(2, {"a": 2.0, "b": 2.0})
    log.close()
    later = EventLog(tmp_path, purge_step=3)  # a second segment, entirely beyond the cut
    later.scalars(3, {"a": 3.0})
    later.close()
    first, second = event_files(tmp_path)
    with open(first, "ab") as handle:
        handle.write(b"\x20\x00\x00\x00")  # the start of a record a kill interrupted
    cut_events(tmp_path, 1)
    assert read_scalars(tmp_path) == {"a": [(1, 1.0)]} and event_files(tmp_path) == [first]


def test_the_event_folder_of_a_job_is_beside_its_log():
    assert str(events_folder("results/logs/cache/stage1/abc/fold2.log")) == "results/logs/cache/stage1/abc/fold2.tb"


def test_a_job_killed_right_after_a_checkpoint_resumes_with_every_step_once(corpus, tiny_backbone, tmp_path):
    """SIGKILL right after the resume state of update 5 is saved (no cleanup runs in the killed process): the events
    up to it were flushed before the save, so the rerun's curves are the uninterrupted run's, no step missing."""
    from test_train import Job

    config, settings = kill_settings("stage2", tiny_backbone)
    straight = tmp_path / "straight.tb"
    Job("stage2", corpus, config, settings, tmp_path / "straight", events=straight, loader_workers=0).finish()
    out, events = tmp_path / "killed", tmp_path / "killed.tb"
    killed = Job("stage2", corpus, config, settings, out, events=events, loader_workers=0, checkpoint_minutes=1e-9,
                 pause_at_step=5)  # fmt: skip
    assert killed.kill_when_paused()["step"] == 5
    assert steps(read_scalars(events), "train/loss") == [1, 2, 3, 4, 5]
    log = Job("stage2", corpus, config, settings, out, events=events, loader_workers=0).finish()
    assert f"resuming stage2 from {out}.resume at step 5/" in log
    assert read_scalars(events) == read_scalars(straight)
