"""The training input: which micro-batch comes when, and loading it in background threads.

The order of training is a pure function of the seed and the optimiser update counter, so a job
resumed at any update continues exactly as an uninterrupted one:

- pass p (1-based) draws its length-bucketed batches from a generator seeded by (seed, p);
- update u (0-based) consumes the micro-batches [j·grad_accum, (j+1)·grad_accum) of pass u // U + 1,
  j = u mod U, where U = ceil(batches per pass / grad_accum) (the last update of a pass may have fewer);
- micro-batch m of pass p crops with a generator seeded by (seed, p, m, 1) (`crop_rng`) and masks
  with one seeded by (seed, p, m, 2) (`mask_rng`), so loading can run ahead in other threads.

`prefetched` decodes, resamples and crops the next micro-batches in `workers` threads while the model
computes (soundfile and soxr release the GIL), and yields them in order.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from .data import epoch_batches
from .errors import TrainingError

Job = TypeVar("Job")
Result = TypeVar("Result")


@dataclass(frozen=True)
class MicroBatch:
    """One micro-batch of the training stream: its place and its utterances."""

    update: int  # 0-based optimiser update it belongs to
    pass_: int  # 1-based pass over the training split
    batch: int  # 0-based micro-batch index within the pass
    index: np.ndarray  # utterance indices
    in_update: int  # micro-batches of its update
    last: bool  # the last micro-batch of its update


def crop_rng(seed: int, pass_: int, batch: int) -> np.random.Generator:
    return np.random.default_rng([seed, pass_, batch, 1])


def mask_rng(seed: int, pass_: int, batch: int) -> np.random.Generator:
    return np.random.default_rng([seed, pass_, batch, 2])


class Schedule:
    """The micro-batches of every pass, drawn on demand, and how updates map onto them."""

    def __init__(
        self,
        durations: np.ndarray,
        batch_size: int,
        grad_accum: int,
        seed: int,
        weights: np.ndarray | None = None,
    ):
        self.durations, self.batch_size, self.grad_accum = durations, batch_size, grad_accum
        self.seed, self.weights = seed, weights
        self._pass, self._batches = 0, []
        self.batches_per_pass = len(self.batches(1))
        self.updates_per_pass = math.ceil(self.batches_per_pass / grad_accum)

    def batches(self, pass_: int) -> list[np.ndarray]:
        """The micro-batches of pass `pass_` (the latest pass is kept)."""
        if pass_ != self._pass:
            rng = np.random.default_rng([self.seed, pass_])
            batches = epoch_batches(self.durations, self.batch_size, rng, self.weights)
            if self._pass and len(batches) != self.batches_per_pass:
                raise TrainingError(f"pass {pass_} has {len(batches)} batches, pass 1 had {self.batches_per_pass}")
            self._pass, self._batches = pass_, batches
        return self._batches

    def pass_of(self, update: int) -> int:
        return update // self.updates_per_pass + 1

    def micro_batches(self, start: int, stop: int) -> Iterator[MicroBatch]:
        """The micro-batches of updates start … stop − 1, in training order."""
        for update in range(start, stop):
            pass_ = self.pass_of(update)
            first = (update % self.updates_per_pass) * self.grad_accum
            last = min(first + self.grad_accum, self.batches_per_pass)
            batches = self.batches(pass_)
            for m in range(first, last):
                yield MicroBatch(update, pass_, m, batches[m], last - first, m == last - 1)


def prefetched(jobs: Iterable[Job], load: Callable[[Job], Result], workers: int) -> Iterator[tuple[Job, Result]]:
    """(job, load(job)) in the order of `jobs`, loaded up to 2·`workers` jobs ahead in `workers` threads.

    `workers` 0 loads in the calling thread. An error of `load` is raised when its job's turn comes.
    """
    if workers <= 0:
        for job in jobs:
            yield job, load(job)
        return
    depth = 2 * workers
    with ThreadPoolExecutor(workers, thread_name_prefix="gmptl-loader") as pool:
        pending: deque = deque()
        try:
            for job in jobs:
                pending.append((job, pool.submit(load, job)))
                if len(pending) > depth:
                    done, future = pending.popleft()
                    yield done, future.result()
            while pending:
                done, future = pending.popleft()
                yield done, future.result()
        finally:
            for _, future in pending:
                future.cancel()
