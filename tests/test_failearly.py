"""Fail early, lose nothing: checks before training, label-file checks, locks, stale temporaries, demo paths."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pandas as pd
import pytest

from gmptl.demo import DemoOutputs, demo_outputs
from gmptl.errors import ConfigError, CorpusError, TrainingError
from gmptl.fileio import atomic_path
from gmptl.jobs import check_label_file
from gmptl.locks import exclusive
from gmptl.preflight import frames_of, run_preflight
from gmptl.settings import GmpHead

# --- demo rules write only under results/demo/ -----------------------------------------------------


def test_demo_builds_only_under_results_demo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert demo_outputs(True, "results/demo/IEMOCAP_full_release", "results/demo/tiny_hubert") == DemoOutputs(
        True, True
    )
    assert demo_outputs(False, "anything", "facebook/hubert-base-ls960") == DemoOutputs(False, False)


def test_demo_with_a_hub_backbone_stops_instead_of_writing_a_random_model_there(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="config key 'backbone'.*'facebook/hubert-base-ls960' is neither there"):
        demo_outputs(True, "results/demo/IEMOCAP_full_release", "facebook/hubert-base-ls960")
    assert not (tmp_path / "facebook").exists()


def test_demo_with_a_mistyped_corpus_root_stops(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="config key 'corpus.root'"):
        demo_outputs(True, str(tmp_path / "IEMOCAP_ful_release"), "results/demo/tiny_hubert")


def test_demo_uses_an_existing_corpus_or_model_elsewhere_as_it_is(tmp_path, monkeypatch, tiny_backbone):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus").mkdir()
    assert demo_outputs(True, str(tmp_path / "corpus"), tiny_backbone) == DemoOutputs(False, False)


# --- checks before training -------------------------------------------------------------------------


def small_run(durations: list[float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    ids = [f"u{i}" for i in range(len(durations))]
    manifest = pd.DataFrame({"utt_id": ids, "duration_s": durations})
    splits = (["train"] * (len(ids) - 2)) + ["valid", "test"]
    folds = pd.DataFrame({"fold": 1, "utt_id": ids, "split": splits})
    return manifest, folds


def check(backbone, layers=(1, 2), k=(4,), fraction=1.0, cap=10**6):
    return {
        "experiment": "gmp_tl",
        "backbone": backbone,
        "layers": list(layers),
        "k": list(k),
        "fit_fraction": fraction,
        "max_fit_frames": cap,
    }


def test_frames_follow_the_conv_formula():
    kernels, strides = [10, 3, 3, 3, 3, 2, 2], [5, 2, 2, 2, 2, 2, 2]
    assert frames_of(np.array([16000, 400, 399, 0]), kernels, strides).tolist() == [49, 1, 0, 0]


def test_a_layer_the_backbone_lacks_fails_before_training(tiny_backbone):
    manifest, folds = small_run([1.0] * 6)
    with pytest.raises(
        ConfigError, match=r"'gmp.layers' \(experiment 'gmp_tl'\) asks for layer\(s\) \[7\].* 2 transformer"
    ):
        run_preflight(manifest, folds, [check(tiny_backbone, layers=(1, 7))], 16000)


def test_k_above_the_training_frames_fails_before_training(tiny_backbone):
    manifest, folds = small_run([1.0] * 6)  # 4 training utterances × 49 frames = 196
    report = run_preflight(manifest, folds, [check(tiny_backbone, k=(8, 196))], 16000)
    assert any("k up to 196 ≤ 196 training frames" in line for line in report)
    with pytest.raises(ConfigError, match=r"'gmp.k' .* asks for k = 197, but fold 1 offers k-means only about 196"):
        run_preflight(manifest, folds, [check(tiny_backbone, k=(8, 197))], 16000)
    with pytest.raises(ConfigError, match="only about 100 training frames"):
        run_preflight(manifest, folds, [check(tiny_backbone, k=(150,), cap=100)], 16000)


def test_an_utterance_shorter_than_the_receptive_field_is_named(tiny_backbone):
    manifest, folds = small_run([1.0, 1.0, 0.02, 1.0, 1.0, 1.0])  # 320 samples < 400
    with pytest.raises(CorpusError, match=r"1 utterance\(s\) are shorter than the receptive field.*\['u2'\]"):
        run_preflight(manifest, folds, [check(tiny_backbone, layers=(), k=())], 16000)


# --- label files are checked against what their consumer expects -----------------------------------


@pytest.mark.parametrize(
    "attrs, labels, message",
    [
        ({"layer": 2, "k": 8, "fold": 1}, [0, 7], r"holds layer 2, but L1_k8 of fold 1 needs layer 1"),
        ({"layer": 1, "k": 16, "fold": 1}, [0, 7], r"holds k 16, but L1_k8 of fold 1 needs k 8"),
        ({"layer": 1, "k": 8, "fold": 3}, [0, 7], r"holds fold 3, but L1_k8 of fold 1 needs fold 1"),
        ({"layer": 1, "k": 8, "fold": 1}, [0, 15], r"labels 0\.\.15, outside 0\.\.7 of L1_k8"),
    ],
)
def test_a_label_file_of_another_layer_k_or_fold_is_refused(attrs, labels, message):
    with pytest.raises(TrainingError, match=message):
        check_label_file("gmp/x.h5", attrs, np.asarray(labels), GmpHead(1, 8), 1)


def test_a_label_file_of_the_expected_scale_passes():
    check_label_file("gmp/x.h5", {"layer": 1, "k": 8, "fold": 1}, np.asarray([0, 7, 3]), GmpHead(1, 8), 1)


# --- recovery: one writer per output, no stale temporaries -----------------------------------------

HOLD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {scripts!r})
    from gmptl.locks import exclusive
    with exclusive(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(60)
""")


