"""The training loop: stages learn, select checkpoints, fail clearly, and resume after SIGKILL."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ROOT, balanced_sessions, write_tree

from gmptl.config import experiment_settings, validate_config
from gmptl.corpus import build_manifest
from gmptl.errors import ConfigError, TrainingError
from gmptl.folds import make_folds
from gmptl.locks import OutputBusy
from gmptl.recipes import experiment_stages
from gmptl.settings import KMeansSettings, RuntimeSettings

CLASSES = ["neu", "hap", "ang", "sad"]
LABEL_MAP = {"neu": "neu", "hap": "hap", "exc": "hap", "ang": "ang", "sad": "sad"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A 3-session corpus with manifest and folds on disk."""
    base = tmp_path_factory.mktemp("train")
    root = write_tree(base / "IEMOCAP_full_release", balanced_sessions(n_sessions=3, per_class=2), seconds=0.8)
    manifest = build_manifest(root, [1, 2, 3], LABEL_MAP, CLASSES)
    manifest.to_csv(base / "manifest.tsv", sep="\t", index=False)
    make_folds(manifest, "speaker").to_csv(base / "folds.tsv", sep="\t", index=False)
    return base


def settings_for(backbone: str, **overrides) -> tuple[dict, dict]:
    train = {"epochs": 3, "batch_size": 4, "lr": 1e-3, "head_lr": 3e-3, "max_crop_s": 0.6}
    overrides.setdefault("stage1", {}).setdefault("train", {"steps": None})  # not the paper-scale default
    config = validate_config(
        {
            "corpus": {"root": "unused", "sessions": [1, 2, 3]},
            "backbone": backbone,
            "train": train,
            "gmp": {"layers": [1, 2], "k": [4]},
            **overrides,
        }
    )
    return config, experiment_settings(config, "gmp_tl")


def recipe_for(stage: str, config: dict, settings: dict, init_model: str | None = None) -> dict:
    """The experiment's recipe of `stage`, starting from the pretrained backbone unless `init_model` is given."""
    recipe = experiment_stages(config, settings)[stage].recipe
    if init_model is None:
        recipe["init"] = {"backbone": settings["backbone"]}
    return recipe


def run(stage, corpus, settings, config, out, init_model=None, gmp=None, runtime=None):
    from gmptl.jobs import run_training

    run_training(
        recipe_for(stage, config, settings, init_model),
        manifest_path=str(corpus / "manifest.tsv"),
        folds_path=str(corpus / "folds.tsv"),
        fold=1,
        runtime=runtime or RuntimeSettings(device="cpu"),
        init_model=init_model,
        gmp_paths=gmp or {},
        out_dir=str(out),
        state_dir=f"{out}.resume",
    )


def test_mtl_stage_writes_a_model_folder_with_history(corpus, tiny_backbone, tmp_path):
    config, settings = settings_for(tiny_backbone)
    run("mtl", corpus, settings, config, tmp_path / "mtl")
    meta = json.loads((tmp_path / "mtl" / "model.json").read_text())
    history = pd.read_csv(tmp_path / "mtl" / "history.tsv", sep="\t")
    assert list(history["round"]) == [1, 2, 3]
    assert {"train_loss", "valid_loss", "valid_uar", "valid_war", "lr"} <= set(history.columns)
    assert meta["best_round"] == int(history.loc[history["valid_uar"].idxmax(), "round"])
    assert meta["selection"] == "valid_uar" and meta["spec"]["gender_pooling"] == "mean"
    assert (tmp_path / "mtl" / "backbone" / "config.json").is_file()
    assert not (tmp_path / "mtl.resume").exists()


def test_gender_weight_zero_drops_the_gender_head(corpus, tiny_backbone, tmp_path):
    config, settings = settings_for(tiny_backbone, mtl={"gender_weight": 0.0}, train={"epochs": 1})
    run("mtl", corpus, settings, config, tmp_path / "mtl")
    assert json.loads((tmp_path / "mtl" / "model.json").read_text())["spec"]["gender_pooling"] is None


def test_validation_none_keeps_the_last_round(corpus, tiny_backbone, tmp_path):
    folds = pd.read_csv(corpus / "folds.tsv", sep="\t")
    folds.loc[folds["split"] == "valid", "split"] = "train"
    folds.to_csv(tmp_path / "folds.tsv", sep="\t", index=False)
    (tmp_path / "manifest.tsv").write_text((corpus / "manifest.tsv").read_text())
    config, settings = settings_for(tiny_backbone)
    run("stage2", tmp_path, settings, config, tmp_path / "stage2")
    assert json.loads((tmp_path / "stage2" / "model.json").read_text())["best_round"] == 3


