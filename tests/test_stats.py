"""Paired tests of WAR/UAR differences: calibrated p-values, covering intervals, exact headline differences."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gmptl.metrics import classification_metrics, run_metrics, summarize_runs
from gmptl.stats import (
    EvaluationError,
    _fold_metrics,
    _swapped_differences,
    correctness,
    paired_differences,
)

CLASSES = ["neu", "hap", "ang", "sad"]


def predictions(true: dict[int, np.ndarray], accuracy: float, rng, seeds=(42,)) -> pd.DataFrame:
    """Predictions of every seed and fold: right with probability `accuracy`, else a uniformly wrong class."""
    frames = []
    for seed in seeds:
        for fold, labels in true.items():
            wrong = rng.integers(1, 4, len(labels))
            index = np.array([CLASSES.index(c) for c in labels])
            predicted = np.where(rng.random(len(labels)) < accuracy, index, (index + wrong) % 4)
            frames.append(
                pd.DataFrame(
                    {
                        "seed": seed,
                        "fold": fold,
                        "utt_id": [f"f{fold}_{i}" for i in range(len(labels))],
                        "true": labels,
                        "predicted": np.array(CLASSES)[predicted],
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def labels_per_fold(rng, sizes=(200, 250, 220)) -> dict[int, np.ndarray]:
    return {fold: rng.choice(CLASSES, size=n, p=[0.35, 0.3, 0.2, 0.15]) for fold, n in enumerate(sizes, 1)}


def test_identical_predictions_give_p_one_and_a_zero_interval():
    rng = np.random.default_rng(0)
    table = correctness(predictions(labels_per_fold(rng), 0.7, rng))
    result = paired_differences({"a": table, "b": table.copy()}, "a", CLASSES, resamples=500).set_index("experiment")
    for metric in ("war", "uar"):
        assert result.loc["b", f"{metric}_diff"] == 0
        assert result.loc["b", f"{metric}_p"] == 1
        assert result.loc["b", f"{metric}_diff_ci_low"] == result.loc["b", f"{metric}_diff_ci_high"] == 0


def test_clearly_better_predictions_give_a_small_p_and_an_interval_above_zero():
    rng = np.random.default_rng(1)
    true = labels_per_fold(rng)
    tables = {"base": correctness(predictions(true, 0.6, rng)), "better": correctness(predictions(true, 0.8, rng))}
    result = paired_differences(tables, "base", CLASSES, resamples=2000).set_index("experiment")
    for metric in ("war", "uar"):
        assert result.loc["better", f"{metric}_p"] == 1 / 2001  # no permutation reaches it: (1 + 0) / (B + 1), never 0
        assert 0 < result.loc["better", f"{metric}_diff_ci_low"] < result.loc["better", f"{metric}_diff"]
        assert result.loc["better", f"{metric}_diff"] < result.loc["better", f"{metric}_diff_ci_high"]


def test_reference_row_has_zero_difference_and_no_interval():
    rng = np.random.default_rng(2)
    true = labels_per_fold(rng)
    tables = {"a": correctness(predictions(true, 0.6, rng)), "b": correctness(predictions(true, 0.7, rng))}
    result = paired_differences(tables, "b", CLASSES, resamples=100).set_index("experiment")
    assert result.loc["b", "uar_diff"] == 0
    assert result.loc["b", ["uar_diff_ci_low", "uar_diff_ci_high", "uar_p", "war_p"]].isna().all()
    assert result.loc["a", "war_diff"] < 0


def test_interval_covers_the_true_difference_in_most_simulations():
    """Population accuracies 0.75 vs 0.65: the expected WAR difference is 0.10; a 95 % CI should cover it ~95 %."""
    rng = np.random.default_rng(3)
    covered = []
    for _ in range(40):
        true = labels_per_fold(rng, sizes=(150, 150))
        tables = {"r": correctness(predictions(true, 0.65, rng)), "e": correctness(predictions(true, 0.75, rng))}
        row = paired_differences(tables, "r", CLASSES, resamples=1000, seed=int(rng.integers(1e9))).iloc[1]
        covered.append(row["war_diff_ci_low"] <= 0.10 <= row["war_diff_ci_high"])
    assert np.mean(covered) >= 0.85


def test_p_values_are_calibrated_under_the_null():
    """Two equally good systems: p < 0.05 in about 5 % of simulations, not far more."""
    rng = np.random.default_rng(4)
    p = []
    for _ in range(100):
        true = labels_per_fold(rng, sizes=(100, 100))
        tables = {"r": correctness(predictions(true, 0.7, rng)), "e": correctness(predictions(true, 0.7, rng))}
        p.append(paired_differences(tables, "r", CLASSES, resamples=200, seed=int(rng.integers(1e9))).iloc[1]["uar_p"])
    assert 0.01 <= np.mean(np.array(p) < 0.05) <= 0.12  # about 5 %: neither never nor often
    assert 0.35 < np.mean(p) < 0.65  # uniform p-values have mean 1/2


def test_difference_equals_the_difference_of_headline_means_with_several_seeds():
    rng = np.random.default_rng(5)
    true = labels_per_fold(rng)
    runs = {"a": predictions(true, 0.6, rng, seeds=(1, 2, 3)), "b": predictions(true, 0.7, rng, seeds=(1, 2))}
    means = {n: summarize_runs(run_metrics(p, CLASSES), p, CLASSES).set_index("statistic") for n, p in runs.items()}
    result = paired_differences({n: correctness(p) for n, p in runs.items()}, "a", CLASSES, resamples=100)
    row = result.set_index("experiment").loc["b"]
    for metric in ("war", "uar"):
        assert row[f"{metric}_diff"] == pytest.approx(means["b"].loc["mean", metric] - means["a"].loc["mean", metric])


def test_same_seed_gives_the_same_numbers():
    rng = np.random.default_rng(6)
    true = labels_per_fold(rng)
    tables = {"a": correctness(predictions(true, 0.6, rng)), "b": correctness(predictions(true, 0.65, rng))}
    first = paired_differences(tables, "a", CLASSES, resamples=300, seed=7)
    pd.testing.assert_frame_equal(first, paired_differences(tables, "a", CLASSES, resamples=300, seed=7))
    assert not first.equals(paired_differences(tables, "a", CLASSES, resamples=300, seed=8))


def test_different_test_utterances_are_an_error_naming_the_experiment():
    rng = np.random.default_rng(7)
    true = labels_per_fold(rng)
    a = correctness(predictions(true, 0.6, rng))
    with pytest.raises(EvaluationError, match=r"\['short'\].*same test utterances"):
        paired_differences({"a": a, "short": a.iloc[:-3]}, "a", CLASSES, resamples=10)


def test_weighted_fold_metrics_equal_metrics_of_the_resampled_set():
    """The vectorised bootstrap statistic of a resample equals classification_metrics on that resample."""
    rng = np.random.default_rng(8)
    true = rng.choice(CLASSES[:3], size=60)  # 'sad' absent: left out of the UAR, as in classification_metrics
    pred = np.where(rng.random(60) < 0.6, true, rng.choice(CLASSES, size=60))
    onehot = np.eye(4)[[CLASSES.index(c) for c in true]]
    weights = rng.integers(0, 3, size=(5, 60)).astype(float)
    got = _fold_metrics(weights, onehot, (true == pred).astype(float)[:, None])
    for b in range(5):
        repeat = np.repeat(np.arange(60), weights[b].astype(int))
        expected = classification_metrics(true[repeat], pred[repeat], CLASSES)
        assert got[0, b, 0] == pytest.approx(expected["war"])
        assert got[1, b, 0] == pytest.approx(expected["uar"])


def test_swapped_differences_equal_metrics_after_swapping_predictions():
    rng = np.random.default_rng(9)
    true = rng.choice(CLASSES, size=80)
    pred_r = np.where(rng.random(80) < 0.5, true, rng.choice(CLASSES, size=80))
    pred_e = np.where(rng.random(80) < 0.8, true, rng.choice(CLASSES, size=80))
    hits = np.stack([true == pred_r, true == pred_e], axis=1).astype(float)
    swaps = rng.integers(0, 2, size=(4, 80))
    got = _swapped_differences(swaps.astype(float), np.eye(4)[[CLASSES.index(c) for c in true]], hits, 0)
    for b in range(4):
        new_r, new_e = np.where(swaps[b] == 1, pred_e, pred_r), np.where(swaps[b] == 1, pred_r, pred_e)
        r, e = classification_metrics(true, new_r, CLASSES), classification_metrics(true, new_e, CLASSES)
        assert got[0, b, 1] == pytest.approx(e["war"] - r["war"])
        assert got[1, b, 1] == pytest.approx(e["uar"] - r["uar"])
        assert got[:, b, 0] == pytest.approx([0, 0])


def test_holm_matches_the_step_down_definition():
    """Holm by hand: sorted p (0.01, 0.02, 0.04, 0.3) times (4, 3, 2, 1), running max, capped at 1."""
    from gmptl.stats import holm

    adjusted = holm([0.04, 0.01, float("nan"), 0.3, 0.02])
    np.testing.assert_allclose(adjusted[[1, 4, 0, 3]], [0.04, 0.06, 0.08, 0.3])
    assert np.isnan(adjusted[2])
    assert holm([0.5, 0.6]).tolist() == [1.0, 1.0]  # 2 × 0.5 and the running max of 0.6, capped


def clustered_case():
    """Two folds of 3 and 4 dialogues; the experiment beats the reference on some dialogues, loses on one."""
    rng = np.random.default_rng(21)
    rows = []
    for fold, sizes in ((1, (5, 3, 6)), (2, (4, 4, 2, 5))):
        for d, size in enumerate(sizes):
            for i in range(size):
                rows.append({"fold": fold, "utt_id": f"f{fold}d{d}u{i}", "dialog": f"f{fold}d{d}"})
    table = pd.DataFrame(rows)
    table["true"] = rng.choice(CLASSES, len(table))
    edge = {"f1d0": 0.9, "f1d1": 0.2, "f1d2": 0.7, "f2d0": 0.8, "f2d1": 0.3, "f2d2": 0.9, "f2d3": 0.6}
    right_e = rng.random(len(table)) < table["dialog"].map(edge)
    right_r = rng.random(len(table)) < 0.4
    wrong = np.array(CLASSES)[(np.array([CLASSES.index(c) for c in table["true"]]) + 1) % 4]
    table["pred_e"] = np.where(right_e, table["true"], wrong)
    table["pred_r"] = np.where(right_r, table["true"], wrong)
    return table.set_index(["fold", "utt_id"])


def mean_fold_metrics(table: pd.DataFrame, column: str) -> np.ndarray:
    per_fold = [
        classification_metrics(g["true"].to_numpy(), g[column].to_numpy(), CLASSES) for _, g in table.groupby("fold")
    ]
    return np.array([np.mean([m["war"] for m in per_fold]), np.mean([m["uar"] for m in per_fold])])


def clustered_tables(table):
    def one(column):
        return table[["true"]].assign(correct=(table["true"] == table[column]).astype(float))

    return {"r": one("pred_r"), "e": one("pred_e")}


def test_cluster_permutation_p_matches_the_exact_enumeration_of_cluster_swaps():
    """All 2^7 patterns of swapping whole dialogues, scored with classification_metrics: the exact p."""
    import itertools

    table = clustered_case()
    dialogs = sorted(table["dialog"].unique())
    observed = mean_fold_metrics(table, "pred_e") - mean_fold_metrics(table, "pred_r")
    extreme = np.zeros(2)
    for pattern in itertools.product([0, 1], repeat=len(dialogs)):
        swapped = table["dialog"].isin([d for d, s in zip(dialogs, pattern, strict=True) if s])
        t = table.assign(
            pred_e=np.where(swapped, table["pred_r"], table["pred_e"]),
            pred_r=np.where(swapped, table["pred_e"], table["pred_r"]),
        )
        extreme += np.abs(mean_fold_metrics(t, "pred_e") - mean_fold_metrics(t, "pred_r")) >= np.abs(observed) - 1e-12
    exact = extreme / 2 ** len(dialogs)
    result = paired_differences(clustered_tables(table), "r", CLASSES, resamples=20000, clusters=table["dialog"])
    row = result.set_index("experiment").loc["e"]
    assert [row["war_diff"], row["uar_diff"]] == pytest.approx(observed)
    assert [row["war_p"], row["uar_p"]] == pytest.approx(exact, abs=0.01)  # Monte Carlo error ≈ 0.003
    by_utterance = paired_differences(clustered_tables(table), "r", CLASSES, resamples=20000).set_index("experiment")
    assert abs(by_utterance.loc["e", "uar_p"] - exact[1]) > 0.03  # the unit matters on this case


def test_cluster_bootstrap_interval_matches_the_exact_enumeration_of_cluster_draws():
    """All 3^3 × 4^4 ordered draws of whole dialogues within folds, each equally likely: the exact bootstrap
    distribution; the interval's ends sit at its 2.5 % and 97.5 % quantiles."""
    import itertools

    table = clustered_case()
    per_fold = {fold: sorted(g["dialog"].unique()) for fold, g in table.groupby("fold")}
    fold_stats = {}
    for fold, dialogs in per_fold.items():  # per fold: the statistic of every ordered draw
        group = table[table.index.get_level_values("fold") == fold]
        values = []
        for draw in itertools.product(dialogs, repeat=len(dialogs)):
            rows = np.concatenate([np.flatnonzero(group["dialog"].to_numpy() == d) for d in draw])
            e = classification_metrics(group["true"].to_numpy()[rows], group["pred_e"].to_numpy()[rows], CLASSES)
            r = classification_metrics(group["true"].to_numpy()[rows], group["pred_r"].to_numpy()[rows], CLASSES)
            values.append(e["uar"] - r["uar"])
        fold_stats[fold] = np.array(values)
    exact = np.sort((fold_stats[1][:, None] + fold_stats[2][None, :]).ravel() / 2)
    result = paired_differences(clustered_tables(table), "r", CLASSES, resamples=20000, clusters=table["dialog"])
    row = result.set_index("experiment").loc["e"]
    for end, level in ((row["uar_diff_ci_low"], 0.025), (row["uar_diff_ci_high"], 0.975)):
        below, at_most = np.mean(exact < end - 1e-9), np.mean(exact <= end + 1e-9)
        assert below - 0.01 <= level <= at_most + 0.01, (end, level, below, at_most)
    utterance = paired_differences(clustered_tables(table), "r", CLASSES, resamples=20000).set_index("experiment")
    assert abs(utterance.loc["e", "uar_diff_ci_high"] - row["uar_diff_ci_high"]) > 0.05  # the unit matters here


