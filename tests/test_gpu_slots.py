"""GPU slots: real processes take distinct slots, wait for a free one, and free it when killed.

Every handshake goes through files: a job writes `<name>.json` when it holds its slot and releases
it when `<name>.release` appears; a waiting job is seen by its log line. No test races a sleep.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import ROOT

from gmptl.gpu_slots import FAKE_GPUS, GpuSlotError, acquire_slot, parse_visible, slot_order

JOB = textwrap.dedent(
    """
    import json, logging, os, sys, time
    from pathlib import Path
    from gmptl.gpu_slots import acquire_slot

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    out, gpus, per_gpu, lock_dir = Path(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    with acquire_slot(gpus, per_gpu, lock_dir, os.environ) as slot:
        out.with_suffix(".tmp").write_text(json.dumps(
            {"device": slot.device, "index": slot.index, "mode": slot.mode,
             "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}))
        os.replace(out.with_suffix(".tmp"), out)
        while not out.with_suffix(".release").exists():
            time.sleep(0.01)
    """
)
TIMEOUT_S = 60


class Job:
    """One job process holding (or waiting for) a slot."""

    def __init__(self, tmp: Path, name: str, gpus, per_gpu: int = 1, env: dict | None = None):
        script = tmp / "job.py"
        if not script.exists():
            script.write_text(JOB)
        self.out, self.log = tmp / f"{name}.json", tmp / f"{name}.log"
        environ = {**os.environ, "PYTHONPATH": str(ROOT / "workflow" / "scripts"), FAKE_GPUS: "1", **(env or {})}
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(script), str(self.out), json.dumps(gpus), str(per_gpu), str(tmp / "locks")],
                env=environ,
                stderr=log,
            )

    def held(self) -> dict:
        """The slot, once the job holds it."""
        wait_until(lambda: self.out.exists() or self.process.poll() is not None, self.log)
        assert self.out.exists(), self.log.read_text()
        return json.loads(self.out.read_text())

    def release(self) -> None:
        self.out.with_suffix(".release").touch()
        assert self.process.wait(TIMEOUT_S) == 0, self.log.read_text()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(TIMEOUT_S)


def wait_until(condition, log: Path) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; log: {log.read_text()}")
        time.sleep(0.01)


def waiting(job: Job) -> bool:
    return "waiting for one to free" in job.log.read_text()


def test_two_jobs_on_two_gpus_take_distinct_devices(tmp_path):
    first, second = Job(tmp_path, "a", [0, 1]), Job(tmp_path, "b", [0, 1])
    slots = [first.held(), second.held()]
    assert sorted(s["device"] for s in slots) == ["0", "1"]
    assert all(s["index"] == 0 and s["mode"] == "fake" for s in slots)
    assert all(s["visible"] == "" for s in slots)  # fake: torch must see no CUDA device
    first.release(), second.release()


def test_a_third_job_waits_until_one_releases_and_takes_its_slot(tmp_path):
    first, second = Job(tmp_path, "a", [0, 1]), Job(tmp_path, "b", [0, 1])
    held = {first.held()["device"]: first, second.held()["device"]: second}
    third = Job(tmp_path, "c", [0, 1])
    wait_until(lambda: waiting(third), third.log)
    assert not third.out.exists()
    held["1"].release()
    assert third.held()["device"] == "1"
    assert third.log.read_text().count("waiting for one to free") == 1  # said once
    held["0"].release(), third.release()


def test_a_killed_holder_frees_its_slot_at_once(tmp_path):
    first = Job(tmp_path, "a", [0])
    assert first.held()["device"] == "0"
    first.kill()
    second = Job(tmp_path, "b", [0])
    assert second.held()["device"] == "0"
    assert not waiting(second)  # the lock went with the killed process; the stale file does not count
    second.release()


def test_jobs_per_gpu_two_lets_two_jobs_share_a_device(tmp_path):
    first, second = Job(tmp_path, "a", [0], per_gpu=2), Job(tmp_path, "b", [0], per_gpu=2)
    slots = [first.held(), second.held()]
    assert [s["device"] for s in slots] == ["0", "0"] and sorted(s["index"] for s in slots) == [0, 1]
    first.release(), second.release()


def test_slots_fill_every_device_before_any_is_shared():
    assert slot_order(["0", "1"], 2) == [("0", 0), ("1", 0), ("0", 1), ("1", 1)]


def test_a_job_slurm_gave_gpus_takes_no_slot_and_keeps_its_devices(tmp_path):
    environ = {"SLURM_JOB_ID": "42", "CUDA_VISIBLE_DEVICES": "3", FAKE_GPUS: "1"}
    slot = acquire_slot([0, 1], 1, tmp_path, environ, count=_no_count)
    assert (slot.mode, slot.device, environ["CUDA_VISIBLE_DEVICES"]) == ("scheduler", "3", "3")
    assert not list(tmp_path.iterdir())  # no lock taken


def test_slurm_without_gpus_for_the_job_still_takes_a_slot(tmp_path):
    environ = {"SLURM_JOB_ID": "42", FAKE_GPUS: "1"}
    with acquire_slot([5], 1, tmp_path, environ, count=_no_count) as slot:
        assert (slot.mode, slot.device) == ("fake", "5")


def test_fake_gpus_with_auto_is_an_error_in_one_sentence(tmp_path):
    with pytest.raises(GpuSlotError, match=r"^GMPTL_FAKE_GPUS=1 needs an explicit list .*'auto'$"):
        acquire_slot("auto", 1, tmp_path, {FAKE_GPUS: "1"}, count=_no_count)


def test_no_gpu_and_not_faked_takes_no_slot(tmp_path):
    environ: dict[str, str] = {}
    slot = acquire_slot("auto", 1, tmp_path / "locks", environ, count=lambda env: 0)
    assert (slot.mode, slot.device) == ("cpu", None) and "CUDA_VISIBLE_DEVICES" not in environ
    assert acquire_slot([0, 1], 1, tmp_path / "locks", {}, count=lambda env: 0).mode == "cpu"


def test_auto_takes_the_visible_devices_and_narrows_them_to_one(tmp_path):
    environ = {"CUDA_VISIBLE_DEVICES": "2,3"}
    first = acquire_slot("auto", 1, tmp_path, environ, count=lambda env: 2)
    second_env = {"CUDA_VISIBLE_DEVICES": "2,3"}
    second = acquire_slot("auto", 1, tmp_path, second_env, count=lambda env: 2)
    assert (first.device, environ["CUDA_VISIBLE_DEVICES"]) == ("2", "2")
    assert (second.device, second_env["CUDA_VISIBLE_DEVICES"]) == ("3", "3")
    first.release(), second.release()


def test_a_released_slot_is_free_again_in_the_same_process(tmp_path):
    slot = acquire_slot([0], 1, tmp_path, {FAKE_GPUS: "1"}, count=_no_count)
    slot.release()
    slot.release()  # idempotent
    assert acquire_slot([0], 1, tmp_path, {FAKE_GPUS: "1"}, count=_no_count, sleep=_never).device == "0"


def test_visible_device_lists_parse_indices_and_uuids():
    assert parse_visible("0, 2") == ["0", "2"]
    assert parse_visible("GPU-1a2b,MIG-3c") == ["GPU-1a2b", "MIG-3c"]
    assert parse_visible("") == [] and parse_visible("-1") == []


def test_bad_arguments_are_errors(tmp_path):
    with pytest.raises(GpuSlotError, match="jobs_per_gpu must be at least 1"):
        acquire_slot([0], 0, tmp_path, {FAKE_GPUS: "1"})
    with pytest.raises(GpuSlotError, match="distinct device ids"):
        acquire_slot([0, 0], 1, tmp_path, {FAKE_GPUS: "1"})


def _no_count(environ) -> int:
    raise AssertionError("devices must not be counted here")


def _never(seconds: float) -> None:
    raise AssertionError("must not wait")


def test_jobs_inside_one_multi_gpu_allocation_take_slots_among_its_gpus(tmp_path):
    """One snakemake driving several jobs inside `sbatch --gpus=2`: each job sees both GPUs, so it takes a slot."""
    from gmptl.gpu_slots import slot_for_job
    from gmptl.settings import RuntimeSettings

    runtime = RuntimeSettings(device="auto", gpu_lock_dir=str(tmp_path / "locks"))
    allocation = {"SLURM_JOB_ID": "7", "SLURM_JOB_GPUS": "0,1", "CUDA_VISIBLE_DEVICES": "0,1", FAKE_GPUS: "1"}
    first = slot_for_job(runtime, dict(allocation))
    second = slot_for_job(runtime, dict(allocation))
    assert {first.device, second.device} == {"0", "1"} and first.mode == second.mode == "fake"
    first.release(), second.release()
    own = slot_for_job(runtime, {"SLURM_JOB_ID": "8", "CUDA_VISIBLE_DEVICES": "3"})  # SLURM gave this job one GPU
    assert (own.mode, own.device) == ("scheduler", "3")


def test_cpu_and_pinned_devices_take_no_slot(tmp_path):
    from gmptl.gpu_slots import slot_for_job
    from gmptl.settings import RuntimeSettings

    for device in ("cpu", "cuda:1"):
        environ = {"CUDA_VISIBLE_DEVICES": "0,1"}
        slot = slot_for_job(RuntimeSettings(device=device, gpu_lock_dir=str(tmp_path)), environ)
        assert slot.mode == "cpu" and environ["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_the_lock_folder_falls_back_to_tmp_when_the_runtime_dir_is_missing():
    from gmptl.gpu_slots import default_lock_dir

    assert str(default_lock_dir({"XDG_RUNTIME_DIR": "/run/user/nobody-here"})).startswith("/tmp/gmptl-gpu-slots-")
