"""Process-level concerns in one place: logging, error reporting, device, precision and seeds.

torch is imported inside the functions that use it, so a job can set up its log and take its GPU slot
(`gmptl.gpu_slots`) before torch loads.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import random
import shutil
import socket
import sys
from pathlib import Path

import numpy as np

from .errors import GmptlError, TrainingError
from .failures import storage_failure
from .fileio import code_version

log = logging.getLogger("gmptl")


def setup_logging(log_file: str | os.PathLike | None = None, level: int = logging.INFO, *, attempt: int | None = None):
    """Log to stderr and, when given, append to `log_file` under a header line (date, host, pid, attempt).

    Uncaught errors land in the log too: a `GmptlError` as its one-sentence message, anything else with
    its traceback and then one sentence; either way the process exits non-zero.

    Snakemake deletes a job's log before each attempt. With `attempt` (the rule's retry count, from 1),
    every attempt is also appended to the undeclared `<log_file>.attempts`, which attempt 1 starts anew
    and a retry copies back into the log first: the log of a retried job holds all its attempts.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        path = Path(log_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        if attempt is not None:
            attempts = Path(f"{path}.attempts")
            _carry_over(attempts, path, attempt)
            handlers.append(logging.FileHandler(attempts, mode="a"))
        handlers.append(logging.FileHandler(path, mode="a"))
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    sys.excepthook = _report_uncaught
    log.info(
        "==== attempt %s | %s | host %s | pid %d ====",
        attempt if attempt is not None else "?",
        datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        socket.gethostname(),
        os.getpid(),
    )
    log.info("%s from %s", code_version(), Path(__file__).resolve().parent)


def _carry_over(attempts: Path, log_file: Path, attempt: int) -> None:
    """Attempt 1 starts the attempts file anew; a later one copies it into its (deleted, so empty) log."""
    if attempt <= 1:
        attempts.unlink(missing_ok=True)
    elif attempts.is_file() and not (log_file.is_file() and log_file.stat().st_size):
        shutil.copyfile(attempts, log_file)


def _report_uncaught(exc_type, exc, tb) -> None:
    storage = None if isinstance(exc, GmptlError) else storage_failure(exc)
    if isinstance(exc, GmptlError):
        log.error("%s", exc)
    elif storage:  # a full disk, a quota, a read-only folder: one sentence naming the path
        log.error("%s", storage)
    else:
        log.critical("unexpected error", exc_info=(exc_type, exc, tb))
        log.error("%s: %s (an unexpected error: the traceback above says where)", exc_type.__name__, exc)
    logging.shutdown()


def resolve_device(name: str) -> torch.device:
    """`auto` → CUDA when present, else CPU; `cuda`/`cuda:N` must exist; `cpu` always works."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError(
            f"config asks for device '{name}' but no CUDA device is visible to this job; "
            "set device: auto (or cpu), or request a GPU from the scheduler"
        )
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise TrainingError(f"config device '{name}' is not a valid torch device ({err})") from err


def autocast_dtype(device_type: str, precision: str = "auto", *, allow_cpu: bool = False) -> torch.dtype | None:
    """The autocast dtype of `precision` on `device_type`, None for plain fp32.

    CUDA: `auto`/`bf16` → bfloat16, `fp16` → float16, `fp32` → None. Any other device runs fp32,
    unless `allow_cpu` (tests and rehearsals) lets an explicit `bf16`/`fp16` autocast there too;
    `auto` stays fp32 off CUDA either way.
    """
    import torch

    if precision == "fp32" or (device_type != "cuda" and not (allow_cpu and precision in ("bf16", "fp16"))):
        return None
    return torch.float16 if precision == "fp16" else torch.bfloat16


def autocast(device: torch.device, precision: str = "auto", *, allow_cpu: bool = False):
    """bf16 autocast on CUDA (`auto` or `bf16`), fp16 when asked, plain fp32 otherwise (see `autocast_dtype`)."""
    import torch

    dtype = autocast_dtype(device.type, precision, allow_cpu=allow_cpu)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) once, visibly."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    log.info("seed %d", seed)


def configure_torch(threads: int) -> None:
    """Use `threads` CPU threads and keep transformers quiet (no progress bars in logs)."""
    import torch

    torch.set_num_threads(max(1, threads))
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
