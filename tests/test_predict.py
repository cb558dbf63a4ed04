"""`gmptl predict`: agreement with the pipeline's predictions, ensembles, any audio format, bad input, windows."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import soxr
import torch
from conftest import ROOT, balanced_sessions, write_tree, write_wav

from gmptl.cli import main
from gmptl.config import experiment_settings, validate_config
from gmptl.corpus import build_manifest
from gmptl.errors import BackboneError, ConfigError
from gmptl.folds import fold_table, make_folds
from gmptl.model import HeadSpec, build_model
from gmptl.model_folder import save_model
from gmptl.predict import expand_inputs, load_predictor, predict_files, window_bounds
from gmptl.recipes import experiment_stages
from gmptl.settings import RuntimeSettings

CLASSES = ["neu", "hap", "ang", "sad"]
SCORES = [f"score_{c}" for c in CLASSES]


def random_model(backbone: str, out, seed: int) -> None:
    """A stage-2 style model folder with random (but not tiny) head weights."""
    torch.manual_seed(seed)
    model = build_model(backbone, HeadSpec(CLASSES, "mean", "linear"))
    with torch.no_grad():
        for p in model.head_parameters():
            p.normal_(0, 1.0)
    save_model(model, out, {"stage": "stage2"}, sample_rate=16000)


@pytest.fixture(scope="module")
def model_dir(tiny_backbone, tmp_path_factory):
    out = tmp_path_factory.mktemp("predict") / "model"
    random_model(tiny_backbone, out, seed=1)
    return out


def voice_like(seconds: float, seed: int, rate: int = 16000) -> np.ndarray:
    """Band-limited (< 4 kHz) test audio, so a resampled copy keeps all of it."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    freqs, phases = rng.uniform(100, 4000, 24), rng.uniform(0, 2 * np.pi, 24)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1, 4) * t)
    wave = envelope * np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None]).sum(0)
    return (0.3 * wave / np.abs(wave).max()).astype(np.float32)


# --- agreement with the pipeline ---------------------------------------------------------------


def finetune_recipe(root, backbone: str) -> dict:
    """The stage-2 recipe of experiment 'finetune' on the tiny corpus at `root`: one quick epoch."""
    config = validate_config(
        {
            "corpus": {"root": str(root), "sessions": [1, 2, 3]},
            "backbone": backbone,
            "train": {"epochs": 1, "batch_size": 4, "lr": 1e-3, "head_lr": 3e-3, "max_crop_s": 0.6},
        }
    )
    return experiment_stages(config, experiment_settings(config, "finetune"))["stage2"].recipe


def fold1_paths(work) -> dict:
    return {"manifest_path": str(work / "manifest.tsv"), "folds_path": str(work / "folds.tsv"), "fold": 1}


@pytest.fixture(scope="module")
def experiment(tiny_backbone, tmp_path_factory):
    """A workdir with results/myexp/: fold 1's trained stage-2 model, its predictions.tsv, stages.tsv."""
    from gmptl.jobs import run_evaluation, run_training

    work = tmp_path_factory.mktemp("work")
    root = write_tree(work / "IEMOCAP_full_release", balanced_sessions(n_sessions=3, per_class=2), seconds=0.8)
    label_map = {"neu": "neu", "hap": "hap", "exc": "hap", "ang": "ang", "sad": "sad"}
    manifest = build_manifest(root, [1, 2, 3], label_map, CLASSES)
    manifest.to_csv(work / "manifest.tsv", sep="\t", index=False)
    make_folds(manifest, "speaker").to_csv(work / "folds.tsv", sep="\t", index=False)
    exp = work / "results" / "myexp"
    paths = fold1_paths(work)
    run_training(
        finetune_recipe(root, tiny_backbone),
        **paths,
        runtime=RuntimeSettings(device="cpu"),
        init_model=None,
        gmp_paths={},
        out_dir=str(exp / "fold1" / "stage2"),
        state_dir=str(exp / "fold1" / "stage2.resume"),
    )
    run_evaluation(
        **paths,
        model_dir=str(exp / "fold1" / "stage2"),
        runtime=RuntimeSettings(device="cpu", eval_batch_seconds=3.0),  # several batches, unlike predict's
        predictions_path=str(exp / "fold1" / "predictions.tsv"),
        metrics_path=str(exp / "fold1" / "metrics.tsv"),
    )
    pd.DataFrame(
        [
            {"stage": "mtl", "fold": 1, "path": "results/myexp/fold1/mtl", "id": "x"},
            {"stage": "stage2", "fold": 1, "path": "results/myexp/fold1/stage2", "id": "y"},
        ]
    ).to_csv(exp / "stages.tsv", sep="\t", index=False)
    table = fold_table(pd.read_csv(work / "folds.tsv", sep="\t"), manifest, 1)
    return exp, table[table["split"] == "test"]