@pytest.fixture(scope="module")
def gmp_labels(corpus, tiny_backbone, tmp_path_factory) -> dict[str, str]:
    """Real GMP frame labels of fold 1 (k-means at k = 4 on layers 1 and 2 of the tiny backbone), by head name."""
    from gmptl.backbone import SpeechEncoder, load_backbone
    from gmptl.features import extract_features
    from gmptl.folds import fold_table
    from gmptl.gmp import fit_gmp_labels

    base = tmp_path_factory.mktemp("gmp")
    table = fold_table(pd.read_csv(corpus / "folds.tsv", sep="\t"), pd.read_csv(corpus / "manifest.tsv", sep="\t"), 1)
    extract_features(
        SpeechEncoder(load_backbone(tiny_backbone), False),
        table,
        [1, 2],
        base / "f.h5",
        sample_rate=16000,
        on_format_mismatch="error",
        batch_seconds=10,
        device=torch.device("cpu"),
        attrs={"fold": 1},
    )
    kmeans = KMeansSettings(fit_fraction=1.0, max_fit_frames=10**6, n_init=1, init_frames=10**5, max_iter=20, tol=1e-4)
    gmp = {}
    for layer in (1, 2):
        gmp[f"L{layer}_k4"] = str(base / f"layer{layer}_k4.h5")
        fit_gmp_labels(
            base / "f.h5", layer, 4, gmp[f"L{layer}_k4"], settings=kmeans, seed=0, device=torch.device("cpu")
        )
    return gmp


def test_stage1_learns_gmp_labels_and_checks_their_frame_counts(corpus, tiny_backbone, gmp_labels, tmp_path):
    import shutil

    import h5py

    stage1_train = {"steps": 8, "valid_every_steps": 3, "batch_size": 4, "lr": 2e-3, "head_lr": 1e-2}
    config, settings = settings_for(
        tiny_backbone, stage1={"loss_on": "all", "mask_prob": 0.2, "mask_length": 2, "train": stage1_train}
    )
    gmp = {name: str(shutil.copy(path, tmp_path)) for name, path in gmp_labels.items()}  # one is edited below
    run("stage1", corpus, settings, config, tmp_path / "stage1", gmp=gmp)
    history = pd.read_csv(tmp_path / "stage1" / "history.tsv", sep="\t")
    assert list(history["step"]) == [3, 6, 8] and list(history["round"]) == [1, 2, 3]  # validated every 3 updates
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    for head in ("L1_k4", "L2_k4"):
        accuracy, masked, majority = (history[f"{c}_{head}"] for c in ("valid_acc", "valid_acc_masked", "majority"))
        assert accuracy.between(0, 1).all() and masked.between(0, 1).all() and majority.nunique() == 1
        assert accuracy.iloc[-1] > majority.iloc[-1]  # the frame head learns its GMPs
    meta = json.loads((tmp_path / "stage1" / "model.json").read_text())
    assert meta["selection"] == "valid_loss" and set(meta["spec"]["gmp_heads"]) == {"L1_k4", "L2_k4"}
    best = history.loc[history["valid_loss"].idxmin()]
    assert (meta["best_round"], meta["best_step"]) == (best["round"], best["step"])
    with h5py.File(gmp["L1_k4"], "r+") as handle:  # one training utterance loses a frame
        row = int(np.flatnonzero(handle["split"].asstr()[:] == "train")[0])
        lengths, offsets, labels = handle["lengths"][:], handle["offsets"][:], handle["labels"][:]
        labels = np.delete(labels, offsets[row])
        lengths[row] -= 1
        for name, data in (
            ("lengths", lengths),
            ("offsets", np.concatenate([[0], np.cumsum(lengths)[:-1]])),
            ("labels", labels),
        ):
            del handle[name]
            handle[name] = data
    with pytest.raises(TrainingError, match=r"have \d+ frames for '.*' but the model makes \d+"):
        run("stage1", corpus, settings, config, tmp_path / "again", gmp=gmp)


def test_a_class_missing_from_the_training_split_is_an_error(corpus, tiny_backbone, tmp_path):
    manifest = pd.read_csv(corpus / "manifest.tsv", sep="\t")
    manifest.loc[manifest["session"] != 1, "emotion"] = manifest.loc[manifest["session"] != 1, "emotion"].replace(
        "sad", "ang"
    )
    manifest.to_csv(tmp_path / "manifest.tsv", sep="\t", index=False)
    (tmp_path / "folds.tsv").write_text((corpus / "folds.tsv").read_text())
    config, settings = settings_for(tiny_backbone)
    with pytest.raises(TrainingError, match=r"fold 1: class\(es\) \['sad'\] have no utterance in the train split"):
        run("stage2", tmp_path, settings, config, tmp_path / "stage2")
    assert not (tmp_path / "stage2").exists()


