"""TensorBoard event files of a training job: scalars by update step, continued without duplicates on resume.

A job writes into one folder of its own (the workflow puts it beside the job's log, `fold<N>.tb`), so
`tensorboard --logdir results/` shows every training job as a run named by its path. The x axis is the
optimiser update (`step`). What is written:

- after every update: `train/loss` (the stage's weighted loss), `train/loss_<objective>` (each objective's
  own loss: `emotion`, `gender`, one per GMP head `L<layer>_k<k>`) and `lr/<group>` (`backbone`, `heads`:
  the rate the update used), each the mean over the update's utterances;
- after every validation round, from its history row: `valid/<score>` (`loss`, `uar`, `war`) and per GMP
  head `gmp_<head>/valid_acc`, `gmp_<head>/valid_acc_masked` beside `gmp_<head>/majority`, the accuracy
  of always predicting the head's most frequent training label (also drawn together in one chart per
  head, under Custom Scalars).

Resume: a fresh start empties the folder. A run resumed at update S first cuts every event file back to
steps ≤ S (a killed run may have written beyond its last checkpoint), then writes a new file that opens
with a purge marker at S + 1 (so a TensorBoard already showing the cut steps drops them too). Events are
flushed before every checkpoint, so each step up to it is on disk. Every scalar step is thus in the files
once.

Written with tensorboardX (pure Python on numpy and protobuf, no TensorBoard needed); viewing needs the
`tensorboard` package.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from .errors import ConfigError

FILE_PATTERN = "events.out.tfevents.*"
_HEAD = re.compile(r"^(?P<score>valid_acc_masked|valid_acc|majority)_(?P<head>L\d+_k\d+)$")
_ROW_POSITION = ("round", "step", "passes", "seconds", "train_loss", "lr")  # where training stood, not a score


def events_folder(log_path: str | Path) -> Path:
    """The event folder of the job that logs to `log_path`: beside it, named like it with `.tb`."""
    return Path(log_path).with_suffix(".tb")


def update_scalars(losses: Mapping[str, float], rates: Mapping[str, float]) -> dict[str, float]:
    """The tags of one update: `losses` holds `loss` (the weighted sum) and each objective's loss by name."""
    tags = {"train/loss" if name == "loss" else f"train/loss_{name}": value for name, value in losses.items()}
    return {**tags, **{f"lr/{group}": rate for group, rate in rates.items()}}


def round_scalars(row: Mapping[str, float]) -> dict[str, float]:
    """The tags of one validation round's history row (its scores and the majority baselines)."""
    tags = {}
    for key, value in row.items():
        if key in _ROW_POSITION:
            continue
        head = _HEAD.match(key)
        if head:
            tags[f"gmp_{head['head']}/{head['score']}"] = value
        else:
            tags[f"valid/{key.removeprefix('valid_')}"] = value
    return tags


def gmp_charts(heads: list[str], masked: bool) -> dict:
    """Custom Scalars layout: one chart per GMP head with its validation accuracies and majority baseline."""
    scores = ["valid_acc", "valid_acc_masked", "majority"] if masked else ["valid_acc", "majority"]
    return {"GMP heads": {head: ["Multiline", [f"gmp_{head}/{score}" for score in scores]] for head in heads}}


class NoEventLog:
    """What a run writes when event files are off: nothing."""

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        pass

    def charts(self, layout: dict) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class EventLog(NoEventLog):
    """Scalars of one run, appended to a new event file in its folder (see `open_event_log`).

    Written in the calling thread (tensorboardX's `EventsWriter`: buffered, one event per step), so `flush()`
    means on disk; flushed by itself at most `flush_s` seconds after a write, for a TensorBoard watching."""

    def __init__(self, folder: Path, purge_step: int | None, flush_s: float = 30.0):
        try:
            from tensorboardX.event_file_writer import EventsWriter
            from tensorboardX.proto.event_pb2 import Event, SessionLog
            from tensorboardX.proto.summary_pb2 import Summary
        except ImportError as err:
            raise ConfigError(
                f"writing TensorBoard event files to '{folder}' needs the package tensorboardX, which is not "
                "installed: pip install tensorboardX (or set runtime.tensorboard: false)"
            ) from err
        self.Event, self.Summary, self.flush_s = Event, Summary, flush_s
        suffix = f".from{purge_step or 0:09d}"  # two segments begun in the same second get distinct files
        self.writer = EventsWriter(str(folder / "events"), suffix)
        self.flushed = time.monotonic()
        if purge_step is not None:  # TensorBoard hides every step from here on written before this event
            self.writer.write_event(Event(step=purge_step, session_log=SessionLog(status=SessionLog.START)))

    def _write(self, step: int, summary) -> None:
        self.writer.write_event(self.Event(wall_time=time.time(), step=step, summary=summary))
        if time.monotonic() - self.flushed >= self.flush_s:
            self.flush()

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        Value = self.Summary.Value
        self._write(step, self.Summary(value=[Value(tag=tag, simple_value=float(v)) for tag, v in values.items()]))

    def charts(self, layout: dict) -> None:
        from tensorboardX.summary import custom_scalars

        self._write(0, custom_scalars(layout))

    def flush(self) -> None:
        self.writer.flush()
        self.flushed = time.monotonic()

    def close(self) -> None:
        self.writer.close()


def open_event_log(folder: str | Path | None, resume_step: int | None) -> NoEventLog:
    """The event log of a run: none without a folder; else a fresh folder (`resume_step` None) or the folder cut
    back to steps ≤ `resume_step`, where a resumed run continues."""
    if folder is None:
        return NoEventLog()
    folder = Path(folder)
    if resume_step is None:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        cut_events(folder, resume_step)
    folder.mkdir(parents=True, exist_ok=True)
    return EventLog(folder, None if resume_step is None else resume_step + 1)


def _records(path: Path) -> Iterator[tuple[bytes, bytes]]:
    """(framed record, event bytes) of each whole record of a TFRecord file; a record cut short by a kill ends it.

    A record is: length (uint64, little-endian), its masked CRC (4 bytes), the data, the data's CRC (4 bytes)."""
    data = path.read_bytes()
    at = 0
    while at + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[at : at + 8])
        end = at + 12 + length + 4
        if end > len(data):
            return
        yield data[at:end], data[at + 12 : at + 12 + length]
        at = end


def _event(data: bytes):
    from tensorboardX.proto.event_pb2 import Event

    return Event.FromString(data)


def event_files(folder: str | Path) -> list[Path]:
    """The folder's event files in the order TensorBoard reads them (by name)."""
    return sorted(Path(folder).glob(FILE_PATTERN))


def cut_events(folder: str | Path, last_step: int) -> None:
    """Drop every event after `last_step` from the folder's files (atomically per file); a file left with nothing
    but its header is removed."""
    for path in event_files(folder):
        kept, content = [], False
        for record, data in _records(path):
            event = _event(data)
            if event.HasField("file_version") or event.step <= last_step:
                kept.append(record)
                content = content or not event.HasField("file_version")
        if not content:
            path.unlink()
            continue
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(b"".join(kept))
        os.replace(tmp, path)


def read_scalars(folder: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the folder's event files as written (no purge applied): tag → [(step, value)], in file
    order."""
    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in event_files(folder):
        for _, data in _records(path):
            event = _event(data)
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars.setdefault(value.tag, []).append((int(event.step), float(value.simple_value)))
    return scalars