def test_predict_with_a_fold_reproduces_that_folds_predictions(experiment, monkeypatch, tmp_path):
    exp, test = experiment
    monkeypatch.chdir(tmp_path)  # stages.tsv paths resolve against the folder holding results/, not the CWD
    table = predict_files(exp, list(test["path"]), fold=1, batch_seconds=7.0)
    expected = pd.read_csv(exp / "fold1" / "predictions.tsv", sep="\t").set_index("utt_id")
    got = table.assign(utt_id=table["path"].map(dict(zip(test["path"], test["utt_id"], strict=True))))
    got = got.set_index("utt_id").loc[expected.index]
    assert len(got) == len(test) == len(expected) > 0 and got["error"].isna().all()
    np.testing.assert_allclose(got[SCORES].to_numpy(), expected[SCORES].to_numpy(), atol=1e-4, rtol=0)
    assert (got["predicted"] == expected["predicted"]).all()
    np.testing.assert_allclose(got["duration_s"], test.set_index("utt_id").loc[expected.index, "duration_s"], 1e-3)


def test_predicting_a_stage1_model_or_an_unknown_fold_is_a_clear_error(experiment, tmp_path, tiny_backbone):
    exp, test = experiment
    with pytest.raises(BackboneError, match=r"stages.tsv' has no stage2 model of fold 3 \(folds: \[1\]\)"):
        load_predictor(exp, fold=3)
    save_model(build_model(tiny_backbone, HeadSpec(CLASSES, None, gmp_heads={"L1_k4": 4})), tmp_path / "s1", {})
    with pytest.raises(BackboneError, match="has no emotion head"):
        load_predictor(tmp_path / "s1")
    with pytest.raises(BackboneError, match="neither a model folder .* nor an experiment's results folder"):
        load_predictor(tmp_path)


# --- demo provenance ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def descendant(experiment, tiny_backbone):
    """A stage-2 model trained from fold 1's stage-2 model folder (as stage 2 starts from stage 1's)."""
    from gmptl.jobs import run_training

    exp, _ = experiment
    work = exp.parent.parent
    out = exp / "fold1" / "descendant"
    run_training(
        finetune_recipe(work / "IEMOCAP_full_release", tiny_backbone),
        **fold1_paths(work),
        runtime=RuntimeSettings(device="cpu"),
        init_model=str(exp / "fold1" / "stage2"),
        gmp_paths={},
        out_dir=str(out),
        state_dir=str(exp / "fold1" / "descendant.resume"),
    )
    return out


def test_a_model_trained_from_a_demo_model_folder_inherits_the_demo_flag(descendant):
    meta = json.loads((descendant / "model.json").read_text())
    assert meta["init"].endswith("stage2/backbone")  # started from a model folder, not the marked backbone
    assert meta["backbone_source"]["tiny_demo_model"] is True


def test_predict_warns_in_one_line_when_the_model_descends_from_the_demo_backbone(descendant, tmp_path, capsys):
    write_wav(tmp_path / "a.wav", 0.9)
    assert main(["predict", "--model", str(descendant), str(tmp_path / "a.wav")]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "RANDOMLY INITIALISED demo" in line]
    assert warnings == [
        f"gmptl predict: !!! model '{descendant}' descends from gmptl's tiny RANDOMLY INITIALISED demo backbone: "
        "the scores say nothing about real recordings; train with a pretrained backbone for real predictions !!!"
    ]