def test_nan_loss_is_a_clear_error(corpus, tiny_backbone, tmp_path):
    config, settings = settings_for(tiny_backbone, train={"epochs": 1, "lr": 1e30, "head_lr": 1e30, "batch_size": 2})
    with pytest.raises(TrainingError, match=r"loss became (nan|inf).*lower train.lr"):
        run("stage2", corpus, settings, config, tmp_path / "stage2")
    assert not (tmp_path / "stage2").exists()


def test_cuda_requested_but_absent_is_a_clear_error():
    from gmptl.runtime import resolve_device

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(TrainingError, match="asks for device 'cuda' but no CUDA device is visible"):
        resolve_device("cuda")


# Training in a child process, killed with SIGKILL and rerun ------------------------------------------
#
# The child pauses (sleeps) right after it has saved the resume state at update `pause_at_step` and
# says so in a file; the parent waits for that file and then kills it. What is on disk at the kill is
# thus always the state of that update, however fast or slow the machine is.

TRAIN_SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    sys.path.insert(0, {scripts!r})
    import gmptl.checkpoint as checkpoint
    from gmptl.jobs import run_training
    from gmptl.runtime import configure_torch, setup_logging
    from gmptl.settings import RuntimeSettings
    setup_logging()
    configure_torch(1)
    args = json.loads(sys.argv[1])
    pause_at_step, ready = args.pop("pause_at_step"), args.pop("ready")
    save = checkpoint.save_state

    def save_then_pause(folder, state):
        save(folder, state)
        if pause_at_step is not None and state["loop"]["step"] >= pause_at_step:
            with open(ready + ".tmp", "w") as handle:
                json.dump({{"step": state["loop"]["step"], "rounds": len(state["loop"]["history"])}}, handle)
            os.replace(ready + ".tmp", ready)
            time.sleep(3600)  # until the parent kills this process

    checkpoint.save_state = save_then_pause
    runtime = RuntimeSettings(device="cpu", **args.pop("runtime"))
    run_training(runtime=runtime, fold=1, **args)
