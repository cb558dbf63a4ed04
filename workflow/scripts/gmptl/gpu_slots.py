"""GPU slots on one box: a job that Snakemake granted `gpu=N` (a count, never a device id) takes a device.

`acquire_slot` runs at the start of a GPU job, before CUDA is initialised. Each device offers
`jobs_per_gpu` slots; a slot is an exclusive OS lock (`fcntl.flock`) on the file
`gpu<device>.slot<index>.lock` in a per-host directory (`default_lock_dir`: under
`$XDG_RUNTIME_DIR` or `/tmp`, named by user and hostname), so

- a job killed in any way (SIGKILL included) frees its slot at once: the kernel drops the lock with
  the process; a stale file is harmless, it is the lock that counts, never the file's existence;
- two nodes of a cluster that both see a device 0 never wait on each other: each host locks files
  in its own directory, even when that directory lies on a shared filesystem.

The job then sees only its device (`CUDA_VISIBLE_DEVICES=<device>`, so it is `cuda:0` inside the
job). Slots are taken slot-major (slot 0 of every device before slot 1 of any), so jobs spread over
the devices before any two share one, and they share only when `jobs_per_gpu` > 1. When every slot
is taken the job waits (it says so once) and polls with a bounded backoff.

No slot is taken when a scheduler already gave the job its own GPUs (SLURM: `SLURM_JOB_ID` with
`SLURM_JOB_GPUS`, `SLURM_STEP_GPUS` or `CUDA_VISIBLE_DEVICES`), nor on a box without a GPU.
`GMPTL_FAKE_GPUS=1` makes jobs take slots from an explicit device list exactly as on a GPU box
while they compute on the CPU (`CUDA_VISIBLE_DEVICES` is set empty, so torch sees no CUDA device).

The environment is an explicit argument (the adapter passes `os.environ`); nothing here reads
global state.
"""

from __future__ import annotations

import atexit
import fcntl
import getpass
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .errors import GmptlError
from .settings import RuntimeSettings

log = logging.getLogger(__name__)

FAKE_GPUS = "GMPTL_FAKE_GPUS"
SCHEDULER_GPU_VARIABLES = ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "CUDA_VISIBLE_DEVICES")


class GpuSlotError(GmptlError):
    """A GPU slot cannot be taken as configured."""


