"""Leave-one-session-out folds with validation drawn from the training sessions only.

Fold f tests session f. Validation (from the other sessions):
- `speaker`: one held-out speaker, chosen deterministically: the speaker of the session after the
  test session (cyclically) whose gender alternates with the fold index, so that validation is
  speaker-independent and folds cover both genders;
- `random`: a seeded, emotion-stratified fraction of the training utterances;
- `none`: no validation split.
"""

from __future__ import annotations

import pandas as pd
from sklearn.model_selection import train_test_split

from .errors import CorpusError

FOLD_COLUMNS = ["fold", "utt_id", "split"]


def validation_speaker(manifest: pd.DataFrame, test_session: int, fold_index: int) -> str:
    """The held-out validation speaker of one fold (deterministic, from the training sessions)."""
    sessions = sorted(manifest["session"].unique())
    position = sessions.index(test_session)
    order = sessions[position + 1 :] + sessions[:position]
    genders = ["F", "M"] if fold_index % 2 == 0 else ["M", "F"]
    speakers = set(manifest["speaker"])
    for session in order:
        for gender in genders:
            speaker = f"Ses{session:02d}{gender}"
            if speaker in speakers:
                return speaker
    raise CorpusError(f"fold {test_session}: the training sessions hold no speaker to validate on")


def fold_splits(
    manifest: pd.DataFrame, test_session: int, fold_index: int, validation: str, valid_fraction: float, seed: int
) -> pd.Series:
    """train|valid|test for every utterance of the manifest, for the fold testing `test_session`."""
    split = pd.Series("train", index=manifest.index)
    split[manifest["session"] == test_session] = "test"
    training = manifest[split == "train"]
    if validation == "speaker":
        speaker = validation_speaker(manifest, test_session, fold_index)
        split[manifest["speaker"] == speaker] = "valid"
    elif validation == "random":
        stratify = training["emotion"] if training["emotion"].value_counts().min() >= 2 else None
        _, valid = train_test_split(
            training.index, test_size=valid_fraction, random_state=seed + test_session, stratify=stratify
        )
        split[valid] = "valid"
    elif validation != "none":
        raise CorpusError(f"config key 'folds.validation': unknown value '{validation}'")
    return split


def make_folds(manifest: pd.DataFrame, validation: str = "speaker", valid_fraction: float = 0.1, seed: int = 42):
    """The folds table (fold, utt_id, split): one fold per session of the manifest."""
    sessions = sorted(int(s) for s in manifest["session"].unique())
    if len(sessions) < 2:
        raise CorpusError(f"leave-one-session-out needs at least 2 sessions; the manifest has {sessions}")
    tables = []
    for index, session in enumerate(sessions):
        split = fold_splits(manifest, session, index, validation, valid_fraction, seed)
        tables.append(pd.DataFrame({"fold": session, "utt_id": manifest["utt_id"], "split": split}))
    return pd.concat(tables, ignore_index=True)[FOLD_COLUMNS]


def fold_table(folds: pd.DataFrame, manifest: pd.DataFrame, fold: int) -> pd.DataFrame:
    """The manifest rows of one fold with their split, in manifest order."""
    rows = folds[folds["fold"] == fold]
    if rows.empty:
        raise CorpusError(f"fold {fold} is not in the folds table (folds: {sorted(folds['fold'].unique())})")
    table = manifest.merge(rows[["utt_id", "split"]], on="utt_id", how="inner", validate="one_to_one")
    if len(table) != len(rows):
        raise CorpusError(
            f"fold {fold}: {len(rows) - len(table)} utterance(s) of the folds table are not in the manifest"
        )
    return table
