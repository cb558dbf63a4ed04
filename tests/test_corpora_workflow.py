"""The whole workflow on other corpus formats: a RAVDESS-layout corpus and a table-format corpus."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import snakemake

pytestmark = pytest.mark.slow

TINY = """
gmp: {layers: [1], k: [4]}
kmeans: {n_init: 1}
train: {epochs: 1, batch_size: 4}
stage1: {train: {epochs: 1}}
"""
RAVDESS = """
demo: {enabled: true, format: ravdess, speakers: 6, utterances_per_speaker: 4, min_duration_s: 0.8, max_duration_s: 1.0}
corpus: {format: ravdess, root: results/demo/RAVDESS}
folds: {protocol: speaker}
experiments: {gmp_tl: {}}
"""
TABLE = """
demo: {enabled: true, format: table, speakers: 8, utterances_per_speaker: 5, min_duration_s: 0.8, max_duration_s: 1.0}
corpus: {format: table, root: results/demo/table_corpus, table: labels.tsv}
folds: {protocol: kfold, k: 2}
"""


def run(tmp_path, text: str):
    (tmp_path / "tiny.yaml").write_text(TINY + text)
    configs = ("demo.yaml", str(tmp_path / "tiny.yaml"))
    result = snakemake(tmp_path, "--cores", "2", configs=configs, timeout=1500)
    assert result.returncode == 0, result.output[-4000:]
    return configs


def test_ravdess_layout_runs_leave_one_speaker_out_end_to_end(tmp_path):
    configs = run(tmp_path, RAVDESS)
    manifest = pd.read_csv(tmp_path / "results" / "manifest.tsv", sep="\t", dtype={"speaker": str})
    folds = pd.read_csv(tmp_path / "results" / "folds.tsv", sep="\t")
    assert manifest["speaker"].nunique() == 6 and sorted(folds["fold"].unique()) == [1, 2, 3, 4, 5, 6]
    per_fold = pd.read_csv(tmp_path / "results" / "gmp_tl" / "metrics" / "folds.tsv", sep="\t")
    assert list(per_fold["fold"]) == [1, 2, 3, 4, 5, 6]  # the folds came from the data, through the checkpoint
    test = folds[folds["split"] == "test"].merge(manifest, on="utt_id")
    assert (test.groupby("fold")["speaker"].nunique() == 1).all() and test["utt_id"].is_unique
    assert "Nothing to be done" in snakemake(tmp_path, "-n", configs=configs).output


def test_table_format_runs_speaker_disjoint_kfold_end_to_end(tmp_path):
    run(tmp_path, TABLE)
    manifest = pd.read_csv(tmp_path / "results" / "manifest.tsv", sep="\t", dtype={"speaker": str})
    assert manifest["utt_id"].str.len().gt(0).all() and set(manifest["emotion"]) == {"neu", "hap", "ang", "sad"}
    comparison = pd.read_csv(tmp_path / "results" / "comparison.tsv", sep="\t")
    assert set(comparison["experiment"]) == {"gmp_tl", "finetune"}
    folds = pd.read_csv(tmp_path / "results" / "folds.tsv", sep="\t").merge(manifest, on="utt_id")
    for _, fold in folds.groupby("fold"):
        test_speakers = set(fold.loc[fold["split"] == "test", "speaker"])
        assert test_speakers and not test_speakers & set(fold.loc[fold["split"] != "test", "speaker"])
