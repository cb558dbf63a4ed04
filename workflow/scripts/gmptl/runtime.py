"""Process-level concerns in one place: logging, error reporting, device, precision and seeds."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch

from .errors import GmptlError, TrainingError
from .fileio import code_version

log = logging.getLogger("gmptl")


def setup_logging(log_file: str | os.PathLike | None = None, level: int = logging.INFO) -> None:
    """Log to stderr and, when given, to `log_file`; uncaught errors land in the log too.

    A `GmptlError` is reported as its one-sentence message; anything else with its traceback.
    Either way the process exits non-zero.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    sys.excepthook = _report_uncaught
    log.info("%s from %s", code_version(), Path(__file__).resolve().parent)


def _report_uncaught(exc_type, exc, tb) -> None:
    if isinstance(exc, GmptlError):
        log.error("%s", exc)
    else:
        log.critical("unexpected error", exc_info=(exc_type, exc, tb))
    logging.shutdown()


def resolve_device(name: str) -> torch.device:
    """`auto` → CUDA when present, else CPU; `cuda`/`cuda:N` must exist; `cpu` always works."""
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
    if precision == "fp32" or (device_type != "cuda" and not (allow_cpu and precision in ("bf16", "fp16"))):
        return None
    return torch.float16 if precision == "fp16" else torch.bfloat16


def autocast(device: torch.device, precision: str = "auto", *, allow_cpu: bool = False):
    """bf16 autocast on CUDA (`auto` or `bf16`), fp16 when asked, plain fp32 otherwise (see `autocast_dtype`)."""
    dtype = autocast_dtype(device.type, precision, allow_cpu=allow_cpu)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) once, visibly."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    log.info("seed %d", seed)


def configure_torch(threads: int) -> None:
    """Use `threads` CPU threads and keep transformers quiet (no progress bars in logs)."""
    torch.set_num_threads(max(1, threads))
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
