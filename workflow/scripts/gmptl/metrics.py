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


def summarize_folds(folds: pd.DataFrame, predictions: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Rows mean and std (sample, ddof=1) over folds, and pooled (over all test utterances)."""
    columns = [c for c in folds.columns if c not in ("fold", "n")]
    mean = folds[columns].mean().to_dict()
    std = folds[columns].std(ddof=1).to_dict()
    pooled = classification_metrics(predictions["true"], predictions["predicted"], classes)
    rows = [
        {"statistic": "mean", "n": int(folds["n"].sum()), **mean},
        {"statistic": "std", "n": int(folds["n"].sum()), **std},
        {"statistic": "pooled", **pooled},
    ]
    return pd.DataFrame(rows)[["statistic", "n", *columns]]
