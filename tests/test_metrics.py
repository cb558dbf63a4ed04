"""WAR, UAR, macro-F1 and per-class recall, cross-checked against scikit-learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score

from gmptl.metrics import classification_metrics, summarize_folds

CLASSES = ["neu", "hap", "ang", "sad"]


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    true = rng.choice(CLASSES, size=200, p=[0.4, 0.3, 0.2, 0.1])
    pred = np.where(rng.random(200) < 0.6, true, rng.choice(CLASSES, size=200))
    got = classification_metrics(true, pred, CLASSES)
    assert got["n"] == 200
    assert got["war"] == pytest.approx(accuracy_score(true, pred))
    assert got["uar"] == pytest.approx(balanced_accuracy_score(true, pred))
    assert got["macro_f1"] == pytest.approx(f1_score(true, pred, labels=CLASSES, average="macro"))
    recalls = recall_score(true, pred, labels=CLASSES, average=None)
    for c, r in zip(CLASSES, recalls, strict=False):
        assert got[f"recall_{c}"] == pytest.approx(r)


def test_uar_differs_from_war_on_imbalanced_data():
    got = classification_metrics(["neu"] * 9 + ["sad"], ["neu"] * 10, ["neu", "sad"])
    assert got["war"] == pytest.approx(0.9) and got["uar"] == pytest.approx(0.5)


def test_summary_has_mean_std_and_pooled_rows():
    folds = pd.DataFrame({"fold": [1, 2], "n": [2, 2], "war": [1.0, 0.5], "uar": [1.0, 0.5]})
    predictions = pd.DataFrame({"true": ["neu", "sad", "neu", "sad"], "predicted": ["neu", "sad", "neu", "neu"]})
    summary = summarize_folds(folds, predictions, ["neu", "sad"]).set_index("statistic")
    assert list(summary.index) == ["mean", "std", "pooled"]
    assert summary.loc["mean", "uar"] == pytest.approx(0.75)
    assert summary.loc["std", "war"] == pytest.approx(np.std([1.0, 0.5], ddof=1))
    assert summary.loc["pooled", "war"] == pytest.approx(0.75)
    assert summary.loc["pooled", "uar"] == pytest.approx(
        balanced_accuracy_score(predictions["true"], predictions["predicted"])
    )
