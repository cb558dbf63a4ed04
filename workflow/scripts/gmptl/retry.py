"""Retries that only retry what may pass next time.

A rule's `retries:` is for failures a second attempt can get past (a time limit, a pre-empted or
crashed node, an output locked by another job). A deterministic failure — bad input or config (any `GmptlError`:
one gender in a training split, NaN audio, a too-short crop …), a full disk or quota, a batch that does not fit
the GPU — fails the same way every
time, and on SLURM each attempt would hold a GPU again. Snakemake has no conditional retry, so:

1. the workflow's start (`onstart`) and the job's first attempt clear any marker an earlier run left;
2. a deterministic failure writes a small JSON marker `<output>.failed.json` beside the output
   (undeclared, so Snakemake leaves it alone): message, error type, the job's identity, attempt;
3. the rule's resources (`AfterFailure`, callables that Snakemake gives `attempt`) request no GPU and
   a few minutes of a later attempt that finds the marker (`reports_only`); such an attempt takes no GPU slot;
4. that attempt stops at once with the original sentence prefixed "not retried: ";
5. a success clears the marker.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from .errors import GmptlError
from .locks import OutputBusy

log = logging.getLogger(__name__)
MARKER_SUFFIX = ".failed.json"
DISK_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is exceeded"}
Result = TypeVar("Result")


class DiskFull(GmptlError):
    """The disk or the quota is full: every attempt would fail the same way."""


class GpuOutOfMemory(GmptlError):
    """The job's batch does not fit its GPU: every attempt on the same GPU would fail the same way."""


class NotRetried(GmptlError):
    """A later attempt of a job whose first attempt failed deterministically."""


def failure_marker(output: str | Path) -> Path:
    """Where a deterministic failure of the job writing `output` is recorded."""
    return Path(f"{output}{MARKER_SUFFIX}")


def is_deterministic(err: BaseException) -> bool:
    """True for a failure that a retry would meet again: a gmptl error (bad input or config), a full disk or quota,
    running out of GPU memory (the same batch on the same GPU). An output locked by another running job is not:
    a retry after that job ends can pass."""
    if isinstance(err, OutputBusy):
        return False
    if isinstance(err, GmptlError) or _out_of_gpu_memory(err):
        return True
    return isinstance(err, OSError) and err.errno in DISK_ERRORS


def _out_of_gpu_memory(err: BaseException) -> bool:
    oom = getattr(sys.modules.get("torch"), "OutOfMemoryError", None)
    return oom is not None and isinstance(err, oom)


def one_sentence(err: BaseException) -> str:
    """The failure as the one sentence the log ends with."""
    if _out_of_gpu_memory(err):
        return (
            f"the GPU ran out of memory ({str(err).splitlines()[0]}); `gmptl plan --gpu-mem GIB` estimates each "
            "job's peak and names the key to lower (train.batch_size, train.max_crop_s, runtime.precision)"
        )
    if isinstance(err, OSError) and err.errno in DISK_ERRORS:
        where = f" writing '{err.filename}'" if err.filename else ""
        return f"{DISK_ERRORS[err.errno]}{where}; free space (or raise the quota) and rerun the workflow"
    return str(err)


def read_failure(marker: str | Path, identity: dict) -> dict | None:
    """The recorded failure of the job `identity`; None when there is none (or it is unreadable, or another job's)."""
    try:
        record = json.loads(Path(marker).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("job") == identity else None


def record_failure(marker: str | Path, err: BaseException, attempt: int, identity: dict) -> None:
    """Write the marker of a deterministic failure atomically."""
    marker = Path(marker)
    marker.parent.mkdir(parents=True, exist_ok=True)
    record = {"message": one_sentence(err), "error": type(err).__name__, "job": identity, "attempt": attempt}
    tmp = marker.with_name(f"{marker.name}.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, marker)


def clear_failure(marker: str | Path) -> None:
    Path(marker).unlink(missing_ok=True)


def clear_markers(cache: str | Path) -> int:
    """Remove every failure marker under the stage cache (at workflow start: a new run tries every job again)."""
    markers = list(Path(cache).glob(f"**/*{MARKER_SUFFIX}")) if Path(cache).is_dir() else []
    for marker in markers:
        marker.unlink(missing_ok=True)
    return len(markers)


def reports_only(marker: str | Path, attempt: int) -> bool:
    """True when attempt `attempt` will only report its job's earlier deterministic failure (no GPU needed)."""
    return attempt > 1 and Path(marker).is_file()


@dataclass(frozen=True)
class AfterFailure:
    """A resource of a retried rule: `normal` (a number, or a function of wildcards and attempt) for an attempt that
    works, `reported` for one that only reports its job's recorded deterministic failure.

    `output`: the rule's output pattern (its wildcards filled in from the job's); Snakemake calls the object
    with the job's wildcards and attempt, as it calls a resource function."""

    output: str
    normal: int | Callable
    reported: int

    def __call__(self, wildcards, attempt: int):
        marker = failure_marker(self.output.format(**dict(wildcards.items())))
        if reports_only(marker, attempt):
            return self.reported
        return self.normal(wildcards, attempt) if callable(self.normal) else self.normal


def run_attempt(work: Callable[[], Result], *, marker: str | Path, attempt: int, identity: dict) -> Result:
    """Run attempt `attempt` of the job `identity`: `work()`, unless an earlier attempt failed deterministically.

    Attempt 1 clears an old marker; a deterministic failure writes one (and a full disk becomes a one-sentence
    `DiskFull`); a later attempt that finds one raises `NotRetried` at once; a success clears it."""
    if attempt > 1:
        earlier = read_failure(marker, identity)
        if earlier is not None:
            raise NotRetried(f"not retried: {earlier['message']}")
    clear_failure(marker)
    try:
        result = work()
    except Exception as err:
        if not is_deterministic(err):
            raise
        try:
            record_failure(marker, err, attempt, identity)
            log.info("a retry of this job only reports this failure (marker '%s')", marker)
        except OSError as unwritten:  # a full disk may refuse the marker too: then the retry runs again
            log.warning("could not record the failure in '%s' (%s)", marker, unwritten)
        if isinstance(err, GmptlError):
            raise
        if _out_of_gpu_memory(err):
            raise GpuOutOfMemory(one_sentence(err)) from err
        raise DiskFull(one_sentence(err)) from err
    clear_failure(marker)
    return result
