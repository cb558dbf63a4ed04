"""IEMOCAP reader: EmoEvaluation summaries + wav headers → the manifest table.

Layout (IEMOCAP_full_release):
    SessionN/sentences/wav/<dialog>/<utt_id>.wav
    SessionN/dialog/EmoEvaluation/<dialog>.txt     (only the .txt files directly in this folder)

Speaker gender is the first letter of the last '_'-segment of the utterance id; the dialog is
everything before that last '_'. Labels go through a configurable map; unmapped labels are dropped
and counted, never silently.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .audio import audio_info, check_format
from .errors import AudioError, CorpusError

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["utt_id", "path", "session", "speaker", "gender", "emotion", "dialog", "duration_s"]
SUMMARY_LINE = re.compile(
    r"^\[\s*(?P<start>\d+(?:\.\d+)?)\s*-\s*(?P<end>\d+(?:\.\d+)?)\s*\]\t(?P<utt>\S+)\t(?P<label>\S+)\t\[.*\]\s*$"
)
UTT_ID = re.compile(r"^Ses(?P<session>\d{2})[FM]_.+_(?P<gender>[FM])\d+$")
FULL_RELEASE = {
    "emotion": {"neu": 1708, "hap": 1636, "ang": 1103, "sad": 1084},
    "session": {1: 1085, 2: 1023, 3: 1151, 4: 1031, 5: 1241},
}


@dataclass(frozen=True)
class Turn:
    """One labelled utterance from an EmoEvaluation summary line."""

    utt_id: str
    label: str
    source: str  # "file:line" of the summary line


def parse_emo_evaluation(path: Path) -> list[Turn]:
    """Summary lines of one EmoEvaluation file; evaluator and header lines are skipped.

    A line that starts with '[' must be a well-formed TAB-separated summary line.
    """
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        text = path.read_text(encoding="latin-1")
    except OSError as err:
        raise CorpusError(f"label file '{path}' cannot be read ({err})") from err
    turns = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.startswith("["):
            continue
        match = SUMMARY_LINE.match(line)
        if not match:
            raise CorpusError(
                f"{path}:{number}: malformed summary line {line.strip()!r}; expected "
                "'[START - END]<TAB>UTT_ID<TAB>LABEL<TAB>[V, A, D]'"
            )
        turns.append(Turn(match["utt"], match["label"], f"{path}:{number}"))
    return turns


def label_files(session_dir: Path) -> list[Path]:
    """The .txt files directly in EmoEvaluation/ (no subfolders, no macOS '._' files), sorted."""
    folder = session_dir / "dialog" / "EmoEvaluation"
    if not folder.is_dir():
        raise CorpusError(f"label folder '{folder}' is missing; is corpus.root an IEMOCAP_full_release copy?")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix == ".txt" and not p.name.startswith("._"))


def utterance_fields(turn: Turn, session: int) -> dict:
    """session, speaker, gender and dialog of one utterance id, checked against its session folder."""
    match = UTT_ID.match(turn.utt_id)
    if not match:
        raise CorpusError(
            f"{turn.source}: utterance id '{turn.utt_id}' does not look like an IEMOCAP id (SesNN[FM]_<dialog>_[FM]NNN)"
        )
    if int(match["session"]) != session:
        raise CorpusError(f"{turn.source}: utterance '{turn.utt_id}' is listed under Session{session}")
    gender = match["gender"]
    return {
        "session": session,
        "speaker": f"Ses{session:02d}{gender}",
        "gender": gender,
        "dialog": turn.utt_id.rsplit("_", 1)[0],
    }


def read_session(
    root: Path,
    session: int,
    label_map: dict[str, str],
    sample_rate: int,
    on_format_mismatch: str,
    on_missing_audio: str,
    dropped: Counter,
    missing: list[str],
) -> list[dict]:
    """Manifest rows of one session; dropped labels and skipped ids are added to `dropped` / `missing`."""
    session_dir = root / f"Session{session}"
    if not session_dir.is_dir():
        raise CorpusError(f"session folder '{session_dir}' is missing; check corpus.root and corpus.sessions")
    rows, seen = [], {}
    for label_file in label_files(session_dir):
        for turn in parse_emo_evaluation(label_file):
            if turn.label not in label_map:
                dropped[turn.label] += 1
                continue
            if turn.utt_id in seen:
                raise CorpusError(f"{turn.source}: utterance '{turn.utt_id}' is also labelled at {seen[turn.utt_id]}")
            seen[turn.utt_id] = turn.source
            fields = utterance_fields(turn, session)
            wav = session_dir / "sentences" / "wav" / fields["dialog"] / f"{turn.utt_id}.wav"
            if not wav.is_file():
                if on_missing_audio == "skip":
                    log.warning("skipping %s: its wav '%s' is missing", turn.utt_id, wav)
                    missing.append(turn.utt_id)
                    continue
                raise AudioError(
                    f"{turn.source}: the wav of '{turn.utt_id}' is missing ('{wav}'); restore it, or set "
                    "corpus.on_missing_audio: skip"
                )
            info = audio_info(wav)
            check_format(wav, info, sample_rate, on_format_mismatch)
            rows.append(
                {
                    "utt_id": turn.utt_id,
                    "path": str(wav),
                    **fields,
                    "emotion": label_map[turn.label],
                    "duration_s": round(info.duration_s, 6),
                    "_needs_conversion": info.sample_rate != sample_rate or info.channels != 1,
                }
            )
    return rows


def build_manifest(
    root: str | Path,
    sessions: list[int],
    label_map: dict[str, str],
    classes: list[str],
    sample_rate: int = 16000,
    on_format_mismatch: str = "convert",
    on_missing_audio: str = "error",
) -> pd.DataFrame:
    """Read an IEMOCAP tree into the manifest (columns `MANIFEST_COLUMNS`, sorted by utt_id)."""
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"corpus root '{root}' does not exist; set corpus.root to your IEMOCAP_full_release folder")
    dropped: Counter = Counter()
    missing: list[str] = []
    rows = []
    for session in sorted(sessions):
        rows += read_session(
            root, session, label_map, sample_rate, on_format_mismatch, on_missing_audio, dropped, missing
        )
    if dropped:
        log.info("dropped by the label map: %s", ", ".join(f"{k} {v}" for k, v in sorted(dropped.items())))
    if missing:
        log.warning("skipped %d labelled utterance(s) whose wav is missing", len(missing))
    if not rows:
        raise CorpusError(
            f"no utterance of '{root}' is left after the label map {sorted(label_map)}; "
            "check corpus.root, corpus.sessions and corpus.label_map"
        )
    frame = pd.DataFrame(rows).sort_values("utt_id", kind="stable").reset_index(drop=True)
    converted = int(frame.pop("_needs_conversion").sum())
    if converted:
        log.warning("%d wav file(s) are not %d Hz mono; they are converted at load time", converted, sample_rate)
    absent = [c for c in classes if c not in set(frame["emotion"])]
    if absent:
        log.warning("no utterance of class(es) %s in the corpus", absent)
    return frame[MANIFEST_COLUMNS]


def count_table(manifest: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Counts per session × emotion (with totals) and per session × gender, one tidy table."""
    by_emotion = pd.crosstab(manifest["session"], manifest["emotion"]).reindex(columns=classes, fill_value=0)
    by_gender = pd.crosstab(manifest["session"], manifest["gender"]).reindex(columns=["F", "M"], fill_value=0)
    table = pd.concat([by_emotion, by_gender], axis=1)
    table["total"] = by_emotion.sum(axis=1)
    table.loc["all"] = table.sum(axis=0)
    table.index = table.index.map(str)
    return table.rename_axis("session").reset_index()


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