def test_clusters_must_cover_every_test_utterance():
    table = clustered_case()
    with pytest.raises(EvaluationError, match="has no cluster"):
        paired_differences(clustered_tables(table), "r", CLASSES, resamples=10, clusters=table["dialog"].iloc[1:])


def test_single_utterance_clusters_give_the_utterance_unit_exactly():
    table = clustered_case()
    singletons = pd.Series(table.index.get_level_values("utt_id"), index=table.index)
    clustered = paired_differences(clustered_tables(table), "r", CLASSES, resamples=500, seed=3, clusters=singletons)
    plain = paired_differences(clustered_tables(table), "r", CLASSES, resamples=500, seed=3)
    pd.testing.assert_frame_equal(clustered, plain)


def small_tables(rng, accuracy_e=0.8, sizes=(60, 60)):
    true = labels_per_fold(rng, sizes=sizes)
    return {"r": correctness(predictions(true, 0.5, rng)), "e": correctness(predictions(true, accuracy_e, rng))}


def test_the_interval_ends_sit_at_the_asked_confidence_and_any_resample_count_works():
    """A 50 % interval lies inside the 95 % one and is about a third as wide for a normal-ish bootstrap; an extreme
    99.9 % interval of a clear difference stays well above zero; resample counts that are not a multiple of the
    chunk size work."""
    tables = small_tables(np.random.default_rng(30))
    wide = paired_differences(tables, "r", CLASSES, resamples=1500, seed=1).iloc[1]
    narrow = paired_differences(tables, "r", CLASSES, resamples=1500, seed=1, confidence=0.5).iloc[1]
    assert wide["war_diff_ci_low"] < narrow["war_diff_ci_low"] < narrow["war_diff_ci_high"] < wide["war_diff_ci_high"]
    ratio = (narrow["war_diff_ci_high"] - narrow["war_diff_ci_low"]) / (
        wide["war_diff_ci_high"] - wide["war_diff_ci_low"]
    )
    assert 0.25 < ratio < 0.45  # normal: 1.349 / 3.92 = 0.34
    extreme = paired_differences(tables, "r", CLASSES, resamples=200, seed=2, confidence=0.999).iloc[1]
    assert extreme["war_diff_ci_low"] > 0.4 * extreme["war_diff"]  # every resample counts, none is left at 0


