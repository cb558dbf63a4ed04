"""Corpus → manifest: dispatch on `corpus.format`, count tables, fingerprint, and the gender check.

Every format (iemocap, table, ravdess, crema_d, msp_podcast, emodb; readers in `gmptl.corpora`)
yields the same manifest: `MANIFEST_COLUMNS`, one row per kept utterance, sorted by utt_id.
`session` is the grouping unit of the `session` protocol; `speaker` the speaker id ("Unknown" when
the corpus does not know it); `gender` F, M or empty when unknown; `dialog` the recording or
conversation id where the corpus has one, else the speaker; `corpus_split` the corpus's own
train/valid/test split where it has one, else empty.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd

from .corpora import crema_d, emodb, iemocap, msp_podcast, ravdess, table
from .corpora.base import MANIFEST_COLUMNS, UNKNOWN_SPEAKER, CorpusReading, CorpusSettings, Entry, assemble
from .errors import ConfigError

__all__ = [
    "MANIFEST_COLUMNS",
    "UNKNOWN_SPEAKER",
    "CorpusReading",
    "CorpusSettings",
    "build_manifest",
    "corpus_fingerprint",
    "count_table",
    "full_release_differences",
    "read_corpus",
    "read_manifest",
    "require_gender",
]

log = logging.getLogger(__name__)

# Each reader module has `read(settings) -> list[Entry]` and `source_files(settings) -> list[Path]`.
READERS: dict[str, ModuleType] = {
    "iemocap": iemocap,
    "table": table,
    "ravdess": ravdess,
    "crema_d": crema_d,
    "msp_podcast": msp_podcast,
    "emodb": emodb,
}
FULL_RELEASE = {
    "emotion": {"neu": 1708, "hap": 1636, "ang": 1103, "sad": 1084},
    "session": {1: 1085, 2: 1023, 3: 1151, 4: 1031, 5: 1241},
}


def reader(corpus_format: str) -> Callable[[CorpusSettings], list[Entry]]:
    if corpus_format not in READERS:
        raise ConfigError(f"config key 'corpus.format': unknown format '{corpus_format}' (known: {sorted(READERS)})")
    return READERS[corpus_format].read


def read_corpus(settings: CorpusSettings) -> CorpusReading:
    """Read the corpus `settings` describes into the manifest, with what was dropped or skipped."""
    return assemble(reader(settings.format)(settings), settings)


def build_manifest(
    root: str | Path,
    sessions: list[int],
    label_map: dict[str, str],
    classes: list[str],
    sample_rate: int = 16000,
    on_format_mismatch: str = "convert",
    on_missing_audio: str = "error",
) -> pd.DataFrame:
    """The manifest of an IEMOCAP tree (a shortcut of `read_corpus` for the IEMOCAP format)."""
    settings = CorpusSettings(
        root=Path(root),
        sessions=tuple(sessions),
        classes=tuple(classes),
        label_map=dict(label_map),
        sample_rate=sample_rate,
        on_format_mismatch=on_format_mismatch,
        on_missing_audio=on_missing_audio,
    )
    return read_corpus(settings).manifest


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """results/manifest.tsv with text columns kept as text (speaker '03' stays '03'; unknown gender is '')."""
    text = {
        "utt_id": str,
        "path": str,
        "speaker": str,
        "gender": str,
        "emotion": str,
        "dialog": str,
        "corpus_split": str,
    }
    manifest = pd.read_csv(path, sep="\t", dtype=text, keep_default_na=False)
    if manifest["session"].dtype == object:
        manifest["session"] = manifest["session"].astype(str)
    return manifest


def manifest_samples(manifest: pd.DataFrame, sample_rate: int) -> np.ndarray:
    """Each utterance's length in samples at `sample_rate`: the manifest's `samples` column (exact, from the
    headers at build time); for a table without it, `duration_s` × rate, rounded."""
    if "samples" in manifest:
        return np.array(manifest["samples"], dtype=np.int64)
    return np.round(manifest["duration_s"].to_numpy(np.float64) * sample_rate).astype(np.int64)


def count_table(manifest: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Counts per session × emotion (with totals) and per session × gender, one tidy table.

    Gender columns F and M always; a column `unknown` too when some utterance's gender is unknown.
    """
    gender = manifest["gender"].fillna("").replace("", "unknown")
    by_emotion = pd.crosstab(manifest["session"], manifest["emotion"]).reindex(columns=classes, fill_value=0)
    genders = ["F", "M"] + (["unknown"] if (gender == "unknown").any() else [])
    by_gender = pd.crosstab(manifest["session"], gender).reindex(columns=genders, fill_value=0)
    counts = pd.concat([by_emotion, by_gender], axis=1)
    counts["total"] = by_emotion.sum(axis=1)
    counts.loc["all"] = counts.sum(axis=0)
    counts.index = counts.index.map(str)
    return counts.rename_axis("session").reset_index()


def full_release_differences(manifest: pd.DataFrame) -> list[str]:
    """How the manifest's counts differ from the full 4-class IEMOCAP release (empty when equal)."""
    notes = []
    emotions = manifest["emotion"].value_counts().to_dict()
    sessions = manifest["session"].value_counts().to_dict()
    for name, expected in (("emotion", FULL_RELEASE["emotion"]), ("session", FULL_RELEASE["session"])):
        actual = emotions if name == "emotion" else sessions
        for key, count in expected.items():
            if actual.get(key, 0) != count:
                notes.append(f"{name} {key}: {actual.get(key, 0)} (full release: {count})")
    if len(manifest) != 5531:
        notes.insert(0, f"total: {len(manifest)} (full release: 5531)")
    return notes


AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff", ".opus"}


def corpus_fingerprint(settings: CorpusSettings) -> str:
    """A cheap fingerprint of the files the reader reads: label files by content, audio files by path and size.

    It changes when a file is added, removed, truncated or replaced by one of another size, or when a label
    file is edited. Audio modification times are left out on purpose: copying a corpus (or touching its
    files) must not retrain every stage downstream of the manifest. 10k audio files take well under a
    second (no audio file is opened). A root that does not exist yet (the demo builds it) gives 'absent'.
    """
    if not settings.root.is_dir():
        return "absent"
    digest = hashlib.sha256(settings.format.encode())
    for path in READERS[settings.format].source_files(settings):
        try:
            stat = os.stat(path)
        except OSError:
            digest.update(f"{path}\0missing\n".encode())
            continue
        is_audio = Path(path).suffix.lower() in AUDIO_SUFFIXES
        content = "" if is_audio else hashlib.sha256(Path(path).read_bytes()).hexdigest()
        digest.update(f"{path}\0{stat.st_size}\0{content}\n".encode())
    return digest.hexdigest()[:16]


def require_gender(manifest: pd.DataFrame, gender_weight: float, key: str = "mtl.gender_weight") -> None:
    """Stop when a gender loss is asked for (`gender_weight` > 0) but some utterance's gender is unknown."""
    if gender_weight <= 0:
        return
    unknown = manifest["gender"].fillna("").astype(str).isin(["", "unknown"])
    if unknown.any():
        example = manifest.loc[unknown, "utt_id"].iloc[0]
        raise ConfigError(
            f"config key '{key}' is {gender_weight} but the manifest's gender column is empty for {int(unknown.sum())} "
            f"utterance(s) (e.g. '{example}'); set {key}: 0 for this corpus or give it a gender column"
        )