""")


class Job:
    """One training run of a stage in a child process; its log (stderr) goes to a file."""

    def __init__(
        self,
        stage,
        corpus,
        config,
        settings,
        out,
        *,
        gmp=None,
        scripts=None,
        pause_at_step=None,
        events=None,
        **runtime,
    ):
        self.out, self.ready = Path(out), Path(f"{out}.paused.json")
        self.log = self.out.parent / f"{self.out.name}.{time.monotonic_ns()}.log"
        self.ready.unlink(missing_ok=True)
        args = {
            "recipe": recipe_for(stage, config, settings),
            "manifest_path": str(corpus / "manifest.tsv"),
            "folds_path": str(corpus / "folds.tsv"),
            "init_model": None,
            "gmp_paths": gmp or {},
            "out_dir": str(out),
            "state_dir": f"{out}.resume",
            "events_dir": events and str(events),
            "runtime": runtime,
            "pause_at_step": pause_at_step,
            "ready": str(self.ready),
        }
        script = TRAIN_SCRIPT.format(scripts=str(scripts or ROOT / "workflow" / "scripts"))
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", script, json.dumps(args)],
                stderr=log,
                env={**os.environ, "HF_HUB_OFFLINE": "1"},
            )

    def text(self) -> str:
        return self.log.read_text()

    def finish(self) -> str:
        """Wait for the run to end; its log. Fails the test when it did not succeed."""
        assert self.process.wait(timeout=600) == 0, self.text()[-3000:]
        return self.text()

    def kill_when_paused(self) -> dict:
        """SIGKILL the run once it has paused after its save at `pause_at_step`; {step, rounds} of that save."""
        deadline = time.monotonic() + 600
        while not self.ready.exists():
            assert self.process.poll() is None, f"training ended before it paused: {self.text()[-3000:]}"
            assert time.monotonic() < deadline, "training did not pause within 10 minutes"
            time.sleep(0.05)
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        return json.loads(self.ready.read_text())


def weights(model_dir: Path) -> dict:
    from gmptl.model_folder import load_model

    return {k: v.clone() for k, v in load_model(model_dir)[0].state_dict().items()}


def kill_settings(stage: str, backbone: str) -> tuple[dict, dict]:
    """A short run of `stage` with several validation rounds, every weight of the tiny model trained."""
    train = {"epochs": 2, "batch_size": 2, "lr": 1e-3, "head_lr": 3e-3, "max_crop_s": 0.6}
    stage1 = {"steps": 8, "valid_every_steps": 3, "batch_size": 4, "lr": 2e-3, "head_lr": 1e-2}
    return settings_for(
        backbone,
        train={**train, "freeze_feature_encoder": False},
        stage1={"mask_prob": 0.2, "mask_length": 2, "train": {**stage1, "freeze_feature_encoder": False}},
    )


@pytest.mark.parametrize("stage", ["mtl", "stage1", "stage2"])
def test_training_killed_mid_round_resumes_to_the_same_weights(stage, corpus, tiny_backbone, gmp_labels, tmp_path):
    """Killed between two validation rounds (after a time-based save), the rerun continues at the saved update and
    ends bit-identical to an uninterrupted run (which loaded its audio in the training thread). Stage 1 trains on
    real GMP labels: its history rows (per-head frame accuracies, majority baselines) must survive the reload."""
    config, settings = kill_settings(stage, tiny_backbone)
    gmp = gmp_labels if stage == "stage1" else None
    straight = tmp_path / "straight"
    Job(stage, corpus, config, settings, straight, gmp=gmp, loader_workers=0).finish()
    history = pd.read_csv(straight / "history.tsv", sep="\t")
    total, first_round = int(history["step"].iloc[-1]), int(history["step"].iloc[0])
    assert len(history) >= 2

    out = tmp_path / "killed"
    killed = Job(stage, corpus, config, settings, out, gmp=gmp, checkpoint_minutes=1e-9, loader_workers=2,
                 pause_at_step=first_round + 1)  # fmt: skip
    paused = killed.kill_when_paused()
    assert paused == {"step": first_round + 1, "rounds": 1} and not out.exists()

    log = Job(stage, corpus, config, settings, out, gmp=gmp, loader_workers=1).finish()
    assert f"resuming {stage} from {out}.resume at step {first_round + 1}/{total} (after round 1)" in log, log[-3000:]
    reference, resumed = weights(straight), weights(out)
    for key in reference:
        torch.testing.assert_close(resumed[key], reference[key], rtol=0, atol=0, msg=key)
    pd.testing.assert_frame_equal(
        pd.read_csv(out / "history.tsv", sep="\t").drop(columns="seconds"), history.drop(columns="seconds")
    )


def test_changed_parameters_start_fresh(corpus, tiny_backbone, tmp_path, caplog):
    config, settings = settings_for(tiny_backbone, train={"epochs": 1})
    from gmptl.checkpoint import save_state

    save_state(tmp_path / "stage2.resume", {"fingerprint": {"recipe": "something-else"}, "loop": {}})
    run("stage2", corpus, settings, config, tmp_path / "stage2")
    assert "is not resumed:" in caplog.text and "recipe" in caplog.text and "starting fresh" in caplog.text
    assert (tmp_path / "stage2" / "model.json").is_file()


def test_resume_after_a_library_edit_starts_fresh_and_says_why(corpus, tiny_backbone, tmp_path):
    import shutil

    scripts = tmp_path / "scripts"
    shutil.copytree(ROOT / "workflow" / "scripts" / "gmptl", scripts / "gmptl")
    config, settings = settings_for(tiny_backbone, train={"epochs": 4, "batch_size": 2})
    out = tmp_path / "stage2"
    job = Job("stage2", corpus, config, settings, out, scripts=scripts, pause_at_step=1, checkpoint_minutes=1e-9)
    job.kill_when_paused()
    with open(scripts / "gmptl" / "train.py", "a") as handle:
        handle.write("\n# an edit of the library\n")
    log = Job("stage2", corpus, config, settings, out, scripts=scripts).finish()
    assert "is not resumed: code changed since it was saved (the gmptl library: gmptl" in log, log[-2000:]
    assert "resuming" not in log and json.loads((out / "model.json").read_text())["best_round"] >= 1


def test_a_resume_state_a_weights_only_load_would_refuse_is_not_written(tmp_path):
    from gmptl.checkpoint import save_state

    state = {"fingerprint": {}, "loop": {"history": [{"round": 1, "valid_acc_L9_k64": np.float64(0.5)}]}}
    refused = r"\['valid_acc_L9_k64'\] \(numpy.float64\), which torch.load\(weights_only=True\) refuses"
    with pytest.raises(TrainingError, match=refused):
        save_state(tmp_path / "state", state)
    assert not (tmp_path / "state" / "state.pt").exists()
    save_state(tmp_path / "state", {"fingerprint": {}, "loop": {"history": [{"round": 1, "valid_acc": 0.5}]}})
    assert torch.load(tmp_path / "state" / "state.pt", weights_only=True)["loop"]["history"][0]["valid_acc"] == 0.5


# The loop itself, driven directly with a fake clock -----------------------------------------------


class FakeClock:
    """Minutes pass only when the optimiser updates (`minutes_per_update` each)."""

    def __init__(self, minutes_per_update: float):
        self.now, self.step = 0.0, minutes_per_update * 60

    def __call__(self) -> float:
        return self.now


def direct_stage2(corpus, tiny_backbone, **train):
    """(model, spec, train data, valid data, settings, audio) of a stage-2 fold-1 run, for `train_stage`."""
    from gmptl.data import split_utterances
    from gmptl.jobs import load_fold
    from gmptl.model import build_model
    from gmptl.settings import AudioSettings, TrainSettings
    from gmptl.stages import stage_spec

    config, settings = settings_for(tiny_backbone, train=train)
    recipe = recipe_for("stage2", config, settings)
    spec = stage_spec(recipe, CLASSES)
    table = load_fold(str(corpus / "manifest.tsv"), str(corpus / "folds.tsv"), 1)
    data = [split_utterances(table, split, CLASSES) for split in ("train", "valid")]
    torch.manual_seed(0)
    model = build_model(tiny_backbone, spec.heads)
    return model, spec, *data, TrainSettings.from_dict(recipe["train"]), AudioSettings(16000, "convert")


def train_directly(parts, tmp_path, clock, monkeypatch, **runtime):
    import gmptl.checkpoint as checkpoint
    import gmptl.train as train

    model, spec, train_data, valid_data, cfg, audio = parts
    update = train._update

    def timed_update(*args):
        update(*args)
        clock.now += clock.step

    saved = []
    save = checkpoint.save_state
    monkeypatch.setattr(train, "_update", timed_update)
    monkeypatch.setattr(
        checkpoint, "save_state", lambda folder, state: (saved.append(state["loop"]["step"]), save(folder, state))
    )
    result = train.train_stage(
        model,
        spec,
        train_data,
        valid_data,
        cfg,
        classes=CLASSES,
        device=torch.device("cpu"),
        audio=audio,
        seed=1,
        state_dir=tmp_path / "state",
        fingerprint={"test": 1},
        runtime=RuntimeSettings(device="cpu", **runtime),
        clock=clock,
    )
    return result, saved


def test_resume_state_is_saved_every_checkpoint_minutes_and_after_each_validation(
    corpus, tiny_backbone, tmp_path, monkeypatch
):
    parts = direct_stage2(corpus, tiny_backbone, epochs=2, batch_size=2)  # 12 updates per pass
    result, saved = train_directly(parts, tmp_path, FakeClock(4), monkeypatch, checkpoint_minutes=10)
    assert list(result.history["step"]) == [12, 24]
    # 4 minutes per update: saved after updates 3, 6, 9 (≥ 10 min since the last save), at the validation
    # after 12, then 3 updates after it again
    assert saved == [3, 6, 9, 12, 15, 18, 21, 24]


def test_training_logs_periodic_progress_with_eta(corpus, tiny_backbone, tmp_path, monkeypatch, caplog):
    parts = direct_stage2(corpus, tiny_backbone, epochs=1, batch_size=2)
    with caplog.at_level(logging.INFO, logger="gmptl.progress"):
        train_directly(parts, tmp_path, FakeClock(1), monkeypatch, log_every_s=150)  # a line every 3 updates
    lines = [r.getMessage() for r in caplog.records if r.name == "gmptl.progress"]
    assert [line.split(" | ")[0] for line in lines] == [
        f"stage2: step {n}/12 ({100 * n / 12:.1f} %)" for n in (3, 6, 9, 12, 12)
    ]
    assert "ETA 0:09:00" in lines[0] and "elapsed 0:03:00" in lines[0] and "audio-s/s" in lines[0]
    assert "round 1/1" in lines[-1] and "valid_uar" in lines[-1]  # the validation round


def test_specaugment_masks_frames_and_zeroes_channels_of_the_projected_features(tiny_backbone):
    from gmptl.model import HeadSpec, build_model
    from gmptl.objectives import input_masks
    from gmptl.settings import SpecAugment
    from gmptl.stages import StageSpec

    model = build_model(tiny_backbone, HeadSpec(CLASSES))
    spec = StageSpec("stage2", model.spec, emotion_weight=1.0)
    lengths = torch.tensor([64000, 32000] * 20)
    augment = SpecAugment(time_mask_prob=0.3, time_mask_length=5, channel_mask_prob=0.25, channel_mask_length=4)
    times, channels = input_masks(model, spec, lengths, np.random.default_rng(0), augment)
    frames = model.encoder.frame_lengths(lengths)
    assert times.shape == (40, int(frames.max())) and not times[1::2, frames[1] :].any()
    assert 0.2 < times[::2].float().mean() < 0.35  # about time_mask_prob of the frames (spans overlap)
    assert channels.shape == (40, model.encoder.hidden_size) and 0.17 < channels.float().mean() < 0.3
    assert input_masks(model, spec, lengths, np.random.default_rng(0), None) == (None, None)
    lengths, times, channels = lengths[:2], times[:2], channels[:2]

    captured = []
    model.encoder.model.encoder.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    waves = torch.randn(2, 64000) * 0.1
    model(waves, lengths, channel_mask=channels)
    hidden = captured[0]
    assert torch.all(hidden[channels[:, None, :].expand_as(hidden)] == 0)
    assert hidden[0, : frames[0]][:, ~channels[0]].abs().min() > 0


def test_balanced_class_weights_weigh_the_emotion_loss(tiny_backbone):
    import torch.nn.functional as F

    from gmptl.data import Batch
    from gmptl.model import HeadSpec, build_model, with_margin
    from gmptl.objectives import forward_batch
    from gmptl.stages import StageSpec

    model = build_model(tiny_backbone, HeadSpec(CLASSES, emotion_classifier="amsoftmax")).eval()
    spec = StageSpec("stage2", model.spec, emotion_weight=1.0)
    emotion = torch.tensor([0, 0, 0, 3])
    batch = Batch(torch.randn(4, 8000) * 0.1, torch.full((4,), 8000), emotion, torch.zeros(4, dtype=torch.long), {})
    weights = torch.tensor([0.5, 1.0, 1.0, 2.0])
    loss, out = forward_batch(
        model, spec, batch, torch.device("cpu"), np.random.default_rng(0), emotion_weights=weights
    )
    expected = F.cross_entropy(with_margin(out["emotion"], emotion, model.emotion_margin), emotion, weight=weights)
    torch.testing.assert_close(loss, expected)
    plain, _ = forward_batch(model, spec, batch, torch.device("cpu"), np.random.default_rng(0))
    assert not torch.isclose(loss, plain)


def test_class_weights_and_specaugment_train_a_stage(corpus, tiny_backbone, tmp_path, caplog):
    augment = {"time_mask_prob": 0.2, "time_mask_length": 4, "channel_mask_prob": 0.1, "channel_mask_length": 4}
    config, settings = settings_for(
        tiny_backbone, train={"epochs": 1, "class_weights": "balanced", "specaugment": augment}
    )
    with caplog.at_level(logging.INFO):
        run("stage2", corpus, settings, config, tmp_path / "stage2")
    assert "emotion loss weights {'neu': 1.0, 'hap': 1.0, 'ang': 1.0, 'sad': 1.0}" in caplog.text
    recipe = json.loads((tmp_path / "stage2" / "model.json").read_text())["recipe"]
    assert recipe["train"]["class_weights"] == "balanced" and recipe["train"]["specaugment"] == augment


def test_runtime_keys_never_change_a_recipe_but_training_length_does(tiny_backbone):
    def ids(**overrides):
        config, settings = settings_for(tiny_backbone, **overrides)
        return {kind: stage.id for kind, stage in experiment_stages(config, settings).items()}

    plain = ids()
    train = {"epochs": 3, "batch_size": 4, "lr": 1e-3, "head_lr": 3e-3, "max_crop_s": 0.6}  # settings_for's
    assert train  # settings_for's train section, unchanged below
    runtime = ids(runtime={"checkpoint_minutes": 0.5, "loader_workers": 0, "log_every_s": 5, "device": "cpu"})
    assert runtime == plain
    longer = ids(stage1={"train": {"steps": 50, "valid_every_steps": 10}})
    assert longer["stage1"] != plain["stage1"] and longer["mtl"] == plain["mtl"]
    config, settings = settings_for(tiny_backbone)
    assert "checkpoint_minutes" not in experiment_stages(config, settings)["stage2"].recipe["train"]


# Retries: a deterministic failure is reported once, not retried on a GPU --------------------------


@pytest.mark.parametrize(
    ("error", "deterministic"),
    [
        (TrainingError("fold 1: the train split holds one gender only; the gender head cannot learn"), True),
        (ConfigError("config key 'gmp.layers' asks for layer(s) [7]"), True),
        (OSError(errno.ENOSPC, "No space left on device", "results/cache/x/state.pt.tmp"), True),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
        (OutputBusy("another job (pid 12) is already writing 'x'"), False),  # ends when that job does
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),  # same batch, same GPU
        (OSError(errno.EIO, "Input/output error"), False),
        (RuntimeError("CUDA error: an illegal memory access was encountered"), False),
        (MemoryError(), False),
    ],
)
def test_failures_of_bad_input_or_a_full_disk_are_deterministic_others_may_pass_next_time(error, deterministic):
    from gmptl.retry import is_deterministic

    assert is_deterministic(error) is deterministic


JOB = {"stage": "stage1", "id": "abc", "fold": "1"}


def test_a_deterministic_failure_is_recorded_and_a_retry_only_reports_it(tmp_path):
    from gmptl.retry import NotRetried, reports_only, run_attempt

    marker, calls = tmp_path / "fold1.failed.json", []

    def fails():
        calls.append(1)
        raise TrainingError(message)

    message = "fold 1: the train split holds one gender only; the gender head cannot learn"
    with pytest.raises(TrainingError):
        run_attempt(fails, marker=marker, attempt=1, identity=JOB)
    message = "fold 1: the train split holds one gender only; the gender head cannot learn"
    assert json.loads(marker.read_text()) == {"message": message, "error": "TrainingError", "job": JOB, "attempt": 1}
    assert reports_only(marker, 2) and not reports_only(marker, 1)
    with pytest.raises(NotRetried, match=f"^not retried: {message}$"):
        run_attempt(fails, marker=marker, attempt=2, identity=JOB)
    assert len(calls) == 1  # the retry did not train again
    assert run_attempt(lambda: "trained", marker=marker, attempt=2, identity={**JOB, "id": "other"}) == "trained"


def test_a_first_attempt_or_a_success_clears_the_marker(tmp_path):
    from gmptl.retry import record_failure, run_attempt

    marker = tmp_path / "fold1.failed.json"
    record_failure(marker, TrainingError("an old failure"), 1, JOB)
    seen = []
    assert run_attempt(lambda: seen.append(marker.exists()) or 7, marker=marker, attempt=1, identity=JOB) == 7
    assert seen == [False] and not marker.exists()
    with pytest.raises(RuntimeError):  # a transient failure is left for the retry and records nothing
        run_attempt(lambda: (_ for _ in ()).throw(RuntimeError("node lost")), marker=marker, attempt=1, identity=JOB)
    assert not marker.exists()


def test_a_full_disk_becomes_one_sentence_and_is_not_retried(tmp_path):
    from gmptl.retry import DiskFull, NotRetried, run_attempt

    marker = tmp_path / "fold1.failed.json"

    def disk_full():
        raise OSError(errno.ENOSPC, "No space left on device", "results/cache/stage1/abc/fold1.resume/state.pt.tmp")

    sentence = r"no space left on the device writing 'results/cache/stage1/abc/fold1.resume/state.pt.tmp'; free space"
    with pytest.raises(DiskFull, match=f"^{sentence}"):
        run_attempt(disk_full, marker=marker, attempt=1, identity=JOB)
    with pytest.raises(NotRetried, match=f"^not retried: {sentence}"):
        run_attempt(disk_full, marker=marker, attempt=2, identity=JOB)


LOGGING_SCRIPT = textwrap.dedent("""
    import logging, sys
    sys.path.insert(0, {scripts!r})
    from gmptl.runtime import setup_logging
    setup_logging(sys.argv[1], attempt=int(sys.argv[2]))
    logging.getLogger("gmptl").info("work of attempt %s", sys.argv[2])
