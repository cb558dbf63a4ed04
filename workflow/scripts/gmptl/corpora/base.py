"""What every corpus reader shares: settings, the listed utterance, and the manifest assembly.

A reader turns its corpus's layout into `Entry` records (raw label, speaker, session, …, and where
each was listed). `assemble` then does what no reader may do differently: apply the label map and
count what it drops, reject duplicate ids, check every audio file (missing, truncated, unreadable,
other format), build the manifest table and stop when a configured class is left without utterances.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..audio import NonFiniteAudioError, TruncatedAudioError, check_format, checked_audio_info, resampled_frames
from ..errors import AudioError, CorpusError
from .labels import LABEL_VOCABULARY, resolve_label_map

log = logging.getLogger(__name__)

# The contract columns, then `samples`: the utterance's length in samples at corpus.sample_rate (after any
# resampling), the one source of its length for frame counts, checks and plans.
MANIFEST_COLUMNS = ["utt_id", "path", "session", "speaker", "gender", "emotion", "dialog", "duration_s", "samples"]
SPLIT_COLUMN = "corpus_split"  # added only for a corpus with its own train/valid/test split
UNKNOWN_SPEAKER = "Unknown"
TABLE_ROLES = ("path", "emotion", "speaker", "gender", "session", "split")
REQUIRED_ROLES = ("path", "emotion", "speaker")


@dataclass(frozen=True)
class CorpusSettings:
    """The `corpus` config block, validated and with the label map resolved for the format."""

    root: Path
    format: str = "iemocap"
    classes: tuple[str, ...] = ("neu", "hap", "ang", "sad")
    label_map: Mapping[str, str] = field(default_factory=dict)
    sessions: tuple[int, ...] = (1, 2, 3, 4, 5)
    subset: str = "all"
    table: Path | None = None
    columns: Mapping[str, str] = field(default_factory=dict)  # role → column, only where not named like the role
    include_song: bool = False
    sample_rate: int = 16000
    on_format_mismatch: str = "convert"
    on_missing_audio: str = "error"
    check_full_release: bool = True

    @classmethod
    def from_config(cls, corpus: Mapping) -> CorpusSettings:
        """Settings from the validated `corpus` block (a missing key takes its default)."""
        corpus_format = corpus.get("format", "iemocap")
        classes = tuple(corpus.get("classes", cls.classes))
        table = corpus.get("table")
        return cls(
            root=Path(corpus["root"]),
            format=corpus_format,
            classes=classes,
            label_map=resolve_label_map(corpus_format, corpus.get("label_map"), list(classes)),
            sessions=tuple(corpus.get("sessions", cls.sessions)),
            subset=corpus.get("subset", "all"),
            table=None if table is None else Path(table),
            columns=dict(corpus.get("columns") or {}),
            include_song=corpus.get("include_song", False),
            sample_rate=corpus.get("sample_rate", 16000),
            on_format_mismatch=corpus.get("on_format_mismatch", "convert"),
            on_missing_audio=corpus.get("on_missing_audio", "error"),
            check_full_release=corpus.get("check_full_release", True),
        )

    @property
    def table_path(self) -> Path:
        """The table file of format `table`: `corpus.table`, relative to `corpus.root` unless absolute."""
        if self.table is None:
            raise CorpusError("config key 'corpus.table' is missing; format 'table' needs the table file")
        return self.table if self.table.is_absolute() else self.root / self.table


@dataclass(frozen=True)
class Entry:
    """One utterance as a corpus lists it, before the label map."""

    utt_id: str
    path: Path
    label: str  # raw label
    speaker: str
    gender: str  # "F", "M" or "" when unknown
    session: int | str
    dialog: str
    source: str  # where it is listed: "file:line", "file row N" or the audio file itself
    split: str = ""  # train | valid | test | another predefined split | "" (none)


@dataclass
class CorpusReading:
    """The manifest and the accounting of everything that did not make it in."""

    manifest: pd.DataFrame
    dropped: Counter = field(default_factory=Counter)  # raw label → utterances dropped by the label map
    skipped: list[str] = field(default_factory=list)  # "utt_id: why" (audio missing/truncated, on_missing_audio: skip)


def require_root(settings: CorpusSettings) -> None:
    if not settings.root.is_dir():
        raise CorpusError(
            f"corpus root '{settings.root}' does not exist; set corpus.root to your {settings.format} corpus folder"
        )


def apply_label_map(entries: list[Entry], settings: CorpusSettings) -> tuple[list[Entry], Counter]:
    """Entries whose raw label is mapped; dropped labels counted, and warned about when not standard."""
    kept, dropped, first_seen = [], Counter(), {}
    for entry in entries:
        if entry.label in settings.label_map:
            kept.append(entry)
        else:
            dropped[entry.label] += 1
            first_seen.setdefault(entry.label, entry.source)
    vocabulary = LABEL_VOCABULARY[settings.format]
    standard = {k: v for k, v in dropped.items() if vocabulary is not None and k in vocabulary}
    if standard:
        log.info("dropped by the label map: %s", ", ".join(f"{k} {v}" for k, v in sorted(standard.items())))
    for label in sorted(set(dropped) - set(standard)):
        kind = "label" if vocabulary is None else f"{settings.format} label"
        log.warning(
            "dropped %d utterance(s) with %s '%s' (first at %s): it is not in corpus.label_map%s",
            dropped[label],
            kind,
            label,
            first_seen[label],
            "" if vocabulary is None else f" nor a standard {settings.format} label",
        )
    return kept, dropped


def check_unique(entries: list[Entry]) -> None:
    seen: dict[str, str] = {}
    for entry in entries:
        if entry.utt_id in seen:
            raise CorpusError(f"{entry.source}: utterance '{entry.utt_id}' is also listed at {seen[entry.utt_id]}")
        seen[entry.utt_id] = entry.source


def audio_row(entry: Entry, settings: CorpusSettings) -> dict | str:
    """The manifest row of `entry`, or why its audio is skipped (only with on_missing_audio: skip)."""
    skip = settings.on_missing_audio == "skip"
    if not entry.path.is_file():
        if skip:
            return f"{entry.utt_id}: its audio '{entry.path}' is missing"
        raise AudioError(
            f"{entry.source}: the audio file of '{entry.utt_id}' is missing ('{entry.path}'); restore it, or set "
            "corpus.on_missing_audio: skip"
        )
    try:
        info = checked_audio_info(entry.path)
    except TruncatedAudioError as err:
        if skip:
            return f"{entry.utt_id}: {err.detail}"
        raise AudioError(f"{entry.source}: {err}; or set corpus.on_missing_audio: skip") from err
    except NonFiniteAudioError as err:
        if skip:
            return f"{entry.utt_id}: its audio {err.detail}"
        raise AudioError(f"{entry.source}: {err}; or set corpus.on_missing_audio: skip") from err
    needs_conversion = check_format(entry.path, info, settings.sample_rate, settings.on_format_mismatch)
    return {
        "utt_id": entry.utt_id,
        "path": str(entry.path),
        "session": entry.session,
        "speaker": entry.speaker,
        "gender": entry.gender,
        "emotion": settings.label_map[entry.label],
        "dialog": entry.dialog,
        "duration_s": round(info.duration_s, 6),
        "samples": resampled_frames(info.frames, info.sample_rate, settings.sample_rate),
        "corpus_split": entry.split,
        "_needs_conversion": needs_conversion,
    }


def assemble(entries: list[Entry], settings: CorpusSettings) -> CorpusReading:
    """The manifest (columns `MANIFEST_COLUMNS` [+ `corpus_split`], sorted by utt_id) of a reader's entries."""
    check_unique(entries)
    kept, dropped = apply_label_map(entries, settings)
    rows, skipped = [], []
    for entry in kept:
        row = audio_row(entry, settings)
        if isinstance(row, str):
            log.warning("skipping %s", row)
            skipped.append(row)
        else:
            rows.append(row)
    if skipped:
        log.warning("skipped %d labelled utterance(s) whose audio is missing, truncated or non-finite", len(skipped))
    if not rows:
        raise CorpusError(
            f"no utterance of '{settings.root}' is left after the label map {sorted(settings.label_map)}; "
            "check corpus.root, corpus.format, corpus.classes and corpus.label_map"
        )
    frame = pd.DataFrame(rows).sort_values("utt_id", kind="stable").reset_index(drop=True)
    if not frame["corpus_split"].fillna("").astype(str).ne("").any():
        frame = frame.drop(columns="corpus_split")  # a corpus without its own split keeps the 8 contract columns
    converted = int(frame.pop("_needs_conversion").sum())
    if converted:
        log.warning(
            "%d audio file(s) are not %d Hz mono; they are converted at load time", converted, settings.sample_rate
        )
    require_every_class(set(frame["emotion"]), settings, dropped, len(skipped))
    return CorpusReading(frame[[c for c in [*MANIFEST_COLUMNS, SPLIT_COLUMN] if c in frame]], dropped, skipped)


