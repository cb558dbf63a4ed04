"""MSP-Podcast: `Audios/<FileName>` and `Labels/labels_consensus.csv`.

Columns read: FileName, EmoClass (A S H U F D C N O X; X = no agreement), SpkrID, Gender, Split_Set.
Speaker = SpkrID ("Unknown" is no speaker: such rows never decide speaker independence); dialog =
the podcast (`MSP-PODCAST_0001` of `MSP-PODCAST_0001_0008.wav`), session = the podcast number;
split: Train → train, Development → valid, Test1 → test, any other (Test2, Test3) in lower case.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ..errors import CorpusError
from .base import UNKNOWN_SPEAKER, CorpusSettings, Entry, gender_of, require_root

LABELS = Path("Labels") / "labels_consensus.csv"
COLUMNS = ("FileName", "EmoClass", "SpkrID", "Gender", "Split_Set")
FILE_NAME = re.compile(r"^(?P<dialog>MSP-PODCAST_(?P<podcast>\d+))_.+$")
SPLITS = {"Train": "train", "Development": "valid", "Test1": "test"}


def read_labels(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise CorpusError(f"label file '{path}' is missing; is corpus.root an MSP-Podcast copy?")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise CorpusError(f"label file '{path}' has no column(s) {missing}; its columns are {list(table.columns)}")
    return table


def row_entry(row: dict, audio_dir: Path, source: str) -> Entry:
    name = row["FileName"].strip()
    match = FILE_NAME.match(Path(name).stem)
    if not match:
        raise CorpusError(f"{source}: FileName '{name}' is not an MSP-Podcast name (MSP-PODCAST_<podcast>_<segment>)")
    speaker = row["SpkrID"].strip() or UNKNOWN_SPEAKER
    split = row["Split_Set"].strip()
    return Entry(
        utt_id=Path(name).stem,
        path=audio_dir / name,
        label=row["EmoClass"].strip(),
        speaker=UNKNOWN_SPEAKER if speaker.lower() == "unknown" else speaker,
        gender=gender_of(row["Gender"]),
        session=int(match["podcast"]),
        dialog=match["dialog"],
        source=source,
        split=SPLITS.get(split, split.lower()),
    )


def read(settings: CorpusSettings) -> list[Entry]:
    require_root(settings)
    path = settings.root / LABELS
    table = read_labels(path)
    audio_dir = settings.root / "Audios"
    return [row_entry(row, audio_dir, f"{path}:{i + 2}") for i, row in enumerate(table.to_dict("records"))]


def source_files(settings: CorpusSettings) -> list[Path]:
    return [settings.root / LABELS] + sorted((settings.root / "Audios").glob("*.wav"))
