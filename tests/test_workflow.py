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
from conftest import ROOT, job_counts, snakemake

pytestmark = pytest.mark.slow


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
        "samples",  # beside the contract columns: the length at corpus.sample_rate
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
    stages = pd.read_csv(results / "gmp_tl" / "stages.tsv", sep="\t", keep_default_na=False)
    assert list(stages.columns[:3]) == ["stage", "fold", "path"]
    assert set(stages["stage"]) == {"mtl", "features", "gmp", "stage1", "stage2"}
    assert len(stages[(stages["stage"] == "gmp") & (stages["fold"] == 1)]) == 4  # 2 layers × 2 k
    for path in stages["path"]:
        assert (workdir / path).exists(), path
        assert path.startswith("results/cache/")
    for recipe in {str(Path(p).parent / "recipe.json") for p in stages["path"] if "/gmp/" not in p}:
        assert (workdir / recipe).is_file(), recipe
    baseline = pd.read_csv(results / "finetune" / "stages.tsv", sep="\t")
    assert set(baseline["stage"]) == {"stage2"}  # the baseline uses no multi-task model, features or GMPs
    comparison = pd.read_csv(results / "comparison.tsv", sep="\t")
    assert list(comparison["experiment"]) == ["finetune", "gmp_tl"]  # the configured order, reference first
    assert not list(results.rglob("*.resume"))  # resume folders are removed once a model is written


def test_second_run_has_nothing_to_do(demo_run):
    workdir, configs = demo_run
    result = snakemake(workdir, "-n", configs=configs)
    assert "Nothing to be done" in result.output


def stage_path(workdir: Path, exp: str, stage: str, fold: int) -> str:
    stages = pd.read_csv(workdir / "results" / exp / "stages.tsv", sep="\t")
    return stages[(stages["stage"] == stage) & (stages["fold"] == fold)]["path"].iloc[0]


def test_deleting_one_stage2_model_reruns_only_what_depends_on_it(demo_run):
    workdir, configs = demo_run
    model = stage_path(workdir, "gmp_tl", "stage2", 2)
    shutil.rmtree(workdir / model)
    plan = snakemake(workdir, "-n", configs=configs)
    assert job_counts(plan.output) == {
        "train_stage": 1,
        "evaluate_fold": 1,
        "summarize_experiment": 1,
        "plot_experiment": 1,
        "compare_experiments": 1,
        "deploy_model": 1,  # the deploy model's card reports the comparison, which changes
        "all": 1,
    }
    assert model in plan.output
    rerun = snakemake(workdir, "--cores", "2", configs=configs)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Nothing to be done" in snakemake(workdir, "-n", configs=configs).output


def test_report_is_built(demo_run):
    workdir, configs = demo_run
    result = snakemake(workdir, "--report", str(workdir / "report.html"), configs=configs)
    assert result.returncode == 0, result.stderr[-3000:]
    html = (workdir / "report.html").read_text(errors="ignore")
    assert "summary.tsv" in html and "confusion.png" in html
    from browser import report_items

    items = report_items(workdir / "report.html")
    assert {"results/comparison.html", "results/gmp_tl/metrics/summary.html", "results/gmp_tl/settings.html"} <= set(
        items
    )
    comparison = pd.read_csv(workdir / "results" / "comparison.tsv", sep="\t").set_index("experiment")
    ci = comparison.loc["gmp_tl", ["uar_diff_ci_low", "uar_diff_ci_high"]] * 100
    page = items["results/comparison.html"]["content"].decode()
    assert f"[{ci.iloc[0]:+.2f}, {ci.iloc[1]:+.2f}]" in page  # the CI, in the page the report shows


def test_report_shows_the_comparison_with_its_intervals_on_screen(demo_run):
    from browser import CHROMIUM, dump_dom, rendered

    if CHROMIUM is None:
        pytest.skip("chromium is not on PATH (Debian: apt-get install chromium)")
    workdir, configs = demo_run
    report = workdir / "report_screen.html"
    assert snakemake(workdir, "--report", str(report), configs=configs).returncode == 0
    comparison = pd.read_csv(workdir / "results" / "comparison.tsv", sep="\t").set_index("experiment")
    low, high = comparison.loc["gmp_tl", ["uar_diff_ci_low", "uar_diff_ci_high"]] * 100
    screen = rendered(dump_dom(report))  # the report's first page, as a browser renders it
    assert f"[{low:+.2f}, {high:+.2f}]" in screen