def test_a_second_copy_of_a_job_stops_while_the_first_holds_the_output(tmp_path):
    from conftest import ROOT

    target = tmp_path / "stage2" / "fold1"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD.format(scripts=str(ROOT / "workflow" / "scripts")), str(target)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(TrainingError, match=r"another job \(pid \d+@.*\) is already writing"):
            with exclusive(target):
                pass
    finally:
        holder.kill()
        holder.wait()
    with exclusive(target):  # a killed holder leaves no stale lock
        pass


def test_a_killed_writers_hidden_temporary_is_removed_on_the_next_write(tmp_path):
    stale = tmp_path / ".fold1.h5.abc123.tmp"
    stale.mkdir()
    (stale / "fold1.h5").write_bytes(b"\0" * 1024)
    with atomic_path(tmp_path / "fold1.h5") as tmp, h5py.File(tmp, "w") as handle:
        handle["x"] = [1]
    assert not stale.exists() and (tmp_path / "fold1.h5").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["fold1.h5"]


# --- the same, as a user meets them in the workflow -----------------------------------------------


@pytest.mark.slow
def test_a_layer_the_demo_model_lacks_stops_the_first_training_job_before_it_trains(tmp_path):
    from conftest import snakemake

    (tmp_path / "bad.yaml").write_text(
        "demo: {utterances_per_speaker: 4, min_duration_s: 0.8, max_duration_s: 1.0}\n"
        "corpus: {sessions: [1, 2]}\ngmp: {layers: [1, 7], k: [4]}\n"
    )
    result = snakemake(tmp_path, "--cores", "2", configs=("demo.yaml", str(tmp_path / "bad.yaml")))
    assert result.returncode != 0
    # gmp_tl's first jobs (its multi-task models) stop before they train; a job checks the experiments whose
    # plans hold its stage, so finetune's stage 2 (no GMP layers) is free to train
    logs = sorted((tmp_path / "results" / "logs" / "cache" / "mtl").glob("*/fold*.log"))
    assert logs, result.output[-2000:]
    for log in logs:
        text = log.read_text()
        assert "config key 'gmp.layers' (experiment 'gmp_tl') asks for layer(s) [7]" in text
        assert "Traceback" not in text and "round 1/" not in text  # stopped before the first step
    assert not list((tmp_path / "results" / "cache" / "mtl").glob("*/fold*/model.json"))  # no model written
    for log in (tmp_path / "results" / "logs" / "cache" / "stage2").glob("*/fold*.log"):
        assert "asks for layer(s)" not in log.read_text()  # finetune does not cluster layers


@pytest.mark.slow
def test_an_edited_corpus_rebuilds_the_manifest(tmp_path):
    from conftest import balanced_sessions, snakemake, write_tree

    root = write_tree(tmp_path / "IEMOCAP_full_release", balanced_sessions(n_sessions=2, per_class=1), seconds=0.5)
    (tmp_path / "my.yaml").write_text(f"corpus: {{root: {root}, sessions: [1, 2]}}\n")
    configs = ("config.yaml", str(tmp_path / "my.yaml"))
    built = snakemake(tmp_path, "--cores", "1", "results/manifest.tsv", configs=configs)
    assert built.returncode == 0, built.output[-3000:]
    assert "Nothing to be done" in snakemake(tmp_path, "-n", "results/manifest.tsv", configs=configs).output
    label_file = root / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"
    label_file.write_text(label_file.read_text().replace("\tneu\t", "\tsad\t", 1))
    plan = snakemake(tmp_path, "-n", "results/manifest.tsv", configs=configs)
    assert "build_manifest" in plan.output and "Nothing to be done" not in plan.output


@pytest.mark.slow
def test_jobs_run_the_library_of_their_own_workflow(tmp_path):
    import os
    import shutil

    from conftest import ROOT, balanced_sessions, write_tree

    copy = tmp_path / "other_checkout"
    copy.mkdir()
    for name in ("Snakefile", "config.yaml", "workflow", "profiles", "envs"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, copy / name)
    root = write_tree(tmp_path / "IEMOCAP_full_release", balanced_sessions(n_sessions=2, per_class=1), seconds=0.5)
    (tmp_path / "my.yaml").write_text(f"corpus: {{root: {root}, sessions: [1, 2]}}\n")
    work = tmp_path / "work"
    work.mkdir()
    command = [sys.executable, "-m", "snakemake", "-s", str(copy / "Snakefile"), "-d", str(work), "--cores", "1"]
    command += ["results/manifest.tsv", "--configfile", str(copy / "config.yaml"), str(tmp_path / "my.yaml")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # gmptl stays installed from this checkout
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    log = (work / "results" / "logs" / "build_manifest.log").read_text()
    assert f"from {copy / 'workflow' / 'scripts' / 'gmptl'}" in log, log[:500]
