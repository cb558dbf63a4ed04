"""A corpus listed in one TSV/CSV table: a row per utterance, columns mapped by `corpus.columns`.

Roles: `path`, `emotion`, `speaker` (required); `gender`, `session`, `split` (optional). Each role's
column is named like the role unless `corpus.columns` says otherwise; an optional column named
explicitly must exist. Paths are absolute or relative to the table's folder; the utterance id is the
path relative to that folder without its extension. Without a `session` column the speaker is the
session; the dialog is the speaker. A speaker `Unknown` is no speaker (it never decides speaker
independence). Sources are named "table:line" (the header is line 1).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pandas as pd

from ..errors import CorpusError
from .base import REQUIRED_ROLES, TABLE_ROLES, CorpusSettings, Entry, gender_of

SEPARATORS = {".tsv": "\t", ".tab": "\t", ".txt": "\t", ".csv": ","}
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "valid": "valid",
    "validation": "valid",
    "val": "valid",
    "dev": "valid",
    "development": "valid",
    "test": "test",
}


def read_table(path: Path) -> pd.DataFrame:
    """The table as strings (empty cells stay empty strings), separator by extension."""
    if not path.is_file():
        raise CorpusError(f"corpus table '{path}' does not exist; check corpus.table (relative to corpus.root)")
    separator = SEPARATORS.get(path.suffix.lower())
    if separator is None:
        raise CorpusError(f"corpus table '{path}': unknown extension '{path.suffix}'; name it .tsv or .csv")
    try:  # the header read as a row, so that a row with more cells than it is an error naming its line
        rows = pd.read_csv(path, sep=separator, header=None, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise CorpusError(f"corpus table '{path}' is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as err:
        raise CorpusError(f"corpus table '{path}' cannot be parsed ({err})") from err
    header = rows.iloc[0].str.strip().tolist()
    repeated = sorted({name for name in header if name and header.count(name) > 1})  # unnamed columns may repeat
    if repeated:
        raise CorpusError(f"corpus table '{path}' has column(s) {repeated} more than once")
    return pd.DataFrame(rows.iloc[1:].to_numpy(), columns=header)


def role_columns(table: pd.DataFrame, settings: CorpusSettings, path: Path) -> dict[str, str]:
    """Role → column of `table`, for the roles present; a required or explicitly named column must exist."""
    found = {}
    for role in TABLE_ROLES:
        column = settings.columns.get(role, role)
        if column in table.columns:
            found[role] = column
        elif role in REQUIRED_ROLES or role in settings.columns:
            raise CorpusError(
                f"corpus table '{path}' has no column '{column}' (role '{role}'; name its column with "
                f"corpus.columns.{role}); its columns are {list(table.columns)}"
            )
    return found


def utterance_id(audio: Path, folder: Path) -> str:
    return Path(os.path.relpath(audio, folder)).with_suffix("").as_posix()


def row_entry(row: dict, columns: dict[str, str], folder: Path, source: str) -> Entry:
    cell = {role: str(row[column]).strip() for role, column in columns.items()}
    for role in ("path", "speaker"):
        if not cell[role]:
            raise CorpusError(f"{source}: the {role} cell (column '{columns[role]}') is empty")
    audio = folder / cell["path"]  # an absolute path stays itself
    gender = gender_of(cell.get("gender", ""))
    if cell.get("gender") and not gender:
        raise CorpusError(
            f"{source}: gender '{cell['gender']}' is not F/M/female/male; leave the cell empty when unknown"
        )
    split = cell.get("split", "")
    if split and split.lower() not in SPLIT_ALIASES:
        raise CorpusError(f"{source}: split '{split}' is not train, valid (validation, dev) or test")
    session = cell.get("session", cell["speaker"])
    if not session:
        raise CorpusError(f"{source}: the session cell (column '{columns['session']}') is empty")
    return Entry(
        utt_id=utterance_id(audio, folder),
        path=audio,
        label=cell["emotion"],
        speaker=cell["speaker"],
        gender=gender,
        session=int(session) if session.isdigit() else session,
        dialog=cell["speaker"],
        source=source,
        split=SPLIT_ALIASES.get(split.lower(), ""),
    )


def read(settings: CorpusSettings) -> list[Entry]:
    path = settings.table_path
    table = read_table(path)
    columns = role_columns(table, settings, path)
    entries = [
        row_entry(row, columns, path.parent, f"{path}:{number + 2}")
        for number, row in enumerate(table.to_dict("records"))
    ]
    if not all(isinstance(e.session, int) for e in entries):  # one type per column (a session or a speaker)
        entries = [replace(e, session=str(e.session)) for e in entries]
    return entries


def source_files(settings: CorpusSettings) -> list[Path]:
    """The table and every file it lists (the table alone when it cannot be read)."""
    path = settings.table_path
    try:
        table = read_table(path)
        column = settings.columns.get("path", "path")
        listed = [Path(p) for p in table[column] if p]
    except (CorpusError, KeyError):
        return [path]
    return [path] + [path.parent / p for p in listed]  # an absolute path stays itself
