"""CREMA-D: `AudioWAV/{actor}_{sentence}_{EMO}_{level}.wav` and `VideoDemographics.csv` (ActorID, Sex).

EMO is one of ANG DIS FEA HAP NEU SAD, level one of LO MD HI XX. Speaker = the actor id (e.g. 1001),
session = the actor number, dialog = the speaker; gender from the demographics table (an actor it
does not list, or a missing table, leaves gender empty with a warning).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd

from ..errors import CorpusError
from .base import CorpusSettings, Entry, gender_of, require_root

log = logging.getLogger(__name__)

FILE_NAME = re.compile(r"^(?P<actor>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<level>LO|MD|HI|XX)$")
DEMOGRAPHICS = "VideoDemographics.csv"


def actor_genders(root: Path) -> dict[str, str]:
    """ActorID → F|M from VideoDemographics.csv (empty when the file is absent)."""
    path = root / DEMOGRAPHICS
    if not path.is_file():
        log.warning("'%s' is missing: the gender of every CREMA-D speaker is unknown", path)
        return {}
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ("ActorID", "Sex") if c not in table.columns]
    if missing:
        raise CorpusError(f"'{path}' has no column(s) {missing}; its columns are {list(table.columns)}")
    return {row["ActorID"].strip(): gender_of(row["Sex"]) for row in table.to_dict("records")}


def file_entry(wav: Path, genders: dict[str, str]) -> Entry:
    match = FILE_NAME.match(wav.stem)
    if not match:
        raise CorpusError(
            f"CREMA-D file '{wav}' is not named ACTOR_SENTENCE_EMOTION_LEVEL.wav (e.g. 1001_DFA_ANG_XX.wav)"
        )
    actor = match["actor"]
    return Entry(
        utt_id=wav.stem,
        path=wav,
        label=match["emotion"],
        speaker=actor,
        gender=genders.get(actor, ""),
        session=int(actor),
        dialog=actor,
        source=str(wav),
    )


def read(settings: CorpusSettings) -> list[Entry]:
    require_root(settings)
    folder = settings.root / "AudioWAV"
    if not folder.is_dir():
        raise CorpusError(f"folder '{folder}' is missing; is corpus.root a CREMA-D copy?")
    genders = actor_genders(settings.root)
    entries = [file_entry(w, genders) for w in sorted(folder.glob("*.wav")) if not w.name.startswith("._")]
    unlisted = sorted({e.speaker for e in entries} - set(genders)) if genders else []
    if unlisted:
        log.warning("%s does not list actor(s) %s: their gender is unknown", DEMOGRAPHICS, unlisted)
    return entries


def source_files(settings: CorpusSettings) -> list[Path]:
    return [settings.root / DEMOGRAPHICS] + sorted((settings.root / "AudioWAV").glob("*.wav"))