def test_defaults_are_ten_thousand_resamples_from_seed_zero():
    tables = small_tables(np.random.default_rng(31), sizes=(20, 20))
    pd.testing.assert_frame_equal(
        paired_differences(tables, "r", CLASSES), paired_differences(tables, "r", CLASSES, resamples=10_000, seed=0)
    )


def test_mismatched_inputs_are_errors_naming_what_differs():
    tables = small_tables(np.random.default_rng(32), sizes=(10, 10))
    with pytest.raises(EvaluationError, match=r"reference experiment 'x' is not among the compared \['e', 'r'\]"):
        paired_differences(tables, "x", CLASSES, resamples=10)
    relabelled = tables["e"].copy()
    relabelled.iloc[0, relabelled.columns.get_loc("true")] = "sad" if relabelled["true"].iloc[0] != "sad" else "neu"
    with pytest.raises(EvaluationError, match=r"experiments \['e'\] give some test utterances another true label"):
        paired_differences({"r": tables["r"], "e": relabelled}, "r", CLASSES, resamples=10)
    clusters = pd.Series("d", index=tables["r"].index, dtype=object)
    clusters.iloc[3] = None
    with pytest.raises(EvaluationError, match=rf"test utterance '{tables['r'].index[3][1]}' has an empty cluster id"):
        paired_differences(tables, "r", CLASSES, resamples=10, clusters=clusters)


