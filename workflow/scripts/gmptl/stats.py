"""Paired significance tests of WAR and UAR differences between experiments scored on the same test utterances.

Method (what `paired_differences` computes, for every experiment E against the reference R):

1. **Per-utterance correctness.** For each test utterance i (identified by fold and utt_id), c_E(i) is the
   fraction of E's seeds that predicted its true class (0 or 1 with one seed). Averaging correctness over seeds
   (rather than voting) makes the statistics below *exactly* the headline figures of `summary.tsv`: per fold,
   WAR and UAR are linear in the per-class hit counts, so the mean over seeds of a fold's UAR is the UAR computed
   with c_E in place of 0/1 hits.
2. **Statistic.** d = (mean over folds of E's per-fold metric) − (the same for R), metric WAR or UAR, where a
   fold's UAR is the mean recall over the classes present in that fold's test set.
3. **Unit: clusters.** The resampling unit is a cluster of test utterances (`clusters`): a dialogue or a
   speaker, whose utterances are correlated, or the utterance itself (`clusters=None`). Whole clusters are drawn
   or swapped, always within a fold (the folds are the strata), so the interval and the p-value speak about new
   dialogues (speakers), not new utterances of the same dialogues.
4. **Confidence interval: paired cluster bootstrap, stratified by fold.** Each of B resamples draws,
   independently in every fold, m_f clusters with replacement from that fold's m_f clusters, and takes every
   utterance of every drawn cluster (a cluster drawn twice counts twice); the same draw is applied to every
   experiment (pairing). d is recomputed on each resample (a class that a resample leaves without any utterance
   drops out of that fold's UAR, as in the unresampled metric). The interval is the 2.5th and 97.5th percentile
   of the B resampled differences (percentile bootstrap).
5. **p-value: paired permutation test (approximate randomisation), stratified by fold.** Under the null
   hypothesis that E and R are exchangeable, the pairs (c_E(i), c_R(i)) of all utterances of a cluster are
   swapped together with probability 1/2, independently of all other clusters, B times; d is recomputed after
   every swap pattern. The two-sided p-value is (1 + #{|d_b| ≥ |d_observed|}) / (B + 1). Identical predictions
   give p = 1.
6. **Many comparisons.** `holm` adjusts the p-values of all experiments compared with one reference
   (family-wise error rate, Holm's step-down method).

Both are conditional on the trained models (the seeds' training variance is not resampled). Every draw comes
from `numpy.random.default_rng(seed)`, so a rerun gives the same numbers; the work is a few matrix products per
fold and chunk of resamples.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from .errors import GmptlError

METRICS = ("war", "uar")
CHUNK = 1000  # resamples per matrix product (bounds memory at CHUNK × utterances-per-fold floats)


class EvaluationError(GmptlError):
    """Predictions cannot be summarised or compared (missing columns, unknown labels, different test sets)."""


def correctness(predictions: pd.DataFrame) -> pd.DataFrame:
    """Per test utterance (index fold, utt_id): its true class and the fraction of seeds that predicted it."""
    hit = (predictions["true"] == predictions["predicted"]).astype(float)
    table = predictions.assign(correct=hit).groupby(["fold", "utt_id"], sort=True)
    return pd.DataFrame({"true": table["true"].first(), "correct": table["correct"].mean()})


def paired_differences(
    correct: Mapping[str, pd.DataFrame],
    reference: str,
    classes: list[str],
    resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
    clusters: pd.Series | None = None,
) -> pd.DataFrame:
    """One row per experiment: <metric>_diff, _diff_ci_low, _diff_ci_high, _p for WAR and UAR against `reference`.

    `correct` maps each experiment to its `correctness` table. `clusters` gives the resampling cluster of every
    test utterance (index fold, utt_id, as `correct`; e.g. its dialogue); None resamples single utterances. The
    reference's own row has diff 0 and NaN CI/p. See the module docstring for the method.
    """
    if reference not in correct:
        raise EvaluationError(f"reference experiment '{reference}' is not among the compared {sorted(correct)}")
    names = list(correct)
    aligned = _aligned(correct, reference)
    true = np.asarray([classes.index(c) for c in aligned[reference]["true"]])
    hits = np.stack([aligned[name]["correct"].to_numpy(float) for name in names], axis=1)  # utterances × experiments
    folds = aligned[reference].index.get_level_values("fold").to_numpy()
    labels = None if clusters is None else _cluster_labels(clusters, aligned[reference].index)
    observed = np.zeros((len(METRICS), len(names)))
    boot = np.zeros((len(METRICS), resamples, len(names)))
    perm = np.zeros((len(METRICS), resamples, len(names)))
    rng = np.random.default_rng(seed)
    ref = names.index(reference)
    for fold in np.unique(folds):
        rows = folds == fold
        onehot = np.eye(len(classes))[true[rows]]
        fold_hits = hits[rows]
        members = None if labels is None else membership(labels[rows])
        units = rows.sum() if members is None else len(members)
        observed += _fold_metrics(np.ones((1, rows.sum())), onehot, fold_hits)[:, 0]
        for start in range(0, resamples, CHUNK):
            size = min(CHUNK, resamples - start)
            weights = _expand(_bootstrap_weights(rng, size, units), members)
            boot[:, start : start + size] += _fold_metrics(weights, onehot, fold_hits)
            swaps = _expand(rng.integers(0, 2, size=(size, units)).astype(float), members)
            perm[:, start : start + size] += _swapped_differences(swaps, onehot, fold_hits, ref)
    n_folds = len(np.unique(folds))
    observed, boot, perm = observed / n_folds, boot / n_folds, perm / n_folds
    return _difference_table(names, ref, observed, boot, perm, confidence)


def cluster_counts(clusters: pd.Series) -> dict[int, int]:
    """Clusters per fold of a `clusters` series (index fold, utt_id), in fold order."""
    return {int(fold): int(group.nunique()) for fold, group in clusters.groupby(level="fold", sort=True)}


def membership(labels) -> np.ndarray:
    """Clusters × utterances 0/1 matrix of a sequence of cluster labels (clusters in order of appearance)."""
    codes, uniques = pd.factorize(np.asarray(labels, dtype=object))
    return (codes[None, :] == np.arange(len(uniques))[:, None]).astype(float)


def _expand(per_cluster: np.ndarray, members: np.ndarray | None) -> np.ndarray:
    """Per-cluster draws (resamples × clusters) as per-utterance weights; None: the units are utterances."""
    return per_cluster if members is None else per_cluster @ members


def _cluster_labels(clusters: pd.Series, index: pd.MultiIndex) -> np.ndarray:
    """The cluster of every utterance of `index`; an error names an utterance without one."""
    missing = index.difference(clusters.index)
    if len(missing):
        fold, utt = missing[0]
        raise EvaluationError(
            f"test utterance '{utt}' (fold {fold}) has no cluster (dialog or speaker) in the manifest; "
            f"{len(missing)} utterance(s) lack one — the predictions and the manifest do not match"
        )
    labels = clusters.loc[index]
    if labels.isna().any():
        raise EvaluationError(f"test utterance '{labels[labels.isna()].index[0][1]}' has an empty cluster id")
    return labels.astype(str).to_numpy()


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjustment of m p-values (family-wise error rate), in the input's order; NaN stays NaN.

    Sorted ascending, p_(i) becomes max over j <= i of min(1, (m - j + 1) p_(j)), m counting only the non-NaN
    p-values; so every adjusted p-value is at least its raw one.
    """
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full_like(p, np.nan)
    finite = np.flatnonzero(~np.isnan(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    scaled = (len(order) - np.arange(len(order))) * p[order]
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return adjusted


def _aligned(correct: Mapping[str, pd.DataFrame], reference: str) -> dict[str, pd.DataFrame]:
    """Every experiment's table in the reference's row order; an error names experiments with other test sets."""
    base = correct[reference]
    differ = [name for name, table in correct.items() if not table.index.sort_values().equals(base.index.sort_values())]
    if differ:
        raise EvaluationError(
            f"experiments {differ} were not evaluated on the same test utterances (fold, utt_id) as the reference "
            f"'{reference}', so they cannot be compared pairwise; give them the same corpus, folds and sessions"
        )
    aligned = {name: table.loc[base.index] for name, table in correct.items()}
    relabelled = [name for name, table in aligned.items() if not table["true"].equals(base["true"])]
    if relabelled:
        raise EvaluationError(
            f"experiments {relabelled} give some test utterances another true label than the reference "
            f"'{reference}'; they were built from different manifests (label maps)"
        )
    return aligned


def _fold_metrics(weights: np.ndarray, onehot: np.ndarray, hits: np.ndarray) -> np.ndarray:
    """(metric, resample, experiment) WAR and UAR of one fold, utterance i counted weights[b, i] times."""
    n_classes, n_exp = onehot.shape[1], hits.shape[1]
    support = weights @ onehot  # resamples × classes
    class_hits = (weights @ (onehot[:, :, None] * hits[:, None, :]).reshape(len(hits), -1)).reshape(
        len(weights), n_classes, n_exp
    )
    war = class_hits.sum(1) / weights.sum(1, keepdims=True)
    present = support > 0
    recall = np.divide(class_hits, support[:, :, None], out=np.zeros_like(class_hits), where=present[:, :, None])
    uar = recall.sum(1) / present.sum(1, keepdims=True)
    return np.stack([war, uar])


def _bootstrap_weights(rng: np.random.Generator, size: int, n: int) -> np.ndarray:
    """How often each of n utterances is drawn in each of `size` resamples with replacement (size × n)."""
    draws = rng.integers(0, n, size=(size, n)) + (np.arange(size) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=size * n).reshape(size, n).astype(float)


def _swapped_differences(swaps: np.ndarray, onehot: np.ndarray, hits: np.ndarray, ref: int) -> np.ndarray:
    """(metric, resample, experiment) fold differences to the reference after swapping utterance i of resample b
    between each experiment and the reference where swaps[b, i] is 1.

    Swapping utterance i exchanges c_E(i) and c_R(i), which changes E − R by −2 (c_E(i) − c_R(i)) in i's class;
    per fold both metrics are linear in the class hits, so one matrix product gives every swap pattern.
    """
    delta = hits - hits[:, [ref]]  # utterances × experiments
    n_classes, n_exp = onehot.shape[1], hits.shape[1]
    diff_hits = (onehot[:, :, None] * delta[:, None, :]).reshape(len(hits), -1)
    class_diff = diff_hits.sum(0)[None, :] - 2 * (swaps @ diff_hits)
    class_diff = class_diff.reshape(len(swaps), n_classes, n_exp)
    support = onehot.sum(0)
    present = support > 0
    war = class_diff.sum(1) / len(hits)
    uar = (class_diff[:, present] / support[present][None, :, None]).sum(1) / present.sum()
    return np.stack([war, uar])


def _difference_table(names, ref, observed, boot, perm, confidence) -> pd.DataFrame:
    tail = (1 - confidence) / 2
    rows = []
    for e, name in enumerate(names):
        row = {"experiment": name}
        for m, metric in enumerate(METRICS):
            diff = observed[m, e] - observed[m, ref]
            if e == ref:
                row.update({f"{metric}_diff": 0.0, f"{metric}_diff_ci_low": np.nan})
                row.update({f"{metric}_diff_ci_high": np.nan, f"{metric}_p": np.nan})
                continue
            low, high = np.quantile(boot[m, :, e] - boot[m, :, ref], [tail, 1 - tail])
            extreme = np.abs(perm[m, :, e]) >= abs(diff) - 1e-12
            row[f"{metric}_diff"] = diff
            row[f"{metric}_diff_ci_low"] = low
            row[f"{metric}_diff_ci_high"] = high
            row[f"{metric}_p"] = (1 + extreme.sum()) / (len(extreme) + 1)
        rows.append(row)
    return pd.DataFrame(rows)
