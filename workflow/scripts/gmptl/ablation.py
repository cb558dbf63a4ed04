"""The ablation table of a grid (`gmptl.grid`): one row per grid point, its varied values, its headline figures and
its paired difference to the base experiment; a plot with one panel per varied key; an HTML page.

The differences and tests are `report.comparison_table`'s with the base as the reference and the grid's points
as the family of the Holm adjustment.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .grid import GridPoint, shown_value  # noqa: E402
from .html_report import METRIC_NAMES, _cell, _table, p_value, page, percent, unit_sentence  # noqa: E402
from .report import Runs, _save, comparison_table  # noqa: E402
from .stats import EvaluationError  # noqa: E402

SUFFIXES = ("diff", "diff_ci_low", "diff_ci_high", "p", "p_holm")
TESTED = [f"{metric}_{suffix}" for metric in ("uar", "war") for suffix in SUFFIXES]


def ablation_table(
    experiments: Mapping[str, Runs],
    points: Sequence[GridPoint],
    base: str,
    classes: list[str],
    *,
    resamples: int = 10_000,
    seed: int = 0,
    unit: str = "utterance",
    manifest: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per grid point: experiment, one column per varied key (its value as written), n_seeds, UAR and WAR
    mean ± std over folds, then for UAR and WAR the difference to `base` with its CI, p and Holm-adjusted p
    (over the grid's points), then base, unit and n_clusters.

    `experiments` holds the predictions of the base and of every point (the base itself need not be a point).
    """
    missing = [name for name in [base, *(p.name for p in points)] if name not in experiments]
    if missing:
        raise EvaluationError(f"the ablation lacks the predictions of {missing}")
    names = list(dict.fromkeys([base, *(point.name for point in points)]))
    compared = comparison_table(
        {name: experiments[name] for name in names},
        classes,
        reference=base,
        resamples=resamples,
        seed=seed,
        unit=unit,
        manifest=manifest,
    ).set_index("experiment")
    keys = list(points[0].values) if points else []
    rows = []
    for point in points:
        row = {"experiment": point.name, **{key: shown_value(point.values[key]) for key in keys}}
        result = compared.loc[point.name]
        row["n_seeds"] = int(result["n_seeds"])
        row.update({column: result[column] for column in ("uar_mean", "uar_std", "war_mean", "war_std")})
        row.update({column: result[column] for column in TESTED})
        rows.append(row)
    table = pd.DataFrame(rows)
    table = table.assign(base=base, unit=compared["unit"].iloc[0], n_clusters=int(compared["n_clusters"].iloc[0]))
    return table


def plot_ablation(table: pd.DataFrame, keys: Sequence[str], out_path: str | Path, title: str) -> None:
    """One panel per varied key: every grid point's UAR (mean ± std over folds) at its value of that key, the mean
    over the points sharing a value joined by a line, and the base's UAR (a point's mean less its difference) as a
    dashed line."""
    base_uar = float((table["uar_mean"] - table["uar_diff"]).iloc[0]) if len(table) else float("nan")
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.4), squeeze=False, sharey=True)
    for ax, key in zip(axes[0], keys, strict=True):
        levels = list(dict.fromkeys(table[key]))
        position = {level: i for i, level in enumerate(levels)}
        for _, rows in table.groupby(key, sort=False):  # the points at one value, side by side
            offsets = np.linspace(-0.15, 0.15, len(rows)) if len(rows) > 1 else [0.0]
            for offset, (_, row) in zip(offsets, rows.iterrows(), strict=True):
                x = position[row[key]] + offset
                ax.errorbar(x, 100 * row["uar_mean"], yerr=100 * row["uar_std"], fmt="o", ms=4, color="C0", alpha=0.7)
        means = table.groupby(key, sort=False)["uar_mean"].mean().reindex(levels)
        ax.plot(range(len(levels)), 100 * means.to_numpy(), "-s", color="C1", label="mean over points")
        ax.axhline(100 * base_uar, ls="--", color="grey", label="base")
        ax.set_xticks(range(len(levels)), levels, rotation=30 if max(len(str(v)) for v in levels) > 6 else 0)
        ax.set_xlabel(key)
        ax.set_xlim(-0.5, len(levels) - 0.5)
    axes[0][0].set_ylabel("UAR (%), mean ± std over folds")
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=9)
    _save(fig, out_path)


def ablation_page(table: pd.DataFrame, keys: Sequence[str], alpha: float = 0.05) -> str:
    """The ablation table as a page: varied values, UAR and WAR mean ± std, Δ to the base with CI, p and Holm p."""
    base = table["base"].iloc[0]
    heads = ["experiment", *keys]
    for metric in ("uar", "war"):
        name = METRIC_NAMES[metric]
        heads += [f"{name} mean ± std", f"Δ{name} [95 % CI]", f"p ({name})", f"p Holm ({name})"]
    rows = []
    for _, row in table.iterrows():
        cells = [_cell(row["experiment"], "name"), *(_cell(row[key]) for key in keys)]
        for metric in ("uar", "war"):
            holm_p = row[f"{metric}_p_holm"]
            mark = "sig" if holm_p < alpha else ""
            low, high = percent(row[f"{metric}_diff_ci_low"], True), percent(row[f"{metric}_diff_ci_high"], True)
            diff = f"{percent(row[f'{metric}_diff'], True)} [{low}, {high}]" if pd.notna(row[f"{metric}_p"]) else "—"
            cells.append(_cell(f"{percent(row[f'{metric}_mean'])} ± {percent(row[f'{metric}_std'])}"))
            cells += [_cell(diff, mark), _cell(p_value(row[f"{metric}_p"]) if pd.notna(row[f"{metric}_p"]) else "")]
            cells.append(_cell(p_value(holm_p) + (" *" if mark else "") if pd.notna(holm_p) else "", mark))
        rows.append(("", cells))
    body = _table(heads, rows) + (
        f"<p>One row per grid point ({len(table)}). Metrics in percent, mean ± std over folds. Δ: difference to the "
        f"base {html.escape(str(base))} in percentage points with a 95 % paired bootstrap CI and a paired "
        f"permutation p-value, {unit_sentence(table)}; <em>p Holm</em>: adjusted over the grid's points; "
        f"highlighted where the Holm-adjusted p &lt; {alpha}.</p>"
    )
    return page(f"Ablation grid on {base}", body)