""")


def test_the_log_of_a_retried_job_holds_every_attempt_under_its_header(tmp_path):
    log = tmp_path / "logs" / "fold1.log"
    script = LOGGING_SCRIPT.format(scripts=str(ROOT / "workflow" / "scripts"))

    def attempt(n: int) -> None:
        subprocess.run([sys.executable, "-c", script, str(log), str(n)], check=True, capture_output=True)

    log.parent.mkdir()
    log.write_text("a log of an earlier run\n")
    attempt(1)
    log.unlink()  # Snakemake deletes a job's log before each attempt
    attempt(2)
    attempt(3)  # run by hand after the log was kept: appended, not copied twice
    lines = log.read_text().splitlines()
    headers = [line for line in lines if "==== attempt" in line]
    assert len(headers) == 3 and all(re.search(r"\| host \S+ \| pid \d+ ====$", line) for line in headers)
    assert [line.split("==== ")[1].split(" |")[0] for line in headers] == ["attempt 1", "attempt 2", "attempt 3"]
    assert [line.split(": ")[-1] for line in lines if "work of" in line] == [f"work of attempt {n}" for n in (1, 2, 3)]
    assert "a log of an earlier run" not in log.read_text()  # attempt 1 of a new run starts the kept attempts anew


RETRY_SNAKEFILE = textwrap.dedent("""
    # train.smk's mechanism on a rule that trains nothing
    import sys
    sys.path.insert(0, {scripts!r})
    from gmptl.retry import AfterFailure

    def job_attempt(wildcards, attempt):  # common.smk's
        return attempt

    def train_runtime(wildcards, attempt):  # common.smk's
        return 240 * attempt

    rule all:
        input: "out/bad_input", "out/lost_node"

    rule train:
        output: directory("out/{{name}}")
        log: "logs/{{name}}.log"
        resources:
            gpu=AfterFailure("out/{{name}}", normal=1, reported=0),
            runtime=AfterFailure("out/{{name}}", normal=train_runtime, reported=1),
            attempt=job_attempt,
        retries: 2
        script: "job.py"
