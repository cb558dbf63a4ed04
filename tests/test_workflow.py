"""The Snakemake workflow end to end on a small demo corpus: outputs, reruns, report, dry-run plans."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT

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

pytestmark = pytest.mark.slow


def snakemake(workdir: Path, *args: str, configs=(), timeout: int = 900) -> subprocess.CompletedProcess:
    files = [str(ROOT / c) if not Path(c).is_absolute() else c for c in configs]
    command = [*SNAKEMAKE, "-d", str(workdir), *args] + (["--configfile", *files] if files else [])
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=workdir)
    result.output = result.stdout + result.stderr  # Snakemake prints plans and errors on either stream
    return result


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[1].split("Reasons:")[0] if "Job stats:" in output else ""
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("workflow")
    (workdir / "small.yaml").write_text(SMALL)
    configs = ("demo.yaml", str(workdir / "small.yaml"))
    result = snakemake(workdir, "--cores", "2", configs=configs)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir, configs


def test_demo_builds_every_contract_output(demo_run):
    workdir, _ = demo_run
    results = workdir / "results"
    manifest = pd.read_csv(results / "manifest.tsv", sep="\t")
    assert list(manifest.columns) == [
        "utt_id",
        "path",
        "session",
        "speaker",
        "gender",
        "emotion",
        "dialog",
        "duration_s",
    ]
    assert set(manifest["session"]) == {1, 2, 3} and set(manifest["emotion"]) == {"neu", "hap", "ang", "sad"}
    folds = pd.read_csv(results / "folds.tsv", sep="\t")
    assert list(folds.columns) == ["fold", "utt_id", "split"] and set(folds["fold"]) == {1, 2, 3}
    for exp in ("gmp_tl", "finetune"):
        per_fold = pd.read_csv(results / exp / "metrics" / "folds.tsv", sep="\t")
        summary = pd.read_csv(results / exp / "metrics" / "summary.tsv", sep="\t")
        assert list(per_fold["fold"]) == [1, 2, 3]
        assert {"n", "war", "uar", "macro_f1", "recall_neu", "recall_hap", "recall_ang", "recall_sad"} <= set(
            per_fold.columns
        )
        assert list(summary["statistic"]) == ["mean", "std", "pooled"]
        assert summary.set_index("statistic").loc["pooled", "n"] == len(manifest)
        predictions = pd.read_csv(results / exp / "fold2" / "predictions.tsv", sep="\t")
        assert {"utt_id", "true", "predicted", "score_neu", "score_sad"} <= set(predictions.columns)
        assert set(predictions["utt_id"]) == set(manifest[manifest["session"] == 2]["utt_id"])
        assert (results / exp / "plots" / "confusion.png").stat().st_size > 0
    assert (results / "gmp_tl" / "fold1" / "gmp" / "layer2_k8.h5").is_file()
    assert not (results / "gmp_tl" / "fold1" / "features.h5").exists()  # keep_features: false → temp()
    assert not (results / "finetune" / "fold1" / "features.h5").exists()  # the baseline needs no GMPs
    comparison = pd.read_csv(results / "comparison.tsv", sep="\t")
    assert list(comparison["experiment"]) == ["finetune", "gmp_tl"] or set(comparison["experiment"]) == {
        "gmp_tl",
        "finetune",
    }
    assert not list(results.rglob("*.resume"))  # resume folders are removed once a model is written


def test_second_run_has_nothing_to_do(demo_run):
    workdir, configs = demo_run
    result = snakemake(workdir, "-n", configs=configs)
    assert "Nothing to be done" in result.output


def test_deleting_one_stage2_model_reruns_only_what_depends_on_it(demo_run):
    workdir, configs = demo_run
    shutil.rmtree(workdir / "results" / "gmp_tl" / "fold2" / "stage2")
    plan = snakemake(workdir, "-n", configs=configs)
    assert job_counts(plan.output) == {
        "train_stage2": 1,
        "evaluate_fold": 1,
        "summarize_experiment": 1,
        "plot_experiment": 1,
        "compare_experiments": 1,
        "all": 1,
    }
    assert "results/gmp_tl/fold2/stage2" in plan.output
    rerun = snakemake(workdir, "--cores", "2", configs=configs)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Nothing to be done" in snakemake(workdir, "-n", configs=configs).output


def test_report_is_built(demo_run):
    workdir, configs = demo_run
    result = snakemake(workdir, "--report", str(workdir / "report.html"), configs=configs)
    assert result.returncode == 0, result.stderr[-3000:]
    html = (workdir / "report.html").read_text(errors="ignore")
    assert "summary.tsv" in html and "confusion.png" in html


def test_paper_config_plans_every_stage_for_five_folds_with_gpus(tmp_path):
    result = snakemake(tmp_path, "-n", configs=("config.yaml",))
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.output)
    assert counts == {
        "build_manifest": 1,
        "make_folds": 1,
        "train_mtl": 5,
        "extract_features": 5,
        "fit_kmeans": 15,
        "train_stage1": 5,
        "train_stage2": 10,
        "evaluate_fold": 10,
        "summarize_experiment": 2,
        "plot_experiment": 2,
        "compare_experiments": 1,
        "all": 1,
    }
    blocks = re.split(r"\n(?=(?:local)?rule \w+:)", result.output)
    gpu_rules = {"train_mtl", "extract_features", "fit_kmeans", "train_stage1", "train_stage2", "evaluate_fold"}
    for block in blocks:
        match = re.match(r"(?:local)?rule (\w+):", block.strip())
        if match and match[1] in gpu_rules:
            assert re.search(r"resources:.*\bgpu=1\b", block), block


def test_bad_config_stops_with_one_sentence_naming_the_key(tmp_path):
    (tmp_path / "bad.yaml").write_text("kmeans: {max_iterations: 5}\n")
    result = snakemake(tmp_path, "-n", configs=("config.yaml", str(tmp_path / "bad.yaml")))
    assert result.returncode != 0
    assert "unknown key 'max_iterations' under 'kmeans'" in result.output


def test_missing_corpus_fails_clearly_and_leaves_no_manifest(tmp_path):
    (tmp_path / "my.yaml").write_text(f"corpus: {{root: {tmp_path / 'IEMOCAP_full_release'}}}\n")
    result = snakemake(
        tmp_path, "--cores", "1", "results/manifest.tsv", configs=("config.yaml", str(tmp_path / "my.yaml"))
    )
    assert result.returncode != 0
    log = (tmp_path / "results" / "logs" / "build_manifest.log").read_text()
    assert f"corpus root '{tmp_path / 'IEMOCAP_full_release'}' does not exist" in log
    assert not (tmp_path / "results" / "manifest.tsv").exists()


def test_real_tree_builds_manifest_and_folds_with_the_documented_command(tmp_path):
    from conftest import balanced_sessions, write_tree

    root = write_tree(tmp_path / "IEMOCAP_full_release", balanced_sessions(per_class=1), seconds=0.5)
    (tmp_path / "my.yaml").write_text(f"corpus: {{root: {root}}}\n")
    result = snakemake(
        tmp_path,
        "--cores",
        "1",
        "results/manifest.tsv",
        "results/folds.tsv",
        configs=("config.yaml", str(tmp_path / "my.yaml")),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(pd.read_csv(tmp_path / "results" / "manifest.tsv", sep="\t")) == 40
    assert "differs from the full IEMOCAP release" in (tmp_path / "results" / "logs" / "build_manifest.log").read_text()


def test_workflow_lints_clean(tmp_path):
    result = snakemake(tmp_path, "--lint", configs=("demo.yaml",))
    assert "Lints for" not in result.output, result.output[-3000:]