@dataclass
class Slot:
    """What a job runs on: `device` is the id to log (`gpu slot <device>`), None on a CPU run.

    `mode`: `slot` (a lock is held until `release`), `scheduler` (the scheduler's GPUs, no lock),
    `cpu` (no GPU), `fake` (a slot held while computing on the CPU)."""

    device: str | None
    index: int | None
    mode: str
    lock_path: Path | None = None
    _handle: IO | None = field(default=None, repr=False)

    def release(self) -> None:
        """Free the slot (closing the file drops the lock); a second call does nothing."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def default_lock_dir(environ: Mapping[str, str]) -> Path:
    """A per-host, per-user local directory for the slot locks: `$XDG_RUNTIME_DIR` (else /tmp)/gmptl-gpu-slots-…."""
    base = environ.get("XDG_RUNTIME_DIR") or ""
    if not (base and os.path.isdir(base) and os.access(base, os.W_OK)):  # SLURM may export the login node's
        base = "/tmp"
    return Path(base) / f"gmptl-gpu-slots-{getpass.getuser()}-{socket.gethostname()}"


def scheduler_gpus(environ: Mapping[str, str]) -> str | None:
    """The GPUs a scheduler (SLURM) gave this job, as its `CUDA_VISIBLE_DEVICES` or GPU list; None when none did."""
    if not environ.get("SLURM_JOB_ID"):
        return None
    for name in SCHEDULER_GPU_VARIABLES:
        if environ.get(name):
            return environ[name]
    return None


def parse_visible(value: str) -> list[str]:
    """Device ids of a `CUDA_VISIBLE_DEVICES` value (indices or GPU-/MIG- UUIDs); empty or -1: none."""
    ids = [part.strip() for part in value.split(",") if part.strip()]
    return [] if not ids or ids[0].startswith("-") else ids


def count_cuda_devices(environ: Mapping[str, str]) -> int:
    """CUDA devices torch sees under `environ`, counted in a child process so this one never initialises CUDA.

    (Even `torch.cuda.device_count()` may call cudaGetDeviceCount, after which a changed
    `CUDA_VISIBLE_DEVICES` no longer takes effect in the process.)"""
    probe = "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)"
    result = subprocess.run(
        [sys.executable, "-c", probe], env=dict(environ), capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        detail = result.stderr.strip()[-300:]
        raise GpuSlotError(f"counting the CUDA devices failed ({detail}); check the torch install")
    return int(result.stdout.strip().splitlines()[-1])


def candidate_devices(
    gpus: str | Sequence[int | str], environ: Mapping[str, str], count: Callable[[Mapping[str, str]], int]
) -> list[str]:
    """The device ids slots may be taken on: an explicit list, or (`auto`) the visible devices; [] without a GPU."""
    if isinstance(gpus, str):
        if gpus != "auto":
            raise GpuSlotError(f"gpus must be 'auto' or a list of device ids, got '{gpus}'")
        if environ.get(FAKE_GPUS) == "1":
            raise GpuSlotError(f"{FAKE_GPUS}=1 needs an explicit list of device ids in gpus (e.g. [0, 1]), not 'auto'")
        visible = environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None:
            return parse_visible(visible) if count(environ) > 0 else []
        return [str(i) for i in range(count(environ))]
    devices = [str(g) for g in gpus]
    if not devices or len(set(devices)) != len(devices):
        raise GpuSlotError(f"gpus must list distinct device ids, got {list(gpus)}")
    if environ.get(FAKE_GPUS) == "1":
        return devices
    return devices if count(environ) > 0 else []


def _cuda_initialised() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


def try_lock(path: Path) -> IO | None:
    """An open handle holding an exclusive lock on `path`, or None when another process holds it."""
    handle = open(path, "a+")  # noqa: SIM115 - the handle is the lock, kept open until release
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")  # for a person looking; the lock, not this text, is the slot
    handle.flush()
    return handle


def slot_order(devices: Sequence[str], jobs_per_gpu: int) -> list[tuple[str, int]]:
    """(device, slot index) in the order they are tried: slot 0 of every device, then slot 1, …."""
    return [(device, index) for index in range(jobs_per_gpu) for device in devices]


def take_free_slot(devices: Sequence[str], jobs_per_gpu: int, lock_dir: Path) -> Slot | None:
    """One free slot, locked, or None when all are taken."""
    for device, index in slot_order(devices, jobs_per_gpu):
        path = lock_dir / f"gpu{device}.slot{index}.lock"
        handle = try_lock(path)
        if handle is not None:
            return Slot(device, index, "slot", path, handle)
    return None


def acquire_slot(
    gpus: str | Sequence[int | str],
    jobs_per_gpu: int,
    lock_dir: str | os.PathLike | None,
    environ: MutableMapping[str, str],
    *,
    trust_scheduler: bool = True,
    count: Callable[[Mapping[str, str]], int] = count_cuda_devices,
    sleep: Callable[[float], None] = time.sleep,
    max_poll_s: float = 2.0,
) -> Slot:
    """Take a GPU slot for this job (waiting while all are taken) and point `CUDA_VISIBLE_DEVICES` at it.

    `gpus`: `auto` or device ids; `jobs_per_gpu`: slots per device; `lock_dir`: the per-host lock
    directory (None: `default_lock_dir`); `environ`: the process environment, updated in place;
    `trust_scheduler`: take no slot when SLURM gave the job its GPUs (False inside one multi-GPU
    allocation shared by several jobs of a local Snakemake); `count`: counts CUDA devices without
    initialising CUDA here. Call before CUDA is initialised; release the slot (or use `with`) at the end.
    """
    if jobs_per_gpu < 1:
        raise GpuSlotError(f"jobs_per_gpu must be at least 1, got {jobs_per_gpu}")
    given = scheduler_gpus(environ) if trust_scheduler else None
    if given is not None:
        log.info("gpu slot: none taken, the scheduler gave this job GPU(s) %s", given)
        return Slot(given, None, "scheduler")
    if _cuda_initialised():
        raise GpuSlotError("CUDA was initialised before the GPU slot was taken; call acquire_slot first in the job")
    fake = environ.get(FAKE_GPUS) == "1"
    devices = candidate_devices(gpus, environ, count)
    if not devices:
        log.info("gpu slot: none taken, no CUDA device is visible (CPU run)")
        return Slot(None, None, "cpu")
    folder = Path(lock_dir) if lock_dir is not None else default_lock_dir(environ)
    folder.mkdir(parents=True, exist_ok=True)
    slot = wait_for_slot(devices, jobs_per_gpu, folder, sleep, max_poll_s)
    environ["CUDA_VISIBLE_DEVICES"] = "" if fake else slot.device
    if fake:
        slot.mode = "fake"
    log.info(
        "gpu slot %s (slot %d of %d per device%s; lock %s)",
        slot.device,
        slot.index,
        jobs_per_gpu,
        ", fake: computing on the CPU" if fake else "",
        slot.lock_path,
    )
    return slot


def wait_for_slot(
    devices: Sequence[str], jobs_per_gpu: int, lock_dir: Path, sleep: Callable[[float], None], max_poll_s: float
) -> Slot:
    """Poll for a free slot with a backoff doubling from 50 ms up to `max_poll_s`; say once that it waits."""
    delay, said = 0.05, False
    while True:
        slot = take_free_slot(devices, jobs_per_gpu, lock_dir)
        if slot is not None:
            return slot
        if not said:
            log.info(
                "gpu slot: all %d slot(s) on gpu(s) %s are taken; waiting for one to free",
                len(devices) * jobs_per_gpu,
                ",".join(devices),
            )
            said = True
        sleep(delay)
        delay = min(2 * delay, max_poll_s)


def slot_for_job(runtime: RuntimeSettings, environ: MutableMapping[str, str], wanted: int = 1) -> Slot:
    """The slot of one GPU job from its runtime settings (`gpus`, `jobs_per_gpu`, `gpu_lock_dir`,
    `trust_scheduler`): none for `device: cpu` (unless GPUs are faked) or a pinned `cuda:N`, else
    `acquire_slot`. A job that the scheduler gave more GPUs than it `wanted` (one snakemake driving several
    jobs inside one multi-GPU allocation) takes a slot among those. Call before CUDA is initialised; hold the
    returned slot for the job's lifetime."""
    device = runtime.device
    if device.startswith("cuda:") or (device == "cpu" and environ.get(FAKE_GPUS) != "1"):
        log.info("gpu slot: none taken (device %s)", device)
        return Slot(None, None, "cpu")
    gpus, trust = runtime.gpus, runtime.trust_scheduler
    given = scheduler_gpus(environ) if trust else None
    if given is not None and len(parse_visible(given)) > wanted:
        log.info("gpu slot: the scheduler gave %s to several jobs; taking a slot among them", given)
        visible = environ.get("CUDA_VISIBLE_DEVICES")
        gpus, trust = (parse_visible(visible) if visible else "auto"), False
    slot = acquire_slot(gpus, runtime.jobs_per_gpu, runtime.gpu_lock_dir, environ, trust_scheduler=trust)
    if slot.lock_path is not None:
        atexit.register(_release_at_exit, slot)
    return slot


def _release_at_exit(slot: Slot) -> None:
    """Free the slot as the job's process ends and say so (its log then shows how long the slot was held)."""
    slot.release()
    log.info("gpu slot %s (slot %d) released", slot.device, slot.index)
