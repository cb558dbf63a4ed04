"""IEMOCAP: EmoEvaluation summaries → entries.

Layout (IEMOCAP_full_release):
    SessionN/sentences/wav/<dialog>/<utt_id>.wav
    SessionN/dialog/EmoEvaluation/<dialog>.txt     (only the .txt files directly in this folder)

Speaker gender is the first letter of the last '_'-segment of the utterance id; the dialog is
everything before that last '_'; the speaker is `Ses{session:02d}{gender}`. Every line of a label
file is accounted for: header, summary (a leading space is tolerated), evaluator and blank lines
are recognised; a line naming an utterance that is not a well-formed summary is an error, any
other line a warning with its file:line.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..errors import CorpusError
from .base import CorpusSettings, Entry, require_root

log = logging.getLogger(__name__)

SUMMARY_LINE = re.compile(
    r"^\s*\[\s*(?P<start>\d+(?:\.\d+)?)\s*-\s*(?P<end>\d+(?:\.\d+)?)\s*\]\t(?P<utt>\S+)\t(?P<label>\S+)\t\[.*\]\s*$"
)
EVALUATOR_LINE = re.compile(r"^\s*[A-Z]-[A-Za-z]*\d*\s*:")  # C-E2:, A-E3:, C-F1:, A-M1: …
MENTIONS_UTTERANCE = re.compile(r"Ses\d{2}[FM]_\S*_[FM]\d+")
UTT_ID = re.compile(r"^Ses(?P<session>\d{2})[FM]_.+_(?P<gender>[FM])\d+$")
SUBSET_MARKS = {"improvised": "impro", "scripted": "script"}


@dataclass(frozen=True)
class Turn:
    """One labelled utterance from an EmoEvaluation summary line."""

    utt_id: str
    label: str
    source: str  # "file:line" of the summary line


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        return path.read_text(encoding="latin-1")
    except OSError as err:
        raise CorpusError(f"label file '{path}' cannot be read ({err})") from err


def parse_emo_evaluation(path: Path) -> list[Turn]:
    """Summary lines of one EmoEvaluation file; no line is skipped without being recognised or reported."""
    turns = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("%") or EVALUATOR_LINE.match(line):
            continue
        match = SUMMARY_LINE.match(line)
        if match:
            turns.append(Turn(match["utt"], match["label"], f"{path}:{number}"))
        elif stripped.startswith("[") or MENTIONS_UTTERANCE.search(line):
            raise CorpusError(
                f"{path}:{number}: malformed summary line {stripped!r}; expected "
                "'[START - END]<TAB>UTT_ID<TAB>LABEL<TAB>[V, A, D]'"
            )
        else:
            log.warning(
                "%s:%d: unexpected line %r ignored (not a summary, evaluator or header line)", path, number, stripped
            )
    return turns


def label_files(session_dir: Path) -> list[Path]:
    """The .txt files directly in EmoEvaluation/ (no subfolders, no macOS '._' files), sorted."""
    folder = session_dir / "dialog" / "EmoEvaluation"
    if not folder.is_dir():
        raise CorpusError(f"label folder '{folder}' is missing; is corpus.root an IEMOCAP_full_release copy?")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix == ".txt" and not p.name.startswith("._"))


def turn_entry(turn: Turn, session_dir: Path, session: int) -> Entry:
    """The entry of one summary line, its id checked against its session folder."""
    match = UTT_ID.match(turn.utt_id)
    if not match:
        raise CorpusError(
            f"{turn.source}: utterance id '{turn.utt_id}' does not look like an IEMOCAP id (SesNN[FM]_<dialog>_[FM]NNN)"
        )
    if int(match["session"]) != session:
        raise CorpusError(f"{turn.source}: utterance '{turn.utt_id}' is listed under Session{session}")
    gender, dialog = match["gender"], turn.utt_id.rsplit("_", 1)[0]
    return Entry(
        utt_id=turn.utt_id,
        path=session_dir / "sentences" / "wav" / dialog / f"{turn.utt_id}.wav",
        label=turn.label,
        speaker=f"Ses{session:02d}{gender}",
        gender=gender,
        session=session,
        dialog=dialog,
        source=turn.source,
    )


def in_subset(dialog: str, subset: str) -> bool:
    """Whether a dialog belongs to `corpus.subset` (all, improvised: '…impro…', scripted: '…script…')."""
    return subset == "all" or SUBSET_MARKS[subset] in dialog


def read(settings: CorpusSettings) -> list[Entry]:
    """Entries of the sessions in `settings.sessions` and the dialogs of `settings.subset`."""
    require_root(settings)
    entries, outside = [], Counter()
    for session in sorted(settings.sessions):
        session_dir = settings.root / f"Session{session}"
        if not session_dir.is_dir():
            raise CorpusError(f"session folder '{session_dir}' is missing; check corpus.root and corpus.sessions")
        for label_file in label_files(session_dir):
            for turn in parse_emo_evaluation(label_file):
                entry = turn_entry(turn, session_dir, session)
                if in_subset(entry.dialog, settings.subset):
                    entries.append(entry)
                else:
                    outside[entry.label] += 1
    if outside:
        log.info("corpus.subset %s leaves out %d utterance(s) of other dialogs", settings.subset, sum(outside.values()))
    return entries


def source_files(settings: CorpusSettings) -> list[Path]:
    """The label files and wavs the reader reads (for the corpus fingerprint)."""
    files = []
    for session in sorted(settings.sessions):
        session_dir = settings.root / f"Session{session}"
        files += sorted((session_dir / "dialog" / "EmoEvaluation").glob("*.txt"))
        files += sorted((session_dir / "sentences" / "wav").glob("*/*.wav"))
    return files
