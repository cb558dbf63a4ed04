"""One job per output: a POSIX record lock on `<output>.lock` while a job writes that output.

Training, feature extraction and k-means hold it around their writes, so two copies of one job (two
Snakemake runs without a shared lock, a requeued SLURM job next to its original) never overwrite each
other's output or resume state.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import TrainingError


class OutputBusy(TrainingError):
    """Another job holds the output's lock: transient (a retry after that job ends can pass)."""


@contextlib.contextmanager
def exclusive(target: str | Path) -> Iterator[None]:
    """Hold a lock on `<target>.lock` while a job writes `target`; a second job on the same output stops.

    POSIX record locks (`lockf`) are released by the kernel when the holder dies, so a killed job never
    leaves a stale lock; they also work on NFS with lockd. The lock file itself stays (it is empty).
    """
    lock_path = Path(f"{target}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise OutputBusy(
                f"another job (pid {holder}) is already writing '{target}' (lock '{lock_path}'); wait for it to "
                "finish or stop it — two copies of one job would overwrite each other's resume state"
            ) from err
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}@{os.uname().nodename}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.lockf(handle, fcntl.LOCK_UN)
