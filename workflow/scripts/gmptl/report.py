"""Per-experiment tables and plots: fold metrics, summary, comparison, confusion matrix, training curves."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .fileio import atomic_path  # noqa: E402
from .metrics import confusion, run_metrics, summarize_runs  # noqa: E402
from .stats import EvaluationError, cluster_counts, correctness, holm, paired_differences  # noqa: E402

HEADLINE = ("war", "uar", "macro_f1")


Runs = Mapping[tuple[int, int], "str | Path | pd.DataFrame"]
"""Predictions of one experiment: (seed, fold) → that run's predictions.tsv (or its table)."""

PREDICTION_COLUMNS = ("utt_id", "true", "predicted")
UNITS = ("dialog", "speaker", "utterance")  # the resampling units of the paired tests (`stats.unit`)


def keyed_runs(paths: Sequence[str], runs: Sequence[Sequence]) -> dict:
    """Pair a rule's flat list of prediction files with its `runs` parameter, item by item.

    `runs` holds (seed, fold) pairs, giving `Runs`, or (experiment, seed, fold) triples, giving
    {experiment: Runs} in the order the experiments first appear.
    """
    if len(paths) != len(runs):
        raise EvaluationError(
            f"{len(paths)} prediction files but {len(runs)} (seed, fold) entries in params.runs; "
            "the rule's input and params must list the same runs in the same order"
        )
    if all(len(run) == 2 for run in runs):
        return {(int(seed), int(fold)): path for (seed, fold), path in zip(runs, paths, strict=True)}
    grouped: dict[str, dict] = {}
    for (exp, seed, fold), path in zip(runs, paths, strict=True):
        grouped.setdefault(str(exp), {})[(int(seed), int(fold))] = path
    return grouped


def read_predictions(runs: Runs, classes: list[str]) -> pd.DataFrame:
    """All predictions of one experiment with `seed` and `fold` columns added, checked for consistency.

    Every run must have the columns utt_id, true, predicted, labels from `classes` and no repeated utt_id;
    every seed must cover the same folds with the same utterances; no utterance may be tested in two folds.
    """
    if not runs:
        raise EvaluationError("no prediction files were given")
    tables = [_read_run(source, seed, fold, classes) for (seed, fold), source in sorted(runs.items())]
    predictions = pd.concat(tables, ignore_index=True)
    test_sets = {
        seed: frozenset(zip(group["fold"], group["utt_id"], strict=True)) for seed, group in predictions.groupby("seed")
    }
    first_seed, first = next(iter(test_sets.items()))
    for seed, test_set in test_sets.items():
        if test_set != first:
            raise EvaluationError(
                f"seed {seed} was tested on other (fold, utterance) pairs than seed {first_seed} "
                f"({len(test_set ^ first)} differ); every seed must predict every fold's test session"
            )
    folds_per_utt = predictions.groupby("utt_id")["fold"].nunique()
    if (folds_per_utt > 1).any():
        raise EvaluationError(
            f"utterance '{folds_per_utt[folds_per_utt > 1].index[0]}' is a test utterance of more than one fold; "
            "each utterance must be tested exactly once (leave-one-session-out)"
        )
    return predictions


def _read_run(source, seed: int, fold: int, classes: list[str]) -> pd.DataFrame:
    name = "predictions" if isinstance(source, pd.DataFrame) else f"'{source}'"
    table = source.copy() if isinstance(source, pd.DataFrame) else pd.read_csv(source, sep="\t", dtype={"utt_id": str})
    missing = [c for c in PREDICTION_COLUMNS if c not in table.columns]
    if missing:
        raise EvaluationError(f"{name} (seed {seed}, fold {fold}) lacks the column(s) {missing}")
    unknown = sorted(set(table["true"]).union(table["predicted"]) - set(classes))
    if unknown:
        raise EvaluationError(f"{name} (seed {seed}, fold {fold}) has labels {unknown} outside the classes {classes}")
    repeated = table["utt_id"][table["utt_id"].duplicated()]
    if len(repeated):
        raise EvaluationError(f"{name} (seed {seed}, fold {fold}) lists utterance '{repeated.iloc[0]}' twice")
    return table.assign(seed=seed, fold=fold)