""")

RETRY_JOB = textwrap.dedent("""
    import logging, os
    from gmptl.errors import ConfigError, TrainingError
    from gmptl.retry import failure_marker, run_attempt
    from gmptl.runtime import setup_logging

    attempt = int(snakemake.resources.attempt)
    setup_logging(snakemake.log[0], attempt=attempt)
    logging.getLogger("gmptl").info("asked for gpu=%s runtime=%s", snakemake.resources.gpu, snakemake.resources.runtime)

    def work():
        if snakemake.wildcards.name == "bad_input":
            raise TrainingError("fold 1: the train split holds one gender only; the gender head cannot learn")
        if attempt < 3:
            raise RuntimeError(f"node lost in attempt {attempt}")
        os.makedirs(snakemake.output[0])

    job = {"name": snakemake.wildcards.name}
    run_attempt(work, marker=failure_marker(snakemake.output[0]), attempt=attempt, identity=job)
""")


def test_snakemake_retries_a_lost_node_but_only_reports_bad_input_without_a_gpu(tmp_path):
    (tmp_path / "Snakefile").write_text(RETRY_SNAKEFILE.format(scripts=str(ROOT / "workflow" / "scripts")))
    (tmp_path / "job.py").write_text(RETRY_JOB)
    command = [sys.executable, "-m", "snakemake", "--cores", "1", "--resources", "gpu=1", "--keep-going"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0  # bad_input failed

    bad = (tmp_path / "logs" / "bad_input.log").read_text()
    asked = re.findall(r"asked for (gpu=\d runtime=\d+)", bad)
    assert asked == ["gpu=1 runtime=240", "gpu=0 runtime=1", "gpu=0 runtime=1"], bad
    assert bad.count("==== attempt") == 3 and bad.count("TrainingError") == 0  # no traceback, one sentence each
    assert bad.rstrip().endswith(
        "not retried: fold 1: the train split holds one gender only; the gender head cannot learn"
    )
    assert json.loads((tmp_path / "out" / "bad_input.failed.json").read_text())["attempt"] == 1

    lost = (tmp_path / "logs" / "lost_node.log").read_text()
    assert re.findall(r"asked for (gpu=\d runtime=\d+)", lost) == ["gpu=1 runtime=240", "gpu=1 runtime=480",
                                                                  "gpu=1 runtime=720"], lost  # fmt: skip
    assert "RuntimeError: node lost in attempt 1 (an unexpected error" in lost and "node lost in attempt 2" in lost
    assert (tmp_path / "out" / "lost_node").is_dir() and not (tmp_path / "out" / "lost_node.failed.json").exists()


def test_a_new_run_clears_the_failure_markers_an_earlier_run_left(tmp_path):
    from gmptl.retry import clear_markers, failure_marker, record_failure

    marker = failure_marker(tmp_path / "cache/stage2/abc/fold1")
    record_failure(marker, TrainingError("fold 1: the train split holds one gender only"), 1, {"fold": "1"})
    keep = tmp_path / "cache/stage2/abc/fold1.resume/state.pt"
    keep.parent.mkdir(parents=True)
    keep.write_bytes(b"state")
    assert clear_markers(tmp_path / "cache") == 1
    assert not marker.exists() and keep.exists()
    assert clear_markers(tmp_path / "nowhere") == 0


def test_running_out_of_gpu_memory_is_one_sentence_naming_the_plan():
    from gmptl.retry import GpuOutOfMemory, run_attempt

    def work():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(GpuOutOfMemory, match=r"ran out of memory .*gmptl plan --gpu-mem"):
        run_attempt(work, marker="/nonexistent-dir-for-marker/x.failed.json", attempt=1, identity={})
