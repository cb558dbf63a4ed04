"""Several GPUs on one box, rehearsed on the CPU: a demo run whose GPU jobs take slots from `runtime.gpus`."""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import pandas as pd
import pytest
from conftest import SMALL, snakemake

TAKEN = re.compile(r"^(\S+ \S+) INFO \S+: gpu slot (\d+) \(slot (\d+) of \d+ per device", re.M)
RELEASED = re.compile(r"^(\S+ \S+) INFO \S+: gpu slot (\d+) \(slot (\d+)\) released", re.M)


def stamp(text: str) -> datetime.datetime:
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f")


def slot_intervals(results: Path) -> list[tuple[str, tuple[str, str], datetime.datetime, datetime.datetime]]:
    """(log, (device, slot), taken, released) of every job log that took a GPU slot."""
    rows = []
    for log in sorted(results.glob("logs/**/*.log")):
        text = log.read_text()
        taken, released = TAKEN.search(text), RELEASED.search(text)
        if taken:
            assert released and released.groups()[1:] == taken.groups()[1:], f"{log}: slot taken, never released"
            rows.append((str(log), (taken[2], taken[3]), stamp(taken[1]), stamp(released[1])))
    return rows


@pytest.mark.slow
def test_fake_gpus_give_each_concurrent_job_its_own_slot_and_the_same_metrics(demo_run, tmp_path, monkeypatch):
    reference_dir, configs = demo_run
    workdir = tmp_path / "gpus"
    workdir.mkdir()
    (workdir / "small.yaml").write_text(SMALL)
    (workdir / "gpus.yaml").write_text(f"runtime: {{gpus: [0, 1], gpu_lock_dir: {tmp_path / 'locks'}}}\n")
    monkeypatch.setenv("GMPTL_FAKE_GPUS", "1")
    files = (configs[0], str(workdir / "small.yaml"), str(workdir / "gpus.yaml"))
    result = snakemake(workdir, "--cores", "2", "--resources", "gpu=2", configs=files)
    assert result.returncode == 0, result.output[-4000:]

    for name in ("gmp_tl", "finetune"):
        ours = pd.read_csv(workdir / f"results/{name}/metrics/folds.tsv", sep="\t")
        reference = pd.read_csv(reference_dir / f"results/{name}/metrics/folds.tsv", sep="\t")
        pd.testing.assert_frame_equal(ours, reference)

    jobs = slot_intervals(workdir / "results")
    gpu_logs = [p for p in (workdir / "results/logs").glob("**/*.log") if "cache" in str(p) or "evaluate" in p.name]
    assert len(jobs) == len(gpu_logs) > 10  # every GPU job (training, extraction, k-means, evaluation) took a slot
    assert {device for _, (device, _), _, _ in jobs} == {"0", "1"}
    overlapping = [
        (a[0], b[0]) for i, a in enumerate(jobs) for b in jobs[i + 1 :] if a[1] == b[1] and a[2] < b[3] and b[2] < a[3]
    ]
    assert not overlapping, overlapping  # no two jobs that ran at the same time held the same slot
    concurrent = [(a, b) for i, a in enumerate(jobs) for b in jobs[i + 1 :] if a[2] < b[3] and b[2] < a[3]]
    assert concurrent, "no two GPU jobs ran at the same time: the test proves nothing about slots"