def test_paper_config_plans_every_stage_for_five_folds_with_gpus(tmp_path):
    result = snakemake(tmp_path, "-n", configs=("config.yaml",))
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.output)
    assert counts == {
        "build_manifest": 1,
        "make_folds": 1,
        "train_stage": 20,  # 5 folds × (mtl, stage1, stage2 of gmp_tl; stage2 of finetune)
        "extract_features": 5,
        "fit_kmeans": 15,
        "evaluate_fold": 10,
        "record_stages": 2,
        "summarize_experiment": 2,
        "plot_experiment": 2,
        "compare_experiments": 1,
        "all": 1,
    }
    blocks = re.split(r"\n(?=(?:local)?rule \w+:)", result.output)
    gpu_rules = {"train_stage", "extract_features", "fit_kmeans", "evaluate_fold"}
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
    assert result.returncode == 0, result.output[-3000:]  # a Snakefile that does not load exits non-zero
    assert "Lints for" not in result.output, result.output[-3000:]
    assert "Congratulations, your workflow is in a good condition!" in result.output, result.output[-3000:]


def test_snakefiles_are_snakefmt_formatted():
    files = [ROOT / "Snakefile", ROOT / "workflow/Snakefile", *sorted((ROOT / "workflow/rules").glob("*.smk"))]
    snakefmt = Path(sys.executable).with_name("snakefmt")
    result = subprocess.run([str(snakefmt), "--check", *map(str, files)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


ABLATIONS = """
experiments:
  gmp_tl: {}
  finetune: {stage2: {init: pretrained}}
  no_gender: {mtl: {gender_weight: 0.0}}
  single_k: {gmp: {k: [8]}}
  margin: {stage2: {margin: 0.3}}
"""


def planned_outputs(output: str, kind: str) -> set[str]:
    return set(re.findall(rf"output: (results/cache/{kind}/[0-9a-f]+/fold\d+[^,\s]*)", output))


def test_ablations_share_every_common_stage(tmp_path):
    (tmp_path / "ablations.yaml").write_text(ABLATIONS)
    plan = snakemake(tmp_path, "-n", configs=("demo.yaml", str(tmp_path / "ablations.yaml")))
    assert plan.returncode == 0, plan.output[-3000:]
    folds = 5
    per_fold = {"mtl": 2, "features": 2, "gmp": 8, "stage1": 3, "stage2": 5}  # 8 k-means = 2 λ × 2 layers × 2 k
    for kind, count in per_fold.items():
        assert len(planned_outputs(plan.output, kind)) == count * folds, kind
    counts = job_counts(plan.output)
    assert counts["train_stage"] == (2 + 3 + 5) * folds
    assert counts["extract_features"] == 2 * folds and counts["fit_kmeans"] == 8 * folds
    assert counts["evaluate_fold"] == 5 * folds


GRID = """
grid:
  base: gmp_tl
  vary:
    gmp.k: [[8], [8, 32]]
    mtl.gender_weight: [0.0, 1.0]
"""
GRID_POINTS = (
    "gmp_tl__k-8__gender_weight-0",
    "gmp_tl__k-8__gender_weight-1",
    "gmp_tl__k-8-32__gender_weight-0",
    "gmp_tl__k-8-32__gender_weight-1",  # gmp_tl's own settings: it shares all of gmp_tl's stages
)


def test_a_2x2_grid_plans_four_experiments_sharing_every_common_stage(tmp_path):
    plan = snakemake(tmp_path, "-n", configs=("demo.yaml", write_override(tmp_path, "grid", GRID)))
    assert plan.returncode == 0, plan.output[-3000:]
    for name in GRID_POINTS:
        assert f"results/{name}/fold5/predictions.tsv" in plan.output
    assert len(set(re.findall(r"results/(gmp_tl__[\w-]+)/fold\d/predictions\.tsv", plan.output))) == 4
    folds = 5
    # mtl and features: gender weight 1 (gmp_tl's) and 0; k-means: 2 mtl × 2 layers × k 8, 32 (k 8 alone shares
    # them); stage 1: the 4 points (one is gmp_tl's); stage 2: finetune and the 4 points
    per_fold = {"mtl": 2, "features": 2, "gmp": 8, "stage1": 4, "stage2": 5}
    for kind, count in per_fold.items():
        assert len(planned_outputs(plan.output, kind)) == count * folds, kind
    counts = job_counts(plan.output)
    assert counts["train_stage"] == (2 + 4 + 5) * folds and counts["fit_kmeans"] == 8 * folds
    assert counts["evaluate_fold"] == 6 * folds and counts["ablation"] == 1
    assert "results/ablation.tsv" in plan.output and "results/ablation.png" in plan.output


def test_a_grid_run_writes_the_ablation_table_plot_and_report_page(demo_run, tmp_path):
    """A 2 × 2 grid of stage-2 settings over a copy of the finished small demo: only stage 2 and what follows
    run; results/ablation.tsv has one row per point with the differences to the base, tested."""
    workdir, configs = demo_run
    copy = tmp_path / "grid"
    shutil.copytree(workdir, copy, symlinks=True)
    grid = "grid:\n  base: gmp_tl\n  vary:\n    stage2.margin: [0.2, 0.3]\n    stage2.scale: [30.0, 20.0]\n"
    configs = (*configs, write_override(copy, "grid", grid))
    run = snakemake(copy, "--cores", "2", configs=configs)
    assert run.returncode == 0, run.output[-4000:]
    table = pd.read_csv(copy / "results" / "ablation.tsv", sep="\t")
    assert table["experiment"].tolist() == [
        "gmp_tl__margin-0p2__scale-30",
        "gmp_tl__margin-0p2__scale-20",
        "gmp_tl__margin-0p3__scale-30",
        "gmp_tl__margin-0p3__scale-20",
    ]
    assert table["stage2.margin"].tolist() == [0.2, 0.2, 0.3, 0.3] and table["stage2.scale"].tolist()[:2] == [30, 20]
    same = table.iloc[0]  # gmp_tl's own settings: the same models, so no difference and p = 1
    assert same["uar_diff"] == 0 and same["uar_p"] == 1 and same["uar_diff_ci_low"] == same["uar_diff_ci_high"] == 0
    comparison = pd.read_csv(copy / "results" / "comparison.tsv", sep="\t").set_index("experiment")
    for _, row in table.iterrows():
        assert row["uar_p_holm"] >= row["uar_p"] and row["war_p_holm"] >= row["war_p"]
        assert row["uar_mean"] == pytest.approx(comparison.loc[row["experiment"], "uar_mean"], abs=1e-6)
    assert set(table["base"]) == {"gmp_tl"} and set(table["unit"]) == {"dialog"}
    assert set(table["n_clusters"]) == {12}  # 4 dialogues in each of the 3 test sessions
    assert (copy / "results" / "ablation.png").stat().st_size > 10_000
    page = (copy / "results" / "ablation.html").read_text()
    assert page.count("<tr") == 5 and "p Holm (UAR)" in page and "resampling whole dialogues" in page
    report = snakemake(copy, "--report", str(copy / "report.html"), configs=configs)
    assert report.returncode == 0, report.output[-3000:]
    from browser import report_items

    items = report_items(copy / "report.html")
    assert {"results/ablation.html", "results/ablation.png", "results/ablation.tsv"} <= set(items)


def write_override(workdir: Path, name: str, text: str) -> str:
    path = workdir / f"{name}.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "name, override",
    [
        ("device", "runtime: {device: auto}\n"),
        ("threads", "runtime: {threads: 2}\n"),
        ("batch_seconds", "runtime: {extract_batch_seconds: 7.5, eval_batch_seconds: 9.0}\n"),
        ("check_full_release", "runtime: {check_full_release: true}\n"),
        ("keep_features", "runtime: {keep_features: false}\n"),
        ("precision", "runtime: {precision: fp32}\n"),
        ("checkpoint_minutes", "runtime: {checkpoint_minutes: 1, loader_workers: 0, log_every_s: 5}\n"),
        ("gpus", "runtime: {gpus: [0, 1], jobs_per_gpu: 2, kmeans_chunk_frames: 1024}\n"),
    ],
)
def test_runtime_settings_plan_nothing(demo_run, name, override):
    workdir, configs = demo_run
    plan = snakemake(workdir, "-n", configs=(*configs, write_override(workdir, name, override)))
    assert plan.returncode == 0, plan.output[-3000:]
    assert "Nothing to be done" in plan.output, plan.output[-3000:]


def test_changing_the_margin_replans_only_stage2_and_what_follows(demo_run):
    workdir, configs = demo_run
    plan = snakemake(workdir, "-n", configs=(*configs, write_override(workdir, "margin", "stage2: {margin: 0.35}\n")))
    counts = job_counts(plan.output)
    assert counts.pop("train_stage") == 7  # stage 2 of 2 experiments × 3 folds, and finetune's deploy model
    assert not planned_outputs(plan.output, "(?:mtl|stage1)")
    followers = {"evaluate_fold", "record_stages", "summarize_experiment", "plot_experiment", "compare_experiments"}
    assert set(counts) <= followers | {"deploy_model", "all"}
    assert len(planned_outputs(plan.output, "stage2")) == 7


def test_adding_a_k_plans_no_feature_or_multitask_job(demo_run):
    workdir, configs = demo_run
    plan = snakemake(workdir, "-n", configs=(*configs, write_override(workdir, "k16", "gmp: {k: [4, 8, 16]}\n")))
    counts = job_counts(plan.output)
    assert counts["fit_kmeans"] == 2 * 3  # (L1, L2) × k16 × 3 folds: the new k only
    assert "extract_features" not in counts and not planned_outputs(plan.output, "mtl")
    assert all(re.search(r"_k16\.h5$", path) for path in planned_outputs(plan.output, "gmp"))


def gmptl_cli(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "workflow" / "scripts")}
    command = [sys.executable, "-m", "gmptl.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=workdir)


def test_cache_lists_and_prunes_only_unused_stage_outputs(demo_run):
    workdir, configs = demo_run
    files = [str(ROOT / c) if not Path(c).is_absolute() else c for c in configs]
    unused = workdir / "results" / "cache" / "stage2" / "0123456789ab"
    (unused / "fold1").mkdir(parents=True)
    (unused / "fold1" / "weights.bin").write_bytes(b"x" * 5000)
    listing = gmptl_cli(workdir, "cache", "list", "--configfile", *files)
    assert listing.returncode == 0, listing.stderr
    assert re.search(r"stage2\s+0123456789ab\s+4\.9 KiB\s+-  \(unused\)", listing.stdout), listing.stdout
    assert re.search(r"mtl\s+[0-9a-f]{12}\s+.*gmp_tl", listing.stdout)
    dry = gmptl_cli(workdir, "cache", "prune", "--configfile", *files)
    assert dry.returncode == 0 and "would delete" in dry.stdout and unused.exists()
    assert dry.stdout.count("would delete") == 1  # only the unused folder
    pruned = gmptl_cli(workdir, "cache", "prune", "--yes", "--configfile", *files)
    assert pruned.returncode == 0 and not unused.exists()
    assert "Nothing to be done" in snakemake(workdir, "-n", configs=configs).output  # everything used is kept


def test_several_seeds_plan_every_experiment_per_seed(tmp_path):
    (tmp_path / "seeds.yaml").write_text("seeds: [1, 2]\n")
    plan = snakemake(tmp_path, "-n", configs=("demo.yaml", str(tmp_path / "seeds.yaml")))
    assert plan.returncode == 0, plan.output[-3000:]
    counts = job_counts(plan.output)
    assert counts["train_stage"] == 2 * 5 * 4 and counts["evaluate_fold"] == 2 * 5 * 2  # seeds × folds × …
    for seed in (1, 2):
        assert f"results/gmp_tl/seed{seed}/fold3/predictions.tsv" in plan.output
    assert "results/gmp_tl/fold3/predictions.tsv" not in plan.output


ABLATION_NAMES = ("finetune", "gmp_tl", "no_gender", "single_scale", "layer1")


@pytest.mark.parametrize(
    "name, override",
    [
        ("deploy", "deploy: true\n"),
        ("seeds", "seeds: [1, 2]\ndeploy: [gmp_tl]\n"),
        ("ablations", None),
        ("grid", GRID),
    ],
)
def test_plan_counts_the_jobs_the_workflow_plans(tmp_path, name, override):
    """`gmptl plan` and `snakemake -n` come from one enumeration of jobs (gmptl.workplan): they agree per rule."""
    text = ABLATIONS if override is None else override
    extra = write_override(tmp_path, name, text)
    dry = snakemake(tmp_path, "-n", configs=("demo.yaml", extra))
    assert dry.returncode == 0, dry.output[-3000:]
    expected = {rule: n for rule, n in job_counts(dry.output).items() if rule != "all"}
    from gmptl.cache import load_config
    from gmptl.plan import count_jobs, experiment_plans
    from gmptl.protocols import expected_fold_ids

    config = load_config([ROOT / "demo.yaml", extra], base=ROOT / "config.yaml")
    folds = expected_fold_ids(config["corpus"], config["folds"])
    planned: dict[str, int] = {}
    for job in count_jobs(config, experiment_plans(config), folds):
        planned[job.rule] = planned.get(job.rule, 0) + job.jobs
    assert planned == expected
    if name == "deploy":
        assert planned["train_stage"] == 6 * 4 and planned["deploy_model"] == 2 and planned["make_deploy_split"] == 1