def test_a_model_without_demo_provenance_gives_no_warning(model_dir, tmp_path, capsys):
    write_wav(tmp_path / "a.wav", 0.9)
    assert main(["predict", "--model", str(model_dir), str(tmp_path / "a.wav")]) == 0
    assert "demo" not in capsys.readouterr().err


def test_stages_file_without_a_path_column_is_named(tmp_path):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "stages.tsv").write_text("stage\tfold\nstage2\t1\n")
    with pytest.raises(BackboneError, match=r"stages.tsv' lacks column\(s\) \['path'\]"):
        load_predictor(tmp_path / "exp")


# --- which model: ensemble, single fold, deploy -------------------------------------------------


@pytest.fixture(scope="module")
def two_folds(tiny_backbone, tmp_path_factory):
    """results/exp with two fold models (one listed by an absolute path), and three recordings."""
    work = tmp_path_factory.mktemp("ensemble")
    exp = work / "results" / "exp"
    random_model(tiny_backbone, exp / "fold1" / "stage2", seed=1)
    random_model(tiny_backbone, exp / "fold2" / "stage2", seed=2)
    rows = "stage\tfold\tpath\nstage1\t1\tresults/exp/fold1/stage1\nstage2\t1\tresults/exp/fold1/stage2\n"
    (exp / "stages.tsv").write_text(rows + f"stage2\t2\t{exp / 'fold2' / 'stage2'}\n")
    (work / "audio").mkdir()
    for i, seconds in enumerate((0.7, 1.3, 2.1)):
        sf.write(work / "audio" / f"r{i}.wav", voice_like(seconds, i), 16000)
    return exp, sorted((work / "audio").glob("*.wav"))


def test_a_results_folder_without_fold_is_the_mean_of_its_fold_models(two_folds, caplog):
    exp, wavs = two_folds
    caplog.set_level("INFO", logger="gmptl")
    ensemble = predict_files(exp, wavs)
    assert "ensemble (mean probability) of folds [1, 2]" in caplog.text
    one, two = (predict_files(exp, wavs, fold=f) for f in (1, 2))
    np.testing.assert_allclose(ensemble[SCORES], (one[SCORES] + two[SCORES]) / 2, atol=1e-6)
    assert not np.allclose(one[SCORES], two[SCORES], atol=1e-2)  # the folds do differ
    np.testing.assert_allclose(ensemble[SCORES].sum(axis=1), 1.0, atol=1e-5)
    best = ensemble[SCORES].to_numpy().argmax(axis=1)
    assert list(ensemble["predicted"]) == [CLASSES[i] for i in best]


def test_a_deploy_model_is_preferred_and_announced(two_folds, tiny_backbone, tmp_path, caplog):
    exp, wavs = two_folds
    copy = tmp_path / "results" / "exp"
    copy.mkdir(parents=True)
    (copy / "stages.tsv").write_text((exp / "stages.tsv").read_text())
    random_model(tiny_backbone, copy / "deploy", seed=3)
    caplog.set_level("INFO", logger="gmptl")
    deployed = predict_files(copy, wavs[:1])
    assert f"the deployed model '{copy / 'deploy'}'" in caplog.text
    direct = predict_files(copy / "deploy", wavs[:1])
    np.testing.assert_allclose(deployed[SCORES], direct[SCORES], atol=0)
    with pytest.raises(ConfigError, match="--fold picks a model of an experiment's results folder"):
        predict_files(copy / "deploy", wavs[:1], fold=1)


# --- audio formats and bad input ---------------------------------------------------------------


