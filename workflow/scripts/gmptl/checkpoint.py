"""Resume state of a training job: saved atomically, matched by fingerprint, guarded by a lock.

The state lives in the undeclared folder `<model>.resume/` beside the declared model folder
(Snakemake deletes declared outputs before rerunning a job). It is loaded with
`torch.load(weights_only=True)`: tensors, numbers, strings and containers only, no pickled code.

The fingerprint is a dict of named parts (inputs, settings, code version …). A saved state whose
fingerprint differs is not resumed, and the log names the parts that changed.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch

from .errors import TrainingError

log = logging.getLogger(__name__)
STATE_FILE = "state.pt"


def save_state(state_dir: str | Path, state: dict) -> None:
    """Write `state` to `state_dir/state.pt` atomically (a kill leaves the previous state intact)."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / f"{STATE_FILE}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, state_dir / STATE_FILE)


def changed_parts(saved: dict | str | None, current: dict) -> list[str]:
    """The names of fingerprint parts that differ between a saved state and this run."""
    if not isinstance(saved, dict):
        return ["format"]
    return sorted(key for key in set(saved) | set(current) if saved.get(key) != current.get(key))


def load_state(state_dir: str | Path, fingerprint: dict) -> dict | None:
    """The saved state when its fingerprint equals `fingerprint`; None (and a log line saying why) otherwise."""
    path = Path(state_dir) / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a damaged state file only means starting over
        log.warning("saved state '%s' is unreadable (%s); starting fresh", path, err)
        return None
    changed = changed_parts(state.get("fingerprint"), fingerprint)
    if changed:
        saved = state.get("fingerprint") if isinstance(state.get("fingerprint"), dict) else {}
        reason = f"{', '.join(changed)} changed since it was saved"
        if "code" in changed:
            reason += f" (the gmptl library: {saved.get('code')} → {fingerprint.get('code')})"
        log.warning("saved state '%s' is not resumed: %s; starting fresh", path, reason)
        return None
    return state


def clear_state(state_dir: str | Path) -> None:
    """Remove the resume folder once the stage's model folder is written."""
    shutil.rmtree(state_dir, ignore_errors=True)


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
            raise TrainingError(
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
