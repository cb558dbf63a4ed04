"""Classification metrics (WAR, UAR, macro-F1, per-class recall) and per-experiment summaries."""

from __future__ import annotations

import numpy as np
import pandas as pd


def confusion(true: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(true, predicted) count matrix."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(true), np.asarray(pred)), 1)
    return matrix


def classification_metrics(true, pred, classes: list[str]) -> dict[str, float]:
    """n, war (accuracy), uar (mean recall over classes present), macro_f1, recall_<class>.

    A class absent from `true` has recall NaN and is left out of the UAR (as scikit-learn's
    balanced accuracy does); its F1 counts as 0 only when it was predicted.
    """
    index = {c: i for i, c in enumerate(classes)}
    t = np.asarray([index[c] for c in true], dtype=np.int64)
    p = np.asarray([index[c] for c in pred], dtype=np.int64)
    matrix = confusion(t, p, len(classes))
    support, predicted, hits = matrix.sum(1), matrix.sum(0), np.diag(matrix)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, hits / support, np.nan)
        precision = np.where(predicted > 0, hits / predicted, 0.0)
        f1 = np.where(precision + np.nan_to_num(recall) > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = (support > 0) | (predicted > 0)
    row = {
        "n": int(len(t)),
        "war": float(hits.sum() / max(len(t), 1)),
        "uar": float(np.nanmean(recall)) if np.isfinite(recall).any() else float("nan"),
        "macro_f1": float(np.nan_to_num(f1)[present].mean()) if present.any() else float("nan"),
    }
    row.update({f"recall_{c}": float(recall[i]) for i, c in enumerate(classes)})
    return row


def run_metrics(predictions: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """One row per (seed, fold) of `predictions` (columns seed, fold, true, predicted): seed, fold, n, war, …."""
    rows = [
        {"seed": int(seed), "fold": int(fold), **classification_metrics(group["true"], group["predicted"], classes)}
        for (seed, fold), group in predictions.groupby(["seed", "fold"], sort=True)
    ]
    return pd.DataFrame(rows)


def summarize_runs(runs: pd.DataFrame, predictions: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """The summary of one experiment: rows mean, std, pooled, and seed_mean, seed_std with several seeds.

    `runs` has one row per (seed, fold) (see `run_metrics`); `predictions` every test prediction of every seed.

    - ``mean``: mean over folds of the per-fold figures averaged over seeds (= mean over seeds of the fold-mean);
      ``n`` = number of folds.
    - ``std``: sample standard deviation (ddof=1) over folds of those seed-averaged per-fold figures; ``n`` = folds.
    - ``pooled``: figures computed once over all test predictions of all seeds (each utterance counted once per
      seed); ``n`` = number of distinct test utterances.
    - ``seed_mean`` / ``seed_std`` (only with more than one seed): mean and sample standard deviation over seeds
      of each seed's fold-mean; ``n`` = number of seeds.
    """
    metrics = [c for c in runs.columns if c not in ("seed", "fold", "n")]
    per_fold = runs.groupby("fold")[metrics].mean()
    per_seed = runs.groupby("seed")[metrics].mean()
    pooled = classification_metrics(predictions["true"], predictions["predicted"], classes)
    rows = [
        {"statistic": "mean", "n": len(per_fold), **per_fold.mean().to_dict()},
        {"statistic": "std", "n": len(per_fold), **per_fold.std(ddof=1).to_dict()},
        {"statistic": "pooled", **pooled, "n": int(predictions[["fold", "utt_id"]].drop_duplicates().shape[0])},
    ]
    if len(per_seed) > 1:
        rows += [
            {"statistic": "seed_mean", "n": len(per_seed), **per_seed.mean().to_dict()},
            {"statistic": "seed_std", "n": len(per_seed), **per_seed.std(ddof=1).to_dict()},
        ]
    return pd.DataFrame(rows)[["statistic", "n", *metrics]]
