"""EmoDB (Berlin Database of Emotional Speech): `wav/{speaker}{text}{emotion}{version}.wav`, e.g. 03a01Fa.wav.

Emotion letters W anger, L boredom, E disgust, A fear, F happiness, T sadness, N neutral; speakers
03 10 11 12 15 are male, 08 09 13 14 16 female. Speaker = the 2-digit code, session = its number,
dialog = the speaker.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import CorpusError
from .base import CorpusSettings, Entry, require_root

FILE_NAME = re.compile(r"^(?P<speaker>\d{2})(?P<text>[a-z]\d{2})(?P<emotion>[A-Z])(?P<version>[a-z]+)$")
GENDERS = {"03": "M", "10": "M", "11": "M", "12": "M", "15": "M", "08": "F", "09": "F", "13": "F", "14": "F", "16": "F"}


def file_entry(wav: Path) -> Entry:
    match = FILE_NAME.match(wav.stem)
    if not match:
        raise CorpusError(f"EmoDB file '{wav}' is not named <speaker><text><emotion><version>.wav (e.g. 03a01Fa.wav)")
    speaker = match["speaker"]
    if speaker not in GENDERS:
        raise CorpusError(f"EmoDB file '{wav}' names speaker {speaker}, which EmoDB does not have ({sorted(GENDERS)})")
    return Entry(
        utt_id=wav.stem,
        path=wav,
        label=match["emotion"],
        speaker=speaker,
        gender=GENDERS[speaker],
        session=int(speaker),
        dialog=speaker,
        source=str(wav),
    )


def read(settings: CorpusSettings) -> list[Entry]:
    require_root(settings)
    folder = settings.root / "wav"
    if not folder.is_dir():
        raise CorpusError(f"folder '{folder}' is missing; is corpus.root an EmoDB copy?")
    return [file_entry(w) for w in sorted(folder.glob("*.wav")) if not w.name.startswith("._")]


def source_files(settings: CorpusSettings) -> list[Path]:
    return sorted((settings.root / "wav").glob("*.wav"))
