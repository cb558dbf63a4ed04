"""Per-experiment tables and plots: fold metrics, summary, comparison, confusion matrix, training curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .fileio import atomic_path  # noqa: E402
from .metrics import confusion, summarize_folds  # noqa: E402


def experiment_tables(metrics_paths: list[str], prediction_paths: list[str], classes: list[str]):
    """(folds table, summary table) of one experiment from its per-fold files."""
    folds = pd.concat([pd.read_csv(p, sep="\t") for p in metrics_paths], ignore_index=True).sort_values("fold")
    predictions = pd.concat([pd.read_csv(p, sep="\t") for p in prediction_paths], ignore_index=True)
    return folds.reset_index(drop=True), summarize_folds(folds, predictions, classes)


def comparison_table(summaries: dict[str, str]) -> pd.DataFrame:
    """One row per experiment: pooled and mean ± std of WAR, UAR and macro-F1."""
    rows = []
    for name, path in summaries.items():
        table = pd.read_csv(path, sep="\t").set_index("statistic")
        row = {"experiment": name, "n": int(table.loc["pooled", "n"])}
        for metric in ("war", "uar", "macro_f1"):
            row[f"{metric}_pooled"] = table.loc["pooled", metric]
            row[f"{metric}_mean"] = table.loc["mean", metric]
            row[f"{metric}_std"] = table.loc["std", metric]
        rows.append(row)
    return pd.DataFrame(rows)


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


def plot_curves(history_paths: dict[str, str], out_path: str | Path, title: str) -> None:
    """One row per stage: training loss and the checkpoint-selection score per epoch, one line per fold.

    `history_paths` maps '<stage>_fold<N>' to that model's history.tsv.
    """
    stages = sorted({label.rsplit("_fold", 1)[0] for label in history_paths}, key=["mtl", "stage1", "stage2"].index)
    fig, axes = plt.subplots(len(stages), 2, figsize=(9, 2.6 * len(stages)), squeeze=False)
    for row, stage in enumerate(stages):
        for label, path in sorted(history_paths.items()):
            if label.rsplit("_fold", 1)[0] != stage:
                continue
            history = pd.read_csv(path, sep="\t")
            fold = label.rsplit("_fold", 1)[1]
            axes[row, 0].plot(history["epoch"], history["train_loss"], label=f"fold {fold}", lw=1)
            score = "valid_uar" if "valid_uar" in history else "valid_loss"
            if score in history:
                axes[row, 1].plot(history["epoch"], history[score], label=f"fold {fold}", lw=1)
                axes[row, 1].set_ylabel(f"{stage}: {score}")
        axes[row, 0].set_ylabel(f"{stage}: train loss")
        axes[row, 1].legend(fontsize=6)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    fig.suptitle(title, fontsize=9)
    _save(fig, out_path)


def _save(fig, out_path) -> None:
    fig.tight_layout()
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