def experiment_tables(runs: Runs, classes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(folds table, summary table) of one experiment from its predictions.

    The folds table has one row per fold (columns fold, n, war, …), or with several seeds one row per
    seed × fold and a leading `seed` column. The summary is `metrics.summarize_runs`.
    """
    predictions = read_predictions(runs, classes)
    per_run = run_metrics(predictions, classes)
    folds = per_run if per_run["seed"].nunique() > 1 else per_run.drop(columns="seed")
    return folds, summarize_runs(per_run, predictions, classes)


def comparison_table(
    experiments: Mapping[str, Runs],
    classes: list[str],
    reference: str | None = None,
    resamples: int = 10_000,
    seed: int = 0,
    unit: str = "utterance",
    manifest: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per experiment: headline means over folds (and seeds) with their differences to the reference.

    Columns: experiment, n (test utterances), n_folds, n_seeds; <m>_mean and <m>_std for war, uar, macro_f1
    (over folds, see `summarize_runs`); for war and uar <m>_diff, <m>_diff_ci_low, <m>_diff_ci_high, <m>_p
    against `reference` (default: the first experiment; method in `gmptl.stats`) and <m>_p_holm (Holm-adjusted
    over every experiment compared with the reference); then <m>_pooled; then reference, unit (the resampling
    unit: dialog, speaker or utterance) and n_clusters (test clusters of that unit over all folds).
    `manifest` (utt_id, dialog, speaker) gives the clusters; it is needed unless unit is utterance.
    """
    reference = reference or next(iter(experiments))
    rows, correct = [], {}
    for name, runs in experiments.items():
        predictions = read_predictions(runs, classes)
        summary = summarize_runs(run_metrics(predictions, classes), predictions, classes).set_index("statistic")
        rows.append(_comparison_row(name, summary, int(predictions["seed"].nunique())))
        correct[name] = correctness(predictions)
    if reference not in correct:
        raise EvaluationError(f"reference experiment '{reference}' is not among the compared {sorted(correct)}")
    clusters = test_clusters(correct[reference].index, unit, manifest)
    differences = paired_differences(
        correct, reference, classes, resamples=resamples, seed=seed, clusters=None if unit == "utterance" else clusters
    )
    for metric in ("war", "uar"):
        differences.insert(
            differences.columns.get_loc(f"{metric}_p") + 1, f"{metric}_p_holm", holm(differences[f"{metric}_p"])
        )
    table = pd.DataFrame(rows).merge(differences, on="experiment", how="left")
    tests = [c for c in differences.columns if c != "experiment"]
    pooled = [f"{metric}_pooled" for metric in HEADLINE]
    leading = [c for c in table.columns if c not in tests and c not in pooled]
    counts = cluster_counts(clusters)
    return table[[*leading, *tests, *pooled]].assign(reference=reference, unit=unit, n_clusters=sum(counts.values()))


def test_clusters(index: pd.MultiIndex, unit: str, manifest: pd.DataFrame | None) -> pd.Series:
    """The resampling cluster of every test utterance of `index` (fold, utt_id) for `unit`.

    dialog: the manifest's dialog column (a corpus without dialogues has its speaker there); speaker: the
    manifest's speaker column; utterance: each utterance. An unknown id ('Unknown' or empty) makes each of its
    utterances its own cluster (they cannot be grouped honestly). Cluster ids are prefixed by their fold.
    """
    if unit not in UNITS:
        raise EvaluationError(f"stats.unit '{unit}' is not one of {list(UNITS)}")
    folds, utts = index.get_level_values("fold"), index.get_level_values("utt_id").astype(str)
    if unit == "utterance":
        ids = utts
    else:
        if manifest is None:
            raise EvaluationError(f"stats.unit '{unit}' needs the manifest (its {unit} column) to group utterances")
        missing_column = {"utt_id", unit} - set(manifest.columns)
        if missing_column:
            raise EvaluationError(f"the manifest lacks the column(s) {sorted(missing_column)} that stats.unit needs")
        lookup = manifest.assign(utt_id=manifest["utt_id"].astype(str)).set_index("utt_id")[unit]
        absent = utts[~utts.isin(lookup.index)]
        if len(absent):
            raise EvaluationError(
                f"test utterance '{absent[0]}' is not in the manifest ({len(absent)} are not); "
                "the predictions come from another corpus or manifest"
            )
        values = lookup.loc[utts].astype(str).to_numpy()
        unknown = (values == "Unknown") | (values == "") | (values == "nan")
        ids = np.where(unknown, "utt:" + utts.to_numpy(), values)
    return pd.Series([f"{fold}/{cid}" for fold, cid in zip(folds, ids, strict=True)], index=index, name="cluster")


def _comparison_row(name: str, summary: pd.DataFrame, n_seeds: int) -> dict:
    row = {
        "experiment": name,
        "n": int(summary.loc["pooled", "n"]),
        "n_folds": int(summary.loc["mean", "n"]),
        "n_seeds": n_seeds,
    }
    for metric in HEADLINE:
        row[f"{metric}_mean"] = summary.loc["mean", metric]
        row[f"{metric}_std"] = summary.loc["std", metric]
    row.update({f"{metric}_pooled": summary.loc["pooled", metric] for metric in HEADLINE})
    return row


def plot_confusion(prediction_paths: list[str], classes: list[str], out_path: str | Path, title: str) -> None:
    """Row-normalised confusion matrix pooled over all test utterances."""
    predictions = pd.concat([pd.read_csv(p, sep="\t") for p in prediction_paths], ignore_index=True)
    index = {c: i for i, c in enumerate(classes)}
    matrix = confusion(predictions["true"].map(index), predictions["predicted"].map(index), len(classes))
    rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j,
                i,
                f"{rates[i, j]:.2f}\n({matrix[i, j]})",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if rates[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    _save(fig, out_path)


STAGE_ORDER = ("mtl", "stage1", "stage2")


@dataclass(frozen=True)
class Curve:
    """One trained model's history and the validation round whose weights it kept."""

    stage: str
    fold: int
    seed: int | None
    history: pd.DataFrame
    best_round: int
    selection: str | None  # the history column that chose the round (valid_uar | valid_loss), None without one

    @property
    def selected(self) -> pd.Series:
        """The history row of the selected round."""
        return self.history.set_index("round").loc[self.best_round]


def read_curve(model_dir: str | Path) -> Curve:
    """A model folder's history.tsv and model.json (stage, fold, seed, best_round, selection).

    Model folders written before rounds were named so (`epoch` column, `best_epoch`) are read too."""
    model_dir = Path(model_dir)
    try:
        meta = json.loads((model_dir / "model.json").read_text())
        history = pd.read_csv(model_dir / "history.tsv", sep="\t")
    except (OSError, ValueError) as err:
        raise EvaluationError(f"model folder '{model_dir}' has no readable model.json/history.tsv ({err})") from err
    history = history.rename(columns={"epoch": "round"})
    best = meta.get("best_round", meta.get("best_epoch"))
    if best not in set(history["round"]):
        raise EvaluationError(
            f"'{model_dir}/model.json' names best_round {best}, which is not a round of its history.tsv; "
            "rerun the rule that trains it"
        )
    selection = meta.get("selection") or ("valid_uar" if "valid_uar" in history else "valid_loss")
    return Curve(
        stage=str(meta.get("stage", model_dir.name)),
        fold=int(meta.get("fold", -1)),
        seed=meta.get("seed"),
        history=history,
        best_round=int(best),
        selection=selection if selection in history else None,
    )


def plot_curves(model_dirs: Iterable[str | Path], out_path: str | Path, title: str) -> None:
    """`curves_figure` of the model folders, saved as a PNG."""
    _save(curves_figure([read_curve(path) for path in model_dirs], title), out_path)


def curves_figure(curves: list[Curve], title: str):
    """One row per stage: training loss (left) and the checkpoint-selection score (right) per validation round.

    One line per fold (and seed, when the models come from several); a ringed dot marks the round each
    model kept (model.json's best_round).
    """
    stages = sorted({c.stage for c in curves}, key=lambda s: ((STAGE_ORDER + (s,)).index(s), s))
    several_seeds = len({c.seed for c in curves}) > 1
    fig, axes = plt.subplots(len(stages), 2, figsize=(9, 2.6 * len(stages)), squeeze=False)
    for row, stage in enumerate(stages):
        for curve in sorted((c for c in curves if c.stage == stage), key=lambda c: (c.fold, c.seed or 0)):
            label = f"fold {curve.fold}" + (f" seed {curve.seed}" if several_seeds else "")
            columns = ["train_loss", curve.selection] if curve.selection else ["train_loss"]
            for ax, column in zip(axes[row], columns, strict=False):
                (line,) = ax.plot(curve.history["round"], curve.history[column], label=label, lw=1)
                ax.plot(curve.best_round, curve.selected[column], "o", ms=6, mfc="none", color=line.get_color())
            if curve.selection:
                axes[row, 1].set_ylabel(f"{stage}: {curve.selection}")
        axes[row, 0].set_ylabel(f"{stage}: train loss")
        axes[row, 1].plot([], [], "o", mfc="none", color="grey", label="selected round")
        axes[row, 1].legend(fontsize=6)
    for ax in axes.ravel():
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes[-1]:
        ax.set_xlabel("validation round")
    fig.suptitle(title, fontsize=9)
    return fig


def _save(fig, out_path) -> None:
    fig.tight_layout()
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def closing_summary(comparison_path: str | Path, experiments: Sequence[str], report_hint: str) -> str:
    """What a finished run tells its user: the headline figures per experiment and where everything is."""
    path = Path(comparison_path)
    if not path.is_file():
        return ""
    table = pd.read_csv(path, sep="\t").set_index("experiment")
    lines = ["", f"gmptl: results ({path}; headline = mean over folds ± std, in %)"]
    for name in (e for e in experiments if e in table.index):
        row = table.loc[name]
        text = f"  {name:<20} UAR {100 * row['uar_mean']:6.2f} ± {100 * row['uar_std']:5.2f}"
        text += f"   WAR {100 * row['war_mean']:6.2f} ± {100 * row['war_std']:5.2f}"
        if name != row.get("reference") and pd.notna(row.get("uar_p")):
            low, high = 100 * row["uar_diff_ci_low"], 100 * row["uar_diff_ci_high"]
            diff = f"{100 * row['uar_diff']:+.2f} [{low:+.2f}, {high:+.2f}] p={row['uar_p']:.3g}"
            if pd.notna(row.get("uar_p_holm")):
                diff += f" (Holm {row['uar_p_holm']:.3g})"
            text += f"   ΔUAR vs {row['reference']} {diff}"
        lines.append(text)
    if "unit" in table.columns:
        unit, count = table["unit"].iloc[0], table["n_clusters"].iloc[0]
        lines.append(f"  paired tests resample whole {unit} clusters within folds ({count} test clusters)")
    lines += [
        "  per experiment: results/<exp>/metrics/summary.tsv, metrics/folds.tsv, plots/, stages.tsv",
        f"  report: {report_hint}",
        "",
    ]
    return "\n".join(lines)
