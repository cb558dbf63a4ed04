"""The workflow on a real single-node SLURM cluster through snakemake-executor-plugin-slurm.

The cluster (tests/slurm/cluster.sh) is installed with apt and started by this test; it needs root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT

pytestmark = pytest.mark.slurm

SLICE = ["results/gmp_tl/fold1/metrics.tsv", "results/finetune/fold1/metrics.tsv"]
SMALL = """
demo: {utterances_per_speaker: 6, min_duration_s: 0.8, max_duration_s: 1.2}
corpus: {sessions: [1, 2, 3]}
gmp: {layers: [1, 2], k: [4]}
kmeans: {n_init: 1}
train: {epochs: 2, batch_size: 4}
stage1: {train: {epochs: 1}}
"""
LONG_STAGE2 = "experiments: {finetune: {stage2: {init: pretrained, train: {epochs: 40}}}}\n"


def why_not() -> str | None:
    if os.name != "posix" or os.geteuid() != 0:
        return "the SLURM test cluster needs root (it installs and starts slurmctld, slurmd and munged)"
    if not shutil.which("sbatch") and not shutil.which("apt-get"):
        return "neither SLURM nor apt-get is available to install it"
    return None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = why_not()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("slurm")
    script = ROOT / "tests" / "slurm" / "cluster.sh"
    started = subprocess.run(["bash", str(script), "start", str(folder)], capture_output=True, text=True, timeout=600)
    if started.returncode != 0:
        pytest.fail(f"the test cluster did not start: {started.stderr[-2000:]}")
    env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf"), "HF_HUB_OFFLINE": "1"}
    yield env
    subprocess.run(["bash", str(script), "stop", str(folder)], timeout=120)


def snakemake(
    workdir: Path, env: dict, *args: str, slurm: bool, extra_config: str | None = None, timeout=400, background=False
):
    configs = [str(ROOT / "demo.yaml"), str(workdir / "small.yaml")] + ([extra_config] if extra_config else [])
    command = [
        "timeout",
        "-k",
        "10",
        str(timeout),
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(ROOT / "Snakefile"),
        "-d",
        str(workdir),
        *args,
        "--configfile",
        *configs,
    ]
    if slurm:
        command[7:7] = [
            "--profile",
            str(ROOT / "workflow/profiles/slurm"),
            "--workflow-profile",
            str(ROOT / "tests/slurm/profile"),
        ]
    else:
        command[7:7] = ["--cores", "2"]
    if background:
        return subprocess.Popen(
            command, env=env, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    result = subprocess.run(command, env=env, cwd=workdir, capture_output=True, text=True)
    result.output = result.stdout + result.stderr
    return result


def slurm_jobs(env: dict) -> pd.DataFrame:
    """Every job the cluster still knows (MinJobAge keeps finished ones): id, rule (comment), state."""
    out = subprocess.run(
        ["squeue", "-t", "all", "-h", "-o", "%i|%k|%T"], env=env, capture_output=True, text=True, check=True
    ).stdout
    rows = [line.split("|") for line in out.splitlines() if line.strip()]
    return pd.DataFrame(rows, columns=["id", "comment", "state"])


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    local, remote = tmp_path_factory.mktemp("local"), tmp_path_factory.mktemp("remote")
    for workdir in (local, remote):
        (workdir / "small.yaml").write_text(SMALL)
    result = snakemake(local, cluster, *SLICE, slurm=False)
    assert result.returncode == 0, result.output[-3000:]
    result = snakemake(remote, cluster, *SLICE, slurm=True)
    assert result.returncode == 0, result.output[-5000:]
    return local, remote


def test_jobs_ran_as_completed_slurm_jobs_including_gpu_training(runs, cluster):
    jobs = slurm_jobs(cluster)
    ours = jobs[jobs["comment"].str.contains("rule_")]
    assert len(ours) >= 10, jobs
    assert set(ours["state"]) == {"COMPLETED"}, ours
    for rule in ("train_mtl", "train_stage1", "train_stage2", "extract_features", "fit_kmeans", "evaluate_fold"):
        assert ours["comment"].str.contains(f"rule_{rule}").any(), f"{rule} did not run on the cluster"


def test_outputs_match_a_local_run(runs):
    local, remote = runs
    for path in SLICE + [p.replace("metrics.tsv", "predictions.tsv") for p in SLICE]:
        pd.testing.assert_frame_equal(
            pd.read_csv(remote / path, sep="\t"), pd.read_csv(local / path, sep="\t"), check_exact=False, atol=1e-6
        )


def test_second_run_has_nothing_to_do(runs, cluster):
    _, remote = runs
    result = snakemake(remote, cluster, *SLICE, "-n", slurm=True)
    assert "Nothing to be done" in result.output


def test_training_cancelled_with_scancel_resumes_from_its_saved_state(runs, cluster):
    _, remote = runs
    (remote / "long.yaml").write_text(LONG_STAGE2)
    state = remote / "results/finetune/fold1/stage2.resume/state.pt"
    job = snakemake(remote, cluster, SLICE[1], slurm=True, extra_config=str(remote / "long.yaml"), background=True)
    deadline = time.time() + 240
    while not state.exists() and time.time() < deadline and job.poll() is None:
        time.sleep(0.2)
    assert state.exists(), "stage 2 never saved a state"
    running = slurm_jobs(cluster)
    target = running[running["comment"].str.contains("rule_train_stage2") & (running["state"] == "RUNNING")]
    assert len(target) == 1, running
    subprocess.run(["scancel", target["id"].iloc[0]], env=cluster, check=True)
    output, _ = job.communicate(timeout=400)
    assert job.returncode == 0, output[-4000:]
    jobs = slurm_jobs(cluster)
    assert "CANCELLED" in set(jobs[jobs["id"] == target["id"].iloc[0]]["state"])
    log = (remote / "results/logs/finetune/fold1/stage2.log").read_text()
    assert "resuming stage2 from results/finetune/fold1/stage2.resume after epoch" in log
    history = pd.read_csv(remote / "results/finetune/fold1/stage2/history.tsv", sep="\t")
    assert list(history["epoch"]) == list(range(1, 41))
