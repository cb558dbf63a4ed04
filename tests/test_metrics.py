"""WAR, UAR, macro-F1 and per-class recall, cross-checked against scikit-learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score

from gmptl.metrics import classification_metrics, run_metrics, summarize_runs

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


def runs_table(seeds: list[int]) -> pd.DataFrame:
    """Two folds of two utterances per seed; seed s gets the last utterance of fold 2 right iff s is odd."""
    rows = []
    for seed in seeds:
        rows += [
            (seed, 1, "a", "neu", "neu"),
            (seed, 1, "b", "sad", "sad"),
            (seed, 2, "c", "neu", "neu"),
            (seed, 2, "d", "sad", "sad" if seed % 2 else "neu"),
        ]
    return pd.DataFrame(rows, columns=["seed", "fold", "utt_id", "true", "predicted"])


def test_summary_has_mean_std_and_pooled_rows_with_their_counts():
    predictions = runs_table([42])
    summary = summarize_runs(run_metrics(predictions, ["neu", "sad"]), predictions, ["neu", "sad"])
    summary = summary.set_index("statistic")
    assert list(summary.index) == ["mean", "std", "pooled"]
    assert summary.loc["mean", "uar"] == pytest.approx(0.75)
    assert summary.loc["std", "war"] == pytest.approx(np.std([1.0, 0.5], ddof=1))
    assert summary.loc["pooled", "war"] == pytest.approx(0.75)
    assert summary.loc["pooled", "uar"] == pytest.approx(
        balanced_accuracy_score(predictions["true"], predictions["predicted"])
    )
    assert summary.loc["mean", "n"] == summary.loc["std", "n"] == 2  # folds
    assert summary.loc["pooled", "n"] == 4  # test utterances


def test_several_seeds_average_per_fold_and_add_seed_rows():
    predictions = runs_table([1, 2, 3])  # seeds 1 and 3 get fold 2 right, seed 2 does not
    runs = run_metrics(predictions, ["neu", "sad"])
    assert len(runs) == 6 and list(runs.columns[:3]) == ["seed", "fold", "n"]
    summary = summarize_runs(runs, predictions, ["neu", "sad"]).set_index("statistic")
    assert list(summary.index) == ["mean", "std", "pooled", "seed_mean", "seed_std"]
    fold2_war = (1 + 0.5 + 1) / 3
    assert summary.loc["mean", "war"] == pytest.approx((1 + fold2_war) / 2)
    assert summary.loc["std", "war"] == pytest.approx(np.std([1, fold2_war], ddof=1))
    assert summary.loc["seed_mean", "war"] == pytest.approx(summary.loc["mean", "war"])
    assert summary.loc["seed_std", "war"] == pytest.approx(np.std([1, 0.75, 1], ddof=1))
    assert summary.loc["pooled", "war"] == pytest.approx(11 / 12)  # every seed's predictions pooled
    assert summary.loc[["mean", "std", "pooled", "seed_mean", "seed_std"], "n"].tolist() == [2, 2, 4, 3, 3]


@pytest.mark.parametrize("seed", range(12))
def test_metrics_match_scikit_learn_when_classes_are_missing_or_never_predicted(seed):
    """Small sets where some class is absent from the truth (left out of the UAR, F1 0 if predicted), or
    predicted but absent, or neither; a model that is always right or never right."""
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(1, 12))
    true = rng.choice(CLASSES[: 1 + seed % 4], size=n)
    pred = rng.choice(CLASSES[seed % 3 :], size=n) if seed % 5 else true.copy()
    got = classification_metrics(true, pred, CLASSES)
    present_true = [c for c in CLASSES if c in set(true)]
    present = [c for c in CLASSES if c in set(true) | set(pred)]
    assert got["n"] == n and got["war"] == pytest.approx(accuracy_score(true, pred))
    assert got["uar"] == pytest.approx(np.mean(recall_score(true, pred, labels=present_true, average=None)))
    assert got["macro_f1"] == pytest.approx(f1_score(true, pred, labels=present, average="macro", zero_division=0))
    for c in CLASSES:
        expected = recall_score(true, pred, labels=[c], average=None)[0] if c in present_true else np.nan
        assert got[f"recall_{c}"] == pytest.approx(expected, nan_ok=True)


def test_no_predictions_give_nan_figures_not_an_error():
    got = classification_metrics([], [], CLASSES)
    assert got["n"] == 0 and got["war"] == 0.0
    assert np.isnan(got["uar"]) and np.isnan(got["macro_f1"]) and np.isnan(got["recall_neu"])


def test_a_perfect_and_a_hopeless_model():
    perfect = classification_metrics(["neu", "sad", "sad"], ["neu", "sad", "sad"], CLASSES)
    assert perfect["war"] == perfect["uar"] == perfect["macro_f1"] == 1.0
    hopeless = classification_metrics(["neu", "sad"], ["sad", "neu"], CLASSES)
    assert hopeless["war"] == hopeless["uar"] == hopeless["macro_f1"] == 0.0
    assert np.isnan(hopeless["recall_hap"])  # absent and never predicted: no recall, not in the F1 either


def test_one_utterance_and_integer_counts():
    from gmptl.metrics import confusion

    assert classification_metrics(["sad"], ["sad"], CLASSES)["war"] == 1.0
    matrix = confusion(np.array([0, 1, 1]), np.array([1, 1, 0]), 3)
    assert matrix.dtype.kind == "i" and matrix.tolist() == [[0, 1, 0], [1, 1, 0], [0, 0, 0]]


def test_run_rows_come_in_seed_fold_order_and_the_summary_has_only_metric_columns():
    predictions = runs_table([3, 1]).sample(frac=1.0, random_state=0)  # shuffled, seeds out of order
    runs = run_metrics(predictions, ["neu", "sad"])
    assert list(zip(runs["seed"], runs["fold"], strict=True)) == [(1, 1), (1, 2), (3, 1), (3, 2)]
    summary = summarize_runs(runs, predictions, ["neu", "sad"])
    assert list(summary.columns) == ["statistic", "n", "war", "uar", "macro_f1", "recall_neu", "recall_sad"]
