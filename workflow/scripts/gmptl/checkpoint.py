"""Resume state of a training job: one object that saves and restores what it registers, atomically, by fingerprint.

A `Checkpointer` (SpeechBrain's pattern) is given the objects whose state makes a run resumable —
model, optimiser, scheduler, gradient scaler, RNG, loop state: anything with `state_dict()` and
`load_state_dict()` — and writes them together, with the run's fingerprint, to
`<model>.resume/state.pt`, the undeclared folder beside the declared model folder (Snakemake deletes
declared outputs before rerunning a job). The file is loaded with `torch.load(weights_only=True)`, so
it may hold only tensors, plain Python numbers, strings, None and containers of them: `save_state`
refuses anything else (a NumPy scalar, say) instead of writing a state that could never be resumed.

The fingerprint is a dict of named parts (inputs, settings, code version …). A saved state whose
fingerprint differs is not resumed, and the log names the parts that changed.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

import torch

from .errors import TrainingError

log = logging.getLogger(__name__)
STATE_FILE = "state.pt"
# Exact types (NumPy's float64 subclasses float, yet a weights-only load refuses it).
PLAIN = (str, bytes, int, float, bool, type(None), torch.dtype, torch.device)
SEQUENCES = (list, tuple, torch.Size)
MAPPINGS = (dict, OrderedDict)


class Stateful(Protocol):
    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> Any: ...


def unloadable_part(value: Any, where: str = "state") -> str | None:
    """The first part of `value` a weights-only `torch.load` refuses, as 'where (type)'; None when every part loads."""
    if isinstance(value, torch.Tensor) or type(value) in PLAIN:
        return None
    if type(value) in SEQUENCES:
        items = enumerate(value)
    elif type(value) in MAPPINGS:
        items = value.items()
    else:
        return f"{where} ({type(value).__module__}.{type(value).__qualname__})"
    for key, item in items:
        if type(key) not in PLAIN:
            return f"{where} key {key!r} ({type(key).__module__}.{type(key).__qualname__})"
        found = unloadable_part(item, f"{where}[{key!r}]")
        if found:
            return found
    return None


def save_state(state_dir: str | Path, state: dict) -> None:
    """Write `state` to `state_dir/state.pt` atomically (a kill leaves the previous state intact).

    Raises TrainingError, before writing, when a part of `state` is of a type a weights-only load refuses."""
    bad = unloadable_part(state)
    if bad:
        raise TrainingError(
            f"the resume state for '{state_dir}' holds {bad}, which torch.load(weights_only=True) refuses; "
            "convert it to a plain Python value where it is made (a gmptl bug: please report it)"
        )
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


class TorchRng:
    """torch's CPU generator (and, on CUDA, every device's) as a registrable object."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def state_dict(self) -> dict:
        return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if self.cuda else None}

    def load_state_dict(self, state: dict) -> None:
        torch.set_rng_state(state["cpu"])
        if self.cuda and state.get("cuda") is not None:
            torch.cuda.set_rng_state_all(state["cuda"])


class Checkpointer:
    """Owns a run's resumable state: `register` the objects once, then `save()` and `restore()` them together."""

    def __init__(self, state_dir: str | Path, fingerprint: dict):
        self.state_dir, self.fingerprint = Path(state_dir), fingerprint
        self.objects: dict[str, Stateful] = {}

    def register(self, name: str, obj: Stateful) -> None:
        if name in self.objects or name == "fingerprint":
            raise ValueError(f"'{name}' is already part of the resume state")
        self.objects[name] = obj

    def save(self) -> None:
        """Write the state of every registered object (atomically, with the fingerprint)."""
        state = {name: obj.state_dict() for name, obj in self.objects.items()}
        save_state(self.state_dir, {"fingerprint": self.fingerprint, **state})

    def restore(self) -> bool:
        """Load a saved state of this fingerprint into the registered objects; False when there is none to resume.

        An empty saved part (a disabled gradient scaler's) leaves its object as it is."""
        state = load_state(self.state_dir, self.fingerprint)
        if state is None:
            return False
        missing = sorted(set(self.objects) - set(state))
        if missing:
            log.warning("saved state in '%s' lacks %s; starting fresh", self.state_dir, ", ".join(missing))
            return False
        for name, obj in self.objects.items():
            if state[name]:
                obj.load_state_dict(state[name])
        return True