def test_swapped_differences_count_a_class_with_a_single_utterance():
    true = np.array(["neu", "neu", "hap", "hap", "sad"])  # sad: one utterance, still a class of the UAR
    pred_r, pred_e = np.array(["neu", "hap", "hap", "neu", "neu"]), np.array(["neu", "neu", "hap", "hap", "sad"])
    hits = np.stack([true == pred_r, true == pred_e], axis=1).astype(float)
    swaps = np.array([[0, 0, 0, 0, 0], [0, 0, 0, 0, 1]], dtype=float)
    got = _swapped_differences(swaps, np.eye(4)[[CLASSES.index(c) for c in true]], hits, 0)
    e, r = classification_metrics(true, pred_e, CLASSES), classification_metrics(true, pred_r, CLASSES)
    assert got[1, 0, 1] == pytest.approx(e["uar"] - r["uar"])
    swapped_e = np.where(swaps[1] == 1, pred_r, pred_e)
    swapped_r = np.where(swaps[1] == 1, pred_e, pred_r)
    expected = (
        classification_metrics(true, swapped_e, CLASSES)["uar"]
        - classification_metrics(true, swapped_r, CLASSES)["uar"]
    )
    assert got[1, 1, 1] == pytest.approx(expected)


def test_correctness_and_cluster_counts_come_in_fold_order():
    from gmptl.stats import cluster_counts

    frame = pd.DataFrame(
        {"fold": [2, 1, 2, 1], "utt_id": ["b", "z", "a", "y"], "true": ["neu"] * 4, "predicted": ["neu", "hap"] * 2}
    )
    table = correctness(frame)
    assert list(table.index) == [(1, "y"), (1, "z"), (2, "a"), (2, "b")]
    assert table["correct"].tolist() == [0.0, 0.0, 1.0, 1.0]
    index = pd.MultiIndex.from_tuples([(3, "a"), (1, "b"), (3, "c"), (1, "d")], names=["fold", "utt_id"])
    counts = cluster_counts(pd.Series(["x", "y", "z", "y"], index=index))
    assert list(counts.items()) == [(1, 1), (3, 2)]


def test_holm_caps_at_one_and_takes_integer_p_values():
    from gmptl.stats import holm

    assert holm([0.6, 0.7]).tolist() == [1.0, 1.0]  # 2 × 0.6 = 1.2, capped
    assert holm([0, 1]).tolist() == [0.0, 1.0]
