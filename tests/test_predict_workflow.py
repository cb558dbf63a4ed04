"""`gmptl predict` on a finished demo run reproduces the workflow's own test-fold predictions."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow

# TODO(integrator): this fixture and `snakemake` duplicate tests/test_workflow.py's; move them into
# conftest.py as the session-scoped `demo_run` and drop these copies.
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]
SMALL = """
keep_features: false
demo: {utterances_per_speaker: 8, min_duration_s: 0.8, max_duration_s: 1.4}
corpus: {sessions: [1, 2, 3]}
gmp: {layers: [1, 2], k: [4, 8]}
kmeans: {n_init: 1}
train: {epochs: 2, batch_size: 4}
stage1: {train: {epochs: 1}}
"""
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "workflow" / "scripts")}


def snakemake(workdir: Path, *args: str, configs=(), timeout: int = 900) -> subprocess.CompletedProcess:
    files = [str(ROOT / c) if not Path(c).is_absolute() else c for c in configs]
    command = [*SNAKEMAKE, "-d", str(workdir), *args] + (["--configfile", *files] if files else [])
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=ENV, cwd=workdir)


@pytest.fixture(scope="session")
def finished_demo_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("workflow")
    (workdir / "small.yaml").write_text(SMALL)
    configs = ("demo.yaml", str(workdir / "small.yaml"))
    result = snakemake(workdir, "--cores", "2", configs=configs)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir, configs


def gmptl(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "gmptl.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=ENV, cwd=workdir)


def test_predict_with_fold_1_reproduces_fold_1s_predictions(finished_demo_run):
    workdir, _ = finished_demo_run
    stages = pd.read_csv(workdir / "results" / "gmp_tl" / "stages.tsv", sep="\t")
    assert sorted(stages.loc[stages["stage"] == "stage2", "fold"]) == [1, 2, 3]
    manifest = pd.read_csv(workdir / "results" / "manifest.tsv", sep="\t")
    session1 = manifest[manifest["session"] == 1]
    (workdir / "session1.txt").write_text("\n".join(session1["path"]) + "\n")
    result = gmptl(workdir, "predict", "--model", "results/gmp_tl", "--fold", "1", "-o", "fold1.tsv", "@session1.txt")
    assert result.returncode == 0, result.stderr[-3000:]
    expected = pd.read_csv(workdir / "results" / "gmp_tl" / "fold1" / "predictions.tsv", sep="\t")
    got = pd.read_csv(workdir / "fold1.tsv", sep="\t")
    got["utt_id"] = got["path"].map(dict(zip(session1["path"], session1["utt_id"], strict=True)))
    got, expected = got.set_index("utt_id").sort_index(), expected.set_index("utt_id").sort_index()
    assert list(got.index) == list(expected.index) and len(got) > 0
    scores = [c for c in expected.columns if c.startswith("score_")]
    np.testing.assert_allclose(got[scores].to_numpy(), expected[scores].to_numpy(), atol=1e-4, rtol=0)


def test_predict_with_the_results_folder_uses_the_fold_ensemble(finished_demo_run):
    workdir, _ = finished_demo_run
    manifest = pd.read_csv(workdir / "results" / "manifest.tsv", sep="\t")
    clips = list(manifest["path"][:3])
    result = gmptl(workdir, "predict", "--model", "results/gmp_tl", *clips)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ensemble (mean probability) of folds [1, 2, 3]" in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("path\tduration_s\tpredicted\tscore_neu") and len(lines) == 4
