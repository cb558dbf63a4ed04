"""Folds of a manifest under one protocol (see `gmptl.protocols`), validation from training data only.

Every protocol but `predefined` tests each utterance exactly once. Validation (drawn from the fold's
training rows; with `predefined`, the corpus's own validation split when it has one):
- `speaker`: whole training speakers, chosen deterministically: in session order after the first
  test session (cyclically), skipping sessions that hold test rows (so IEMOCAP's speaker protocol
  keeps the test speaker's session partner in training); the first speaker of the gender that
  alternates with the fold index, then the next ones until they hold `valid_fraction` of the
  training utterances (on IEMOCAP one speaker, as one holds ~12 %);
- `random`: a seeded, emotion-stratified fraction of the training utterances;
- `none`: no validation split.
Speakers named "Unknown" are no speakers: never validation speakers, and in `kfold` each such
utterance is its own group.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from .corpus import UNKNOWN_SPEAKER
from .errors import ConfigError, CorpusError
from .protocols import PROTOCOLS, iemocap_speaker_fold

log = logging.getLogger(__name__)

FOLD_COLUMNS = ["fold", "utt_id", "split"]
PREDEFINED = ("train", "valid", "test")


@dataclass(frozen=True)
class TestGroup:
    """The rows one fold tests and what they are (for the log)."""

    fold: int
    name: str
    mask: pd.Series


def natural_order(values: Iterable) -> list:
    """Distinct values sorted numerically when they look like numbers, else as text."""

    def key(value):
        text = str(value)
        return (0, int(text), "") if text.isdigit() else (1, 0, text)

    return sorted(set(values), key=key)


def speakers(manifest: pd.DataFrame) -> pd.Series:
    return manifest["speaker"].astype(str)


def known_speakers(manifest: pd.DataFrame) -> pd.Series:
    return speakers(manifest) != UNKNOWN_SPEAKER


def session_groups(manifest: pd.DataFrame) -> list[TestGroup]:
    """One fold per session; fold id = the session when sessions are numbers, else its rank (1-based)."""
    sessions = natural_order(manifest["session"])
    if len(sessions) < 2:
        raise CorpusError(f"leave-one-session-out needs at least 2 sessions; the manifest has {sessions}")
    numeric = all(str(s).isdigit() for s in sessions)
    return [
        TestGroup(int(s) if numeric else i + 1, f"session {s}", manifest["session"] == s)
        for i, s in enumerate(sessions)
    ]


def speaker_groups(manifest: pd.DataFrame) -> list[TestGroup]:
    """One fold per speaker (IEMOCAP: SesNNF → 2N-1, SesNNM → 2N; else the rank, 1-based)."""
    unknown = int((~known_speakers(manifest)).sum())
    if unknown:
        raise CorpusError(
            f"leave-one-speaker-out cannot test the {unknown} utterance(s) of speaker '{UNKNOWN_SPEAKER}'; "
            "use folds.protocol: kfold or predefined"
        )
    names = natural_order(speakers(manifest))
    if len(names) < 2:
        raise CorpusError(f"leave-one-speaker-out needs at least 2 speakers; the manifest has {names}")
    iemocap = [iemocap_speaker_fold(name) for name in names]
    ids = iemocap if None not in iemocap else list(range(1, len(names) + 1))
    return [TestGroup(i, f"speaker {name}", speakers(manifest) == name) for i, name in zip(ids, names, strict=True)]


def kfold_groups(manifest: pd.DataFrame, k: int, seed: int) -> list[TestGroup]:
    """`k` speaker-disjoint folds, emotion-stratified as far as the speakers allow, seeded."""
    from sklearn.model_selection import StratifiedGroupKFold

    groups = speakers(manifest).where(known_speakers(manifest), UNKNOWN_SPEAKER + "#" + manifest["utt_id"].astype(str))
    if groups.nunique() < k:
        raise CorpusError(
            f"folds.k is {k} but the manifest has only {groups.nunique()} speaker(s) to spread over folds"
        )
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = []
    for i, (_, test) in enumerate(splitter.split(manifest, manifest["emotion"], groups), start=1):
        mask = pd.Series(False, index=manifest.index)
        mask.iloc[test] = True
        tested = natural_order(speakers(manifest)[mask & known_speakers(manifest)])
        shown = ", ".join(map(str, tested[:10])) + (", …" if len(tested) > 10 else "")
        folds.append(TestGroup(i, f"{len(tested)} speaker(s): {shown}", mask))
    return folds


def corpus_split(manifest: pd.DataFrame) -> pd.Series | None:
    """The corpus's own split of every utterance ('' where it has none), or None without the column."""
    return manifest["corpus_split"].fillna("").astype(str) if "corpus_split" in manifest else None