def require_every_class(present: set[str], settings: CorpusSettings, dropped: Counter, skipped: int = 0) -> None:
    """Stop when a class of `corpus.classes` has no utterance left (a model cannot learn a class it never sees).

    The sentence names the empty classes, every raw label the map dropped with its count, and the
    raw labels the format's default map would send to the empty classes when `corpus.label_map` replaces it.
    """
    empty = [c for c in settings.classes if c not in present]
    if not empty:
        return
    drops = ", ".join(f"{label} {count}" for label, count in sorted(dropped.items())) or "none"
    lost = f"; {skipped} skipped for missing or truncated audio" if skipped else ""
    raise CorpusError(
        f"no utterance of class(es) {empty} of corpus.classes is left in '{settings.root}'{reader_filters(settings)} "
        f"after corpus.label_map (labels dropped: {drops}{lost}){default_map_hint(empty, settings, dropped)}; "
        "map raw labels to them in corpus.label_map or remove them from corpus.classes"
    )


def reader_filters(settings: CorpusSettings) -> str:
    """' (corpus.sessions …, corpus.subset …)' for IEMOCAP, whose reader reads only part of the tree; else ''."""
    if settings.format != "iemocap":
        return ""
    return f" (corpus.sessions {list(settings.sessions)}, corpus.subset {settings.subset})"


def default_map_hint(empty: list[str], settings: CorpusSettings, dropped: Counter) -> str:
    """', which the <format> default map fills from …' when a user map left out labels the default would keep."""
    default = resolve_label_map(settings.format, None, list(settings.classes))
    if dict(settings.label_map) == default:
        return ""
    rescued = sorted(raw for raw, name in default.items() if name in empty and dropped.get(raw))
    if not rescued:
        return ""
    return f", which the {settings.format} default map fills from {rescued} (leave corpus.label_map unset to use it)"


def gender_of(word: str) -> str:
    """'F' / 'M' from the spellings corpora use (F, female, Female, M, male …); '' when unknown."""
    value = str(word).strip().lower()
    if value in ("f", "female", "woman"):
        return "F"
    if value in ("m", "male", "man"):
        return "M"
    return ""
