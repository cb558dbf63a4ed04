"""Evaluation protocols and the fold ids a config yields (pure; no data, no heavy imports).

`session`     leave-one-group-out over the manifest's `session` (IEMOCAP: fold N tests session N);
`speaker`     leave-one-speaker-out (IEMOCAP: speaker SesNNF is fold 2N-1, SesNNM fold 2N);
`kfold`       `folds.k` speaker-disjoint folds, numbered 1..k;
`predefined`  the corpus's own train/valid/test split, one fold numbered 1.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

PROTOCOLS = ("session", "speaker", "kfold", "predefined")
IEMOCAP_SPEAKER = re.compile(r"^Ses(?P<session>\d{2})(?P<gender>[FM])$")


def iemocap_speaker_fold(speaker: str) -> int | None:
    """The fold that tests an IEMOCAP speaker under the `speaker` protocol (None for another id)."""
    match = IEMOCAP_SPEAKER.match(speaker)
    if not match:
        return None
    return 2 * int(match["session"]) - (1 if match["gender"] == "F" else 0)


def expected_fold_ids(corpus: Mapping, folds: Mapping) -> list[int] | None:
    """The fold ids `make_folds` will write for this config, or None when only the data can tell.

    Known without data: kfold (1..k), predefined ([1]), and IEMOCAP's session and speaker protocols
    (from `corpus.sessions`). Leave-one-group-out on any other corpus depends on its groups.
    """
    protocol = folds.get("protocol", "session")
    if protocol == "predefined":
        return [1]
    if protocol == "kfold":
        return list(range(1, int(folds.get("k", 5)) + 1))
    if corpus.get("format", "iemocap") != "iemocap":
        return None
    sessions = sorted(corpus.get("sessions", [1, 2, 3, 4, 5]))
    if protocol == "session":
        return sessions
    return sorted(iemocap_speaker_fold(f"Ses{s:02d}{g}") for s in sessions for g in "FM")