def test_a_stereo_44k_copy_scores_like_the_original(model_dir, tmp_path):
    wave = voice_like(1.7, seed=7)
    sf.write(tmp_path / "orig.wav", wave, 16000, subtype="PCM_16")
    decoded, _ = sf.read(tmp_path / "orig.wav", dtype="float32")
    high = soxr.resample(decoded, 16000, 44100, quality="VHQ")
    sf.write(tmp_path / "stereo.flac", np.stack([high, high], axis=1), 44100, subtype="PCM_24")
    sf.write(tmp_path / "other.wav", voice_like(1.7, seed=8), 16000, subtype="PCM_16")
    table = predict_files(model_dir, [tmp_path / "orig.wav", tmp_path / "stereo.flac", tmp_path / "other.wav"])
    orig, stereo, other = table[SCORES].to_numpy()
    assert abs(table["duration_s"][1] - table["duration_s"][0]) < 1e-4
    np.testing.assert_allclose(stereo, orig, atol=5e-4)
    assert np.abs(other - orig).max() > 2e-2  # a different recording scores differently


def test_a_folder_with_a_corrupt_file_predicts_the_rest_names_it_and_fails(model_dir, tmp_path, capsys):
    folder = tmp_path / "clips"
    for i in range(3):
        write_wav(folder / "sub" / f"good{i}.wav", 0.6 + 0.3 * i, seed=i)
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    (folder / "empty.wav").write_bytes(b"")
    (folder / "notes.txt").write_text("not audio, not searched\n")
    (folder / "._good0.wav").write_bytes(b"macOS metadata")
    code = main(["predict", "--model", str(model_dir), "--output", str(tmp_path / "out.tsv"), str(folder)])
    err = capsys.readouterr().err
    table = pd.read_csv(tmp_path / "out.tsv", sep="\t")
    assert code == 1
    assert list(table.columns) == ["path", "duration_s", "predicted", *SCORES, "error"]
    expected = [*folder.rglob("good*.wav"), folder / "broken.wav", folder / "empty.wav"]
    assert sorted(table["path"]) == sorted(map(str, expected))
    good = table[table["error"].isna()]
    assert len(good) == 3 and good[SCORES].notna().all().all()
    bad = table.set_index("path")["error"]
    assert "cannot be read as audio" in bad[str(folder / "broken.wav")]
    assert "empty (0 bytes)" in bad[str(folder / "empty.wav")]
    assert f"skipped '{folder / 'broken.wav'}'" in err and f"skipped '{folder / 'empty.wav'}'" in err
    assert "2 input(s) failed" in err


def test_nan_and_inf_float_files_are_refused_naming_the_file_and_the_time(model_dir, tmp_path, capsys):
    wave = voice_like(1.0, seed=5)
    sf.write(tmp_path / "good.wav", wave, 16000, subtype="FLOAT")
    sf.write(tmp_path / "nan.wav", np.where(np.arange(16000) == 8000, np.nan, wave), 16000, subtype="FLOAT")
    sf.write(tmp_path / "inf.wav", np.where(np.arange(16000) == 4000, np.inf, wave), 16000, subtype="DOUBLE")
    paths = [str(tmp_path / n) for n in ("good.wav", "nan.wav", "inf.wav")]
    code = main(["predict", "--model", str(model_dir), "-o", str(tmp_path / "out.tsv"), *paths])
    err = capsys.readouterr().err
    table = pd.read_csv(tmp_path / "out.tsv", sep="\t").set_index("path")
    assert code == 1
    assert f"gmptl predict: skipped '{paths[1]}': holds a non-finite sample (nan) at 0.500 s (frame 8000)" in err
    assert f"gmptl predict: skipped '{paths[2]}': holds a non-finite sample (inf) at 0.250 s (frame 4000)" in err
    assert table.loc[paths[1:], "predicted"].isna().all() and table.loc[paths[1:], SCORES].isna().all().all()
    assert table.loc[paths[0], SCORES].notna().all()


def test_a_truncated_wav_is_refused_as_the_pipeline_refuses_it(model_dir, tmp_path):
    write_wav(tmp_path / "cut.wav", 3.41)
    (tmp_path / "cut.wav").write_bytes((tmp_path / "cut.wav").read_bytes()[: 44 + 20000])  # header says 3.41 s
    row = predict_files(model_dir, [tmp_path / "cut.wav"]).iloc[0]
    assert row["error"] == "is truncated: its header declares 3.41 s of audio but the file holds 0.62 s"
    assert row[SCORES].isna().all() and row["predicted"] != row["predicted"]


