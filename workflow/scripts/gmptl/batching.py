"""Length batching shared by extraction, training-time scoring and prediction."""

from __future__ import annotations

import numpy as np


def length_batches(lengths: np.ndarray, budget: float) -> list[np.ndarray]:
    """Indices grouped longest first into batches with (size × longest) ≤ `budget` (or of size 1).

    `lengths` and `budget` share a unit (samples or seconds): the padded size of a batch is bounded.
    """
    lengths = np.asarray(lengths)
    order = np.argsort(-lengths, kind="stable")
    batches, current = [], []
    for index in order:
        if current and (len(current) + 1) * lengths[current[0]] > budget:
            batches.append(np.asarray(current))
            current = []
        current.append(int(index))
    if current:
        batches.append(np.asarray(current))
    return batches
