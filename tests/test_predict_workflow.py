"""`gmptl predict` on a finished demo run reproduces the workflow's own test-fold predictions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "workflow" / "scripts")}


def gmptl(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "gmptl.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=ENV, cwd=workdir)


def test_predict_with_fold_1_reproduces_fold_1s_predictions(demo_run):
    workdir, _ = demo_run
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


def test_predict_with_the_results_folder_uses_the_fold_ensemble(demo_run):
    workdir, _ = demo_run
    manifest = pd.read_csv(workdir / "results" / "manifest.tsv", sep="\t")
    clips = list(manifest["path"][:3])
    result = gmptl(workdir, "predict", "--model", "results/gmp_tl", *clips)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ensemble (mean probability) of folds [1, 2, 3]" in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("path\tduration_s\tpredicted\tscore_neu") and len(lines) == 4


def test_deploy_builds_a_model_on_all_data_that_predict_prefers(demo_run):
    workdir, _ = demo_run
    deploy = workdir / "results" / "finetune" / "deploy"
    meta = json.loads((deploy / "model.json").read_text())
    assert meta["fold"] == 0 and meta["stage"] == "stage2"
    assert not (workdir / "results" / "gmp_tl" / "deploy").exists()  # deploy: [finetune] only
    manifest = pd.read_csv(workdir / "results" / "manifest.tsv", sep="\t")
    result = gmptl(workdir, "predict", "--model", "results/finetune", *manifest["path"][:2])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "deploy" in result.stderr and len(result.stdout.splitlines()) == 3


def session1_list(workdir: Path) -> pd.DataFrame:
    manifest = pd.read_csv(workdir / "results" / "manifest.tsv", sep="\t")
    session1 = manifest[manifest["session"] == 1]
    (workdir / "session1.txt").write_text("\n".join(session1["path"]) + "\n")
    return session1


def test_an_onnx_export_of_fold_1_reproduces_fold_1s_predictions(demo_run, tmp_path):
    pytest.importorskip("onnxruntime")
    workdir, _ = demo_run
    session1 = session1_list(workdir)
    out = tmp_path / "fold1_onnx"
    export = gmptl(workdir, "export", "results/gmp_tl", "--fold", "1", "--to", "onnx", str(out))
    assert export.returncode == 0, export.stderr[-3000:]
    assert {"model.onnx", "gmptl-onnx.json", "README.md"} <= {p.name for p in out.iterdir()}
    result = gmptl(workdir, "predict", "--model", str(out), "-o", "onnx.tsv", "@session1.txt")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ONNX export" in result.stderr
    expected = pd.read_csv(workdir / "results" / "gmp_tl" / "fold1" / "predictions.tsv", sep="\t")
    got = pd.read_csv(workdir / "onnx.tsv", sep="\t")
    got["utt_id"] = got["path"].map(dict(zip(session1["path"], session1["utt_id"], strict=True)))
    got, expected = got.set_index("utt_id").sort_index(), expected.set_index("utt_id").sort_index()
    assert list(got.index) == list(expected.index) and len(got) > 0
    assert got["predicted"].tolist() == expected["predicted"].tolist()
    scores = [c for c in expected.columns if c.startswith("score_")]
    np.testing.assert_allclose(got[scores].to_numpy(), expected[scores].to_numpy(), atol=1e-4, rtol=0)
    card = (out / "README.md").read_text()
    folds = pd.read_csv(workdir / "results" / "gmp_tl" / "metrics" / "folds.tsv", sep="\t").set_index("fold")
    assert f"| 1 (this model) | {int(folds.loc[1, 'n'])} | {100 * folds.loc[1, 'war']:.2f} |" in card


def test_a_transformers_export_of_fold_1_gives_fold_1s_top_labels_through_the_stock_pipeline(demo_run, tmp_path):
    from transformers import pipeline

    from gmptl.audio import load_audio

    workdir, _ = demo_run
    session1 = session1_list(workdir)
    out = tmp_path / "fold1_hf"
    export = gmptl(workdir, "export", "results/gmp_tl", "--fold", "1", "--to", "transformers", str(out))
    assert export.returncode == 0, export.stderr[-3000:]
    classify = pipeline("audio-classification", model=str(out))
    expected = pd.read_csv(workdir / "results" / "gmp_tl" / "fold1" / "predictions.tsv", sep="\t").set_index("utt_id")
    for _, row in session1.iterrows():
        wave = load_audio(str(workdir / row["path"]), 16000, "convert")
        top = classify({"raw": wave, "sampling_rate": 16000}, top_k=1)[0]["label"]
        assert top == expected.loc[row["utt_id"], "predicted"], row["utt_id"]
    card = (out / "README.md").read_text()
    summary = pd.read_csv(workdir / "results" / "gmp_tl" / "metrics" / "summary.tsv", sep="\t").set_index("statistic")
    assert f"{100 * summary.loc['mean', 'uar']:.2f} ± {100 * summary.loc['std', 'uar']:.2f}" in card
    assert "library_name: transformers" in card and "stage1 " in card  # the stages it was built from, by id


def test_the_deploy_model_folder_carries_a_model_card(demo_run):
    workdir, _ = demo_run
    card = (workdir / "results" / "finetune" / "deploy" / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: gmptl" in card
    assert "all of the corpus's data" in card and "gmptl predict --model results/finetune" in card
    assert (workdir / "results" / "finetune" / "deploy" / "model.json").is_file()