def predefined_groups(manifest: pd.DataFrame) -> list[TestGroup]:
    """One fold testing the corpus's own test split."""
    split = corpus_split(manifest)
    if split is None or (split == "").all():
        raise CorpusError(
            "folds.protocol predefined needs the corpus's own split (MSP-Podcast's Split_Set, a table's split column); "
            "this manifest has none"
        )
    if (split == "").any():
        example = manifest.loc[split == "", "utt_id"].iloc[0]
        raise CorpusError(
            f"folds.protocol predefined: {int((split == '').sum())} utterance(s) have no split (e.g. '{example}')"
        )
    for needed in ("train", "test"):
        if not (split == needed).any():
            raise CorpusError(f"folds.protocol predefined: the corpus's split has no {needed} utterance")
    warn_shared_speakers(manifest, split)
    return [TestGroup(1, "the corpus's test split", split == "test")]


def warn_shared_speakers(manifest: pd.DataFrame, split: pd.Series) -> None:
    known = known_speakers(manifest) & split.isin(PREDEFINED)
    per_speaker = split[known].groupby(speakers(manifest)[known]).nunique()
    shared = natural_order(per_speaker[per_speaker > 1].index)
    if shared:
        log.warning("speaker(s) %s appear in more than one predefined split (train/valid/test)", shared)


def test_groups(manifest: pd.DataFrame, protocol: str, k: int, seed: int) -> list[TestGroup]:
    if protocol == "session":
        return session_groups(manifest)
    if protocol == "speaker":
        return speaker_groups(manifest)
    if protocol == "kfold":
        return kfold_groups(manifest, k, seed)
    if protocol == "predefined":
        return predefined_groups(manifest)
    raise ConfigError(f"config key 'folds.protocol': unknown value '{protocol}' (known: {', '.join(PROTOCOLS)})")


def validation_speakers(
    manifest: pd.DataFrame, training: pd.Series, test: pd.Series, fold_index: int, fraction: float
) -> list[str]:
    """Held-out validation speakers of one fold (deterministic; see the module docstring)."""
    names = speakers(manifest)
    sessions = natural_order(manifest["session"])
    test_sessions = set(manifest.loc[test, "session"])
    start = min(sessions.index(s) for s in test_sessions) if test_sessions else -1  # deploy: from the first session
    order = [s for s in sessions[start + 1 :] + sessions[: start + 1] if s not in test_sessions]
    eligible = training & known_speakers(manifest) & ~names.isin(set(names[test]))
    rows = pd.DataFrame({"rank": manifest["session"].map({s: i for i, s in enumerate(order)}), "speaker": names})
    rows = rows[eligible & rows["rank"].notna()].sort_values("rank").drop_duplicates("speaker")  # earliest session
    rank = rows.set_index("speaker")["rank"].to_dict()
    position = {name: i for i, name in enumerate(natural_order(rank))}
    candidates = sorted(rank, key=lambda name: (rank[name], position[name]))
    if not candidates:
        return []
    genders = manifest["gender"].groupby(names).first()
    preferred = "F" if fold_index % 2 == 0 else "M"
    first = next((name for name in candidates if genders.get(name) == preferred), candidates[0])
    sizes = names[training].value_counts()
    chosen, held = [first], int(sizes[first])
    for name in candidates:
        if held >= fraction * int(training.sum()):
            break
        if name != first:
            chosen.append(name)
            held += int(sizes[name])
    return chosen


def draw_validation(
    manifest: pd.DataFrame, split: pd.Series, group: TestGroup, index: int, validation: str, fraction: float, seed: int
) -> str:
    """Mark validation rows among the training rows of `split` (in place); say what was drawn."""
    training = split == "train"
    if validation == "speaker":
        chosen = validation_speakers(manifest, training, group.mask, index, fraction)
        if not chosen:
            raise CorpusError(f"fold {group.fold}: the training data hold no speaker to validate on")
        split[training & speakers(manifest).isin(chosen)] = "valid"
        return f"speaker(s) {', '.join(chosen)}"
    if validation == "random":
        from sklearn.model_selection import train_test_split

        rows = manifest[training]
        counts = rows["emotion"].value_counts()
        stratifiable = counts.min() >= 2 and fraction * len(rows) >= len(counts)  # sklearn needs a row per class
        stratify = rows["emotion"] if stratifiable else None
        _, valid = train_test_split(rows.index, test_size=fraction, random_state=seed + group.fold, stratify=stratify)
        split[valid] = "valid"
        return f"random {fraction:.0%} of training"
    if validation != "none":
        raise ConfigError(f"config key 'folds.validation': unknown value '{validation}'")
    return "none"


