"""The workflow on a real single-node SLURM cluster through snakemake-executor-plugin-slurm.

The cluster (tests/slurm/cluster.sh) is installed with apt and started by this test; it needs root.
"""

from __future__ import annotations

import os
import re
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
GPU_RULES = ("train_stage", "extract_features", "fit_kmeans", "evaluate_fold")


def long_stage2(epochs: int) -> str:
    """A finetune experiment whose stage 2 trains long enough to be interrupted (its own recipe per epoch count)."""
    return f"experiments: {{finetune: {{stage2: {{init: pretrained, train: {{epochs: {epochs}}}}}}}}}\n"


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


HANG_GUARD_S = 3600  # many times a run's time on a loaded 2-core machine: only a hang reaches it


def snakemake(
    workdir: Path,
    env: dict,
    *args: str,
    slurm: bool,
    extra_config: str | None = None,
    timeout=HANG_GUARD_S,
    background=False,
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
    if result.returncode in (124, 137):
        pytest.fail(f"snakemake ran past the hang guard of {timeout} s (not a speed goal): {result.output[-2000:]}")
    return result


def slurm_jobs(env: dict) -> pd.DataFrame:
    """Every job the cluster still knows (MinJobAge keeps finished ones): id, rule (comment), state, partition."""
    out = subprocess.run(
        ["squeue", "-t", "all", "-h", "-o", "%i|%k|%T|%P"], env=env, capture_output=True, text=True, check=True
    ).stdout
    rows = [line.split("|") for line in out.splitlines() if line.strip()]
    return pd.DataFrame(rows, columns=["id", "comment", "state", "partition"])


def rule_jobs(env: dict, rule: str, *wildcards: str) -> pd.DataFrame:
    """The cluster's jobs of one rule whose comment (rule_<name>_wildcards_<values>) holds all `wildcards`."""
    jobs = slurm_jobs(env)
    mask = jobs["comment"].str.startswith(f"rule_{rule}")
    for value in wildcards:
        mask &= jobs["comment"].str.contains(value, regex=False)
    return jobs[mask]


def job_field(env: dict, job_id: str, field: str) -> str:
    """One field of `scontrol show job` (e.g. Restarts, JobState)."""
    out = subprocess.run(["scontrol", "-o", "show", "job", job_id], env=env, capture_output=True, text=True).stdout
    return next((item.split("=", 1)[1] for item in out.split() if item.startswith(f"{field}=")), "")


def stage_of(workdir: Path, experiment: str, kind: str, *extra_configs: str):
    """The cached stage `kind` of an experiment under the test's configs (as the workflow computes it)."""
    from gmptl.cache import load_config
    from gmptl.config import experiment_settings
    from gmptl.recipes import experiment_stages

    config = load_config([ROOT / "demo.yaml", workdir / "small.yaml", *extra_configs])
    return experiment_stages(config, experiment_settings(config, experiment))[kind]


def wait_for(condition, seconds: float, poll: float = 0.2) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(poll)
    return condition()


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
    for rule in (*GPU_RULES, "build_manifest"):
        assert ours["comment"].str.startswith(f"rule_{rule}").any(), f"{rule} did not run on the cluster"
    for stage in ("mtl", "stage1", "stage2"):
        assert not rule_jobs(cluster, "train_stage", stage).empty, f"no {stage} training job"


def test_gpu_rules_go_to_the_gpu_partition_and_others_to_the_default(runs, cluster):
    jobs = slurm_jobs(cluster)
    ours = jobs[jobs["comment"].str.contains("rule_")]
    gpu = ours["comment"].str.match(rf"rule_({'|'.join(GPU_RULES)})")
    assert set(ours[gpu]["partition"]) == {"gpu"}, ours
    assert set(ours[~gpu]["partition"]) == {"debug"}, ours


def test_cheap_rules_run_locally_not_as_cluster_jobs(runs, cluster):
    _, remote = runs
    result = snakemake(remote, cluster, "results/gmp_tl/stages.tsv", slurm=True)
    assert result.returncode == 0, result.output[-3000:]
    assert "localrule record_stages:" in result.output
    comments = slurm_jobs(cluster)["comment"]
    for rule in ("make_folds", "record_stages"):
        assert not comments.str.startswith(f"rule_{rule}").any(), f"{rule} was submitted to SLURM"
    assert (remote / "results/folds.tsv").is_file() and (remote / "results/gmp_tl/stages.tsv").is_file()


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


def interrupt_running_training(remote: Path, cluster: dict, epochs: int, interrupt) -> tuple[str, str, object]:
    """Run finetune with a long stage 2, call `interrupt(job_id)` once it saved a state; (job id, output, stage)."""
    (remote / "long.yaml").write_text(long_stage2(epochs))
    stage = stage_of(remote, "finetune", "stage2", remote / "long.yaml")
    state = remote / f"results/cache/stage2/{stage.id}/fold1.resume/state.pt"
    job = snakemake(remote, cluster, SLICE[1], slurm=True, extra_config=str(remote / "long.yaml"), background=True)
    assert wait_for(lambda: state.exists() or job.poll() is not None, 240), "stage 2 never saved a state"
    assert state.exists(), job.communicate()[0][-4000:]
    running = rule_jobs(cluster, "train_stage", stage.id)
    running = running[running["state"] == "RUNNING"]
    assert len(running) == 1, slurm_jobs(cluster)
    job_id = running["id"].iloc[0]
    interrupt(job_id)
    output, _ = job.communicate(timeout=HANG_GUARD_S)  # a hang guard, not a speed goal
    assert job.returncode == 0, output[-4000:]
    return job_id, output, stage


def assert_resumed_and_complete(remote: Path, stage, epochs: int) -> None:
    log = (remote / f"results/logs/cache/stage2/{stage.id}/fold1.log").read_text()
    resumed = rf"resuming stage2 from results/cache/stage2/{stage.id}/fold1\.resume at step [1-9]\d*/\d+ \(after round"
    assert re.search(resumed, log), log[:3000]
    history = pd.read_csv(remote / f"results/cache/stage2/{stage.id}/fold1/history.tsv", sep="\t")
    assert list(history["round"]) == list(range(1, epochs + 1))


def test_requeued_training_job_comes_back_and_resumes_from_its_saved_state(runs, cluster):
    """Preemption with requeue, as `scontrol requeue` does it: the same SLURM job runs again and resumes."""
    _, remote = runs

    def requeue(job_id: str) -> None:
        subprocess.run(["scontrol", "requeue", job_id], env=cluster, check=True, capture_output=True)

    job_id, output, stage = interrupt_running_training(remote, cluster, 40, requeue)
    assert job_field(cluster, job_id, "Restarts") == "1"
    assert job_field(cluster, job_id, "Requeue") == "1"  # submitted with --requeue (the cluster's default is 0)
    jobs = rule_jobs(cluster, "train_stage", stage.id)
    assert list(jobs["id"]) == [job_id] and list(jobs["state"]) == ["COMPLETED"], jobs  # no second submission
    assert "Trying to restart" not in output
    assert_resumed_and_complete(remote, stage, 40)


def test_cancelled_training_job_is_resubmitted_and_resumes_from_its_saved_state(runs, cluster):
    """scancel (or a time limit): the job fails; the rule's `retries` resubmit it, and training resumes."""
    _, remote = runs

    def cancel(job_id: str) -> None:
        subprocess.run(["scancel", job_id], env=cluster, check=True)

    job_id, output, stage = interrupt_running_training(remote, cluster, 41, cancel)
    jobs = rule_jobs(cluster, "train_stage", stage.id)
    assert "CANCELLED" in set(jobs[jobs["id"] == job_id]["state"])
    assert len(jobs) == 2 and "COMPLETED" in set(jobs["state"]), jobs
    assert_resumed_and_complete(remote, stage, 41)


def test_a_config_error_fails_once_and_is_not_retried(runs, cluster):
    """fit_kmeans has no `retries`: asking for more clusters than frames fails one SLURM job, not three."""
    _, remote = runs
    (remote / "bad_k.yaml").write_text("gmp: {k: [4, 100000]}\n")
    gmp = stage_of(remote, "gmp_tl", "gmp", remote / "bad_k.yaml")
    target = f"results/cache/gmp/{gmp.id}/fold1/layer1_k100000.h5"
    result = snakemake(remote, cluster, target, slurm=True, extra_config=str(remote / "bad_k.yaml"))
    assert result.returncode != 0, result.output[-3000:]
    jobs = rule_jobs(cluster, "fit_kmeans", gmp.id, "100000")
    assert len(jobs) == 1, jobs
    assert "Trying to restart" not in result.output
    log = (remote / f"results/logs/cache/gmp/{gmp.id}/fold1/layer1_k100000.log").read_text()
    assert "k = 100000 is larger than the" in log, log[-2000:]
