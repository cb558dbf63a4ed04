"""Progress of a long job: a log line at most every `every_s` seconds (position, rate, elapsed, ETA).

    progress = Progress("stage1 fold 1", total=20000, unit="step", every_s=60)
    for ...:
        progress.advance(1, audio_s=12.5, loss=3.2)   # logs when `every_s` has passed since the last line
    progress.report(round=3)                            # logs now (e.g. after a validation round)

A line reads `stage1 fold 1: step 1200/20000 (6.0 %) | round 3 | loss 3.2 | 410 audio-s/s | elapsed 0:05:10 |
ETA 1:21:03`. The rate and ETA count only the work done by this process (a resumed job starts at its
saved position). On a terminal a tqdm bar is drawn as well; logs never get bars. The clock is
injectable, so tests run with a fake one.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def format_duration(seconds: float) -> str:
    """H:MM:SS (days as a prefix above 24 h)."""
    seconds = max(0, int(round(seconds)))
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    text = f"{hours}:{minutes:02d}:{seconds:02d}"
    return f"{days}d {text}" if days else text


def _value(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class Progress:
    """Periodic progress lines for a job of `total` units that starts at `done`."""

    def __init__(
        self,
        what: str,
        total: float,
        *,
        done: float = 0,
        unit: str = "step",
        every_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = log,
        bar: bool | None = None,
    ):
        self.what, self.total, self.unit, self.every_s = what, total, unit, every_s
        self.done = self.start_done = done
        self.clock, self.logger = clock, logger
        self.started = self.last_line = clock()
        self.audio_s = 0.0
        self.fields: dict = {}
        self._bar = self._make_bar(done) if (sys.stderr.isatty() if bar is None else bar) else None

    def _make_bar(self, done: float):
        try:
            from tqdm import tqdm
        except ImportError:  # pragma: no cover - tqdm comes with transformers
            return None
        return tqdm(total=self.total, initial=done, desc=self.what, unit=self.unit, leave=False, dynamic_ncols=True)

    def advance(self, n: float = 1, *, audio_s: float = 0.0, **fields) -> None:
        """`n` more units done (`audio_s` seconds of audio in them); log if `every_s` has passed."""
        self.done += n
        self.audio_s += audio_s
        self.fields.update(fields)
        if self._bar is not None:
            self._bar.update(n)
        if self.clock() - self.last_line >= self.every_s:
            self.report()

    def report(self, **extra) -> None:
        """Log the progress line now, with `extra` fields on this line only (e.g. a validation round's scores)."""
        self.logger.info("%s", self.line(extra))
        self.last_line = self.clock()

    def elapsed(self) -> float:
        return self.clock() - self.started

    def eta(self) -> float | None:
        """Seconds left at this process' rate so far; None before any unit is done."""
        done_here, elapsed = self.done - self.start_done, self.elapsed()
        if done_here <= 0 or elapsed <= 0:
            return None
        return (self.total - self.done) * elapsed / done_here

    def line(self, extra: dict | None = None) -> str:
        share = 100.0 * self.done / self.total if self.total else 100.0
        parts = [f"{self.what}: {self.unit} {_value(self.done)}/{_value(self.total)} ({share:.1f} %)"]
        parts += [f"{key} {_value(value)}" for key, value in {**self.fields, **(extra or {})}.items()]
        elapsed = self.elapsed()
        if self.audio_s and elapsed > 0:
            parts.append(f"{self.audio_s / elapsed:.4g} audio-s/s")
        eta = self.eta()
        parts.append(f"elapsed {format_duration(elapsed)}")
        parts.append(f"ETA {format_duration(eta) if eta is not None else '?'}")
        return " | ".join(parts)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
