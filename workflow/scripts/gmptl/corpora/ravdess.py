"""RAVDESS (audio-only release): `Actor_NN/MM-VV-EE-II-SS-RR-AA.wav`.

MM modality (03 = audio-only; the only one read), VV vocal channel (01 speech, 02 song: left out
unless `corpus.include_song`), EE emotion (01 neutral, 02 calm, 03 happy, 04 sad, 05 angry,
06 fearful, 07 disgust, 08 surprised), II intensity, SS statement, RR repetition, AA actor
(odd = male, even = female). Speaker `Actor_AA`; session = the actor number; dialog = the speaker.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from ..errors import CorpusError
from .base import CorpusSettings, Entry, require_root

log = logging.getLogger(__name__)

FILE_NAME = re.compile(
    r"^(?P<modality>\d{2})-(?P<channel>\d{2})-(?P<emotion>\d{2})-\d{2}-\d{2}-\d{2}-(?P<actor>\d{2})$"
)
EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
CHANNELS = {"01": "speech", "02": "song"}


def actor_folders(root: Path) -> list[Path]:
    folders = sorted(p for p in root.glob("Actor_*") if p.is_dir())
    if not folders:
        raise CorpusError(f"corpus root '{root}' holds no Actor_NN folder; is it the RAVDESS audio-only release?")
    return folders


def wav_files(root: Path) -> list[Path]:
    return [p for folder in actor_folders(root) for p in sorted(folder.glob("*.wav")) if not p.name.startswith("._")]


def file_entry(wav: Path) -> Entry:
    """The entry of one RAVDESS file, its name checked field by field."""
    match = FILE_NAME.match(wav.stem)
    if not match:
        raise CorpusError(f"RAVDESS file '{wav}' is not named MM-VV-EE-II-SS-RR-AA.wav (seven 2-digit fields)")
    if match["modality"] != "03":
        raise CorpusError(f"RAVDESS file '{wav}' has modality {match['modality']}; only audio-only (03) is read")
    if match["channel"] not in CHANNELS or match["emotion"] not in EMOTIONS:
        raise CorpusError(f"RAVDESS file '{wav}' has an unknown vocal channel or emotion code")
    actor = int(match["actor"])
    if wav.parent.name != f"Actor_{actor:02d}":
        raise CorpusError(f"RAVDESS file '{wav}' names actor {actor:02d} but lies in '{wav.parent.name}'")
    return Entry(
        utt_id=wav.stem,
        path=wav,
        label=EMOTIONS[match["emotion"]],
        speaker=f"Actor_{actor:02d}",
        gender="M" if actor % 2 else "F",
        session=actor,
        dialog=f"Actor_{actor:02d}",
        source=str(wav),
    )


def read(settings: CorpusSettings) -> list[Entry]:
    require_root(settings)
    entries, songs = [], 0
    for wav in wav_files(settings.root):
        entry = file_entry(wav)
        if CHANNELS[wav.stem.split("-")[1]] == "song" and not settings.include_song:
            songs += 1
        else:
            entries.append(entry)
    if songs:
        log.info("left out %d song file(s) (vocal channel 02); set corpus.include_song: true to read them", songs)
    return entries


def source_files(settings: CorpusSettings) -> list[Path]:
    return sorted(settings.root.glob("Actor_*/*.wav"))