def fold_splits(
    manifest: pd.DataFrame, group: TestGroup, index: int, protocol: str, validation: str, fraction: float, seed: int
) -> pd.Series:
    """train|valid|test (or '' for rows outside the fold) for every utterance of the manifest."""
    split = pd.Series("train", index=manifest.index)
    split[group.mask] = "test"
    if protocol == "predefined":  # predefined_groups has checked that the manifest carries the corpus's split
        given = corpus_split(manifest)
        outside = ~given.isin(PREDEFINED)
        split[given == "valid"] = "valid"
        split[outside] = ""
        if (given == "valid").any():
            described = "the corpus's validation split"
        else:
            described = draw_validation(manifest, split, group, index, validation, fraction, seed)
        if outside.any():
            log.info(
                "fold 1 leaves out %d utterance(s) of split(s) %s", int(outside.sum()), natural_order(given[outside])
            )
    else:
        described = draw_validation(manifest, split, group, index, validation, fraction, seed)
    leaked = natural_order(
        set(speakers(manifest)[group.mask])
        & set(speakers(manifest)[split.isin(["train", "valid"])]) - {UNKNOWN_SPEAKER}
    )
    if leaked and protocol != "predefined":
        log.warning("fold %d: speaker(s) %s are in the test rows and in training too", group.fold, leaked)
    log.info(
        "fold %d tests %s (%d utterances); validation: %s", group.fold, group.name, int(group.mask.sum()), described
    )
    return split


def make_folds(
    manifest: pd.DataFrame,
    validation: str = "speaker",
    valid_fraction: float = 0.1,
    seed: int = 42,
    protocol: str = "session",
    k: int = 5,
) -> pd.DataFrame:
    """The folds table (fold, utt_id, split) of `manifest` under `protocol`."""
    tables = []
    for index, group in enumerate(test_groups(manifest, protocol, k, seed)):
        split = fold_splits(manifest, group, index, protocol, validation, valid_fraction, seed)
        inside = split != ""
        tables.append(pd.DataFrame({"fold": group.fold, "utt_id": manifest["utt_id"][inside], "split": split[inside]}))
    return pd.concat(tables, ignore_index=True)[FOLD_COLUMNS]


DEPLOY_FOLD = 0


def deploy_split(manifest: pd.DataFrame, validation: str, valid_fraction: float, seed: int) -> pd.DataFrame:
    """The split of the deploy model (fold 0): every utterance trains except the validation ones; none is tested."""
    group = TestGroup(DEPLOY_FOLD, "nothing (deploy model: all data)", pd.Series(False, index=manifest.index))
    split = pd.Series("train", index=manifest.index)
    described = draw_validation(manifest, split, group, 0, validation, valid_fraction, seed)
    log.info(
        "deploy split: %d train / %d valid; validation: %s",
        int((split == "train").sum()),
        int((split == "valid").sum()),
        described,
    )
    return pd.DataFrame({"fold": DEPLOY_FOLD, "utt_id": manifest["utt_id"], "split": split})[FOLD_COLUMNS]


def fold_table(folds: pd.DataFrame, manifest: pd.DataFrame, fold: int) -> pd.DataFrame:
    """The manifest rows of one fold with their split, in manifest order."""
    rows = folds[folds["fold"] == fold]
    if rows.empty:
        raise CorpusError(f"fold {fold} is not in the folds table (folds: {sorted(folds['fold'].unique().tolist())})")
    for name, ids in (("the folds table's fold " + str(fold), rows["utt_id"]), ("the manifest", manifest["utt_id"])):
        repeated = ids[ids.duplicated()]
        if not repeated.empty:
            raise CorpusError(f"{name} lists utterance '{repeated.iloc[0]}' more than once")
    table = manifest.merge(rows[["utt_id", "split"]], on="utt_id")  # an inner join, one row per utterance
    if len(table) != len(rows):
        raise CorpusError(
            f"fold {fold}: {len(rows) - len(table)} utterance(s) of the folds table are not in the manifest"
        )
    return table