def test_finite_but_extreme_samples_are_an_error_not_a_prediction(model_dir, tmp_path):
    sf.write(tmp_path / "loud.wav", np.full(16000, 1e30, np.float32), 16000, subtype="FLOAT")
    row = predict_files(model_dir, [tmp_path / "loud.wav"]).iloc[0]
    assert "scores of it are not finite" in row["error"] and row[SCORES].isna().all()


def test_a_full_disk_while_writing_the_output_is_one_sentence(model_dir, tmp_path, monkeypatch, capsys):
    write_wav(tmp_path / "a.wav", 0.9)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")  # as a write() on a full disk: no file name

    monkeypatch.setattr(pd.DataFrame, "to_csv", full_disk)
    out = tmp_path / "out.tsv"
    assert main(["predict", "--model", str(model_dir), "-o", str(out), str(tmp_path / "a.wav")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == (
        f"gmptl predict: no space is left on the device holding '{out}'; free space there, or write elsewhere, "
        "and rerun"
    )
    assert not out.exists()


def test_all_good_input_exits_zero_and_writes_stdout(model_dir, tmp_path, capsys):
    write_wav(tmp_path / "a.wav", 0.9)
    assert main(["predict", "--model", str(model_dir), str(tmp_path / "a.wav")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split("\t") == ["path", "duration_s", "predicted", *SCORES, "error"] and len(out) == 2


def test_list_files_missing_paths_and_too_short_files_are_reported(model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_wav(tmp_path / "a.wav", 0.9)
    write_wav(tmp_path / "tiny.wav", 0.01)
    (tmp_path / "list.txt").write_text("# my clips\na.wav\n\ngone.wav\ntiny.wav\n")
    table = predict_files(model_dir, ["@list.txt", "@nolist.txt", "a.wav"]).set_index("path")
    assert list(table.index) == ["a.wav", "gone.wav", "tiny.wav", "@nolist.txt"]  # duplicates scored once
    assert table.loc["a.wav", "error"] != table.loc["a.wav", "error"]  # NaN: no error
    assert table.loc["gone.wav", "error"] == "the file does not exist"
    assert "10.0 ms long; the model needs at least 25.0 ms" in table.loc["tiny.wav", "error"]
    assert "the list file cannot be read" in table.loc["@nolist.txt", "error"]


def test_folders_are_searched_for_every_format_soundfile_reads(tmp_path):
    (tmp_path / "a").mkdir()
    sf.write(tmp_path / "a" / "x.flac", np.zeros(800), 16000)
    sf.write(tmp_path / "a" / "y.OGG", np.zeros(8000), 16000, format="OGG")
    sf.write(tmp_path / "a" / "z.aiff", np.zeros(800), 16000)
    (tmp_path / "a" / "w.mp4").write_bytes(b"")
    found = [p for p, _ in expand_inputs([tmp_path / "a"])]
    assert found == [str(tmp_path / "a" / n) for n in ("x.flac", "y.OGG", "z.aiff")]
    assert expand_inputs([tmp_path / "a" / "w.mp4"]) == [(str(tmp_path / "a" / "w.mp4"), None)]  # named: tried
    (tmp_path / "b").mkdir()
    assert expand_inputs([tmp_path / "b"]) == [(str(tmp_path / "b"), "the folder holds no audio file")]


# --- windows -----------------------------------------------------------------------------------


def test_window_bounds_cover_the_recording_and_end_at_its_end():
    assert window_bounds(100, 40, 20) == [(0, 40), (20, 60), (40, 80), (60, 100)]
    assert window_bounds(110, 40, 30) == [(0, 40), (30, 70), (60, 100), (70, 110)]
    assert window_bounds(30, 40, 20) == [(0, 30)]
    assert window_bounds(40, 40, 20) == [(0, 40)]


def test_windows_mode_gives_a_row_per_window_and_a_whole_file_row_with_their_mean(model_dir, tmp_path):
    halves = [voice_like(1.75, seed=3), 0.1 * np.random.default_rng(3).standard_normal(28000).astype(np.float32)]
    sf.write(tmp_path / "long.wav", np.concatenate(halves), 16000)  # windows that differ
    sf.write(tmp_path / "short.wav", voice_like(0.8, seed=4), 16000)
    table = predict_files(model_dir, [tmp_path / "long.wav", tmp_path / "short.wav"], window_s=1.0, hop_s=0.5)
    assert list(table.columns) == ["path", "start_s", "end_s", "duration_s", "predicted", *SCORES, "error"]
    long = table[table["path"] == str(tmp_path / "long.wav")]
    whole, windows = long.iloc[0], long.iloc[1:]
    assert np.isnan(whole["start_s"]) and np.isnan(whole["end_s"]) and whole["duration_s"] == pytest.approx(3.5)
    assert list(windows["start_s"]) == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert list(windows["end_s"]) == [1.0, 1.5, 2.0, 2.5, 3.0, 3.5]
    np.testing.assert_allclose(whole[SCORES].to_numpy(float), windows[SCORES].mean().to_numpy(), atol=1e-6)
    single = predict_files(model_dir, [tmp_path / "long.wav"])
    sf.write(tmp_path / "piece.wav", sf.read(tmp_path / "long.wav", dtype="float32")[0][8000:24000], 16000)
    piece = predict_files(model_dir, [tmp_path / "piece.wav"])  # a window scores like a file of its audio
    np.testing.assert_allclose(windows.iloc[1][SCORES].to_numpy(float), piece.iloc[0][SCORES].to_numpy(float), 1e-4)
    assert not np.allclose(single[SCORES].to_numpy(float), whole[SCORES].to_numpy(float), atol=1e-2)  # a mean
    short = table[table["path"] == str(tmp_path / "short.wav")]
    assert len(short) == 2 and short.iloc[1]["end_s"] == pytest.approx(0.8)


def test_bad_window_and_device_options_name_the_option(model_dir, tmp_path):
    write_wav(tmp_path / "a.wav", 0.9)
    with pytest.raises(ConfigError, match="--hop 2.0 must be positive and at most --window 1.0"):
        predict_files(model_dir, [tmp_path / "a.wav"], window_s=1.0, hop_s=2.0)
    with pytest.raises(ConfigError, match="--hop needs --window"):
        predict_files(model_dir, [tmp_path / "a.wav"], hop_s=1.0)
    with pytest.raises(ConfigError, match="--device gpu0 is not a torch device"):
        predict_files(model_dir, [tmp_path / "a.wav"], device="gpu0")


def test_the_console_script_runs_as_a_module_and_reports_a_bad_model_in_one_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "workflow" / "scripts")}
    result = subprocess.run(
        [sys.executable, "-m", "gmptl.cli", "predict", "--model", str(tmp_path), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"gmptl predict: '{tmp_path}' is neither a model folder (no model.json) nor an experiment's results folder "
        "(no stages.tsv)"
    ]


def test_a_run_with_several_seeds_uses_its_first_seeds_fold_models(tmp_path, caplog):
    from gmptl.predict import fold_models

    exp = tmp_path / "results" / "exp"
    exp.mkdir(parents=True)
    lines = ["stage\tfold\tpath\tid\thead\tseed", "mtl\t1\tresults/cache/mtl/a/fold1\ta\t\t42"]
    for seed, run in ((42, "b"), (43, "c"), (44, "d")):
        lines += [f"stage2\t{fold}\tresults/cache/stage2/{run}/fold{fold}\t{run}\t\t{seed}" for fold in (1, 2)]
    (exp / "stages.tsv").write_text("\n".join(lines) + "\n")
    with caplog.at_level("INFO", logger="gmptl.predict"):
        models = fold_models(exp)
    assert models == {fold: tmp_path / "results" / "cache" / "stage2" / "b" / f"fold{fold}" for fold in (1, 2)}
    assert "lists seeds ['42', '43', '44']; using seed 42's models" in caplog.text
