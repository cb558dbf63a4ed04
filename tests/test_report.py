"""Experiment tables from prediction files, the comparison, its HTML pages and the training-curve plot."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from gmptl.fileio import write_tsv
from gmptl.html_report import comparison_page, metrics_page, settings_page, significance_sentence
from gmptl.report import comparison_table, experiment_tables, keyed_runs, plot_curves, read_curve
from gmptl.stats import EvaluationError

CLASSES = ["neu", "hap", "ang", "sad"]


def fold_predictions(fold: int, n: int, accuracy: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng([fold, seed, int(accuracy * 100)])
    true = np.array(CLASSES)[np.arange(n) % 4]
    shifted = np.array(CLASSES)[(np.arange(n) + rng.integers(1, 4, n)) % 4]
    return pd.DataFrame(
        {
            "utt_id": [f"Ses0{fold}F_u{i:03d}" for i in range(n)],
            "true": true,
            "predicted": np.where(rng.random(n) < accuracy, true, shifted),
        }
    )


def write_runs(root, accuracy: float, seeds=(42,), folds=(1, 2, 3), n=80) -> dict:
    runs = {}
    for seed in seeds:
        for fold in folds:
            path = root / f"seed{seed}" / f"fold{fold}" / "predictions.tsv"
            write_tsv(fold_predictions(fold, n, accuracy, seed), path)
            runs[(seed, fold)] = str(path)
    return runs


def test_one_seed_gives_one_row_per_fold_and_counts_per_row(tmp_path):
    folds, summary = experiment_tables(write_runs(tmp_path, 0.7), CLASSES)
    assert list(folds.columns[:3]) == ["fold", "n", "war"] and folds["fold"].tolist() == [1, 2, 3]
    assert summary.set_index("statistic")["n"].to_dict() == {"mean": 3, "std": 3, "pooled": 240}


def test_several_seeds_give_seed_by_fold_rows_and_seed_statistics(tmp_path):
    folds, summary = experiment_tables(write_runs(tmp_path, 0.7, seeds=(42, 43)), CLASSES)
    assert list(folds.columns[:2]) == ["seed", "fold"] and len(folds) == 6
    table = summary.set_index("statistic")
    assert table.loc["seed_mean", "n"] == 2 and table.loc["pooled", "n"] == 240
    assert table.loc["mean", "uar"] == pytest.approx(folds.groupby("seed")["uar"].mean().mean())


def test_a_seed_missing_a_fold_is_an_error(tmp_path):
    runs = write_runs(tmp_path, 0.7, seeds=(42, 43))
    del runs[(43, 2)]
    with pytest.raises(EvaluationError, match="seed 43 was tested on other"):
        experiment_tables(runs, CLASSES)


def test_unknown_label_is_an_error_naming_the_file(tmp_path):
    runs = write_runs(tmp_path, 0.7)
    table = pd.read_csv(runs[(42, 2)], sep="\t")
    table.loc[0, "predicted"] = "fru"
    write_tsv(table, runs[(42, 2)])
    with pytest.raises(EvaluationError, match=r"fold2/predictions.tsv' \(seed 42, fold 2\) has labels \['fru'\]"):
        experiment_tables(runs, CLASSES)


def test_an_utterance_tested_in_two_folds_is_an_error():
    runs = {(1, 1): fold_predictions(1, 8, 0.5, 1), (1, 2): fold_predictions(1, 8, 0.5, 1)}
    with pytest.raises(EvaluationError, match="more than one fold"):
        experiment_tables(runs, CLASSES)


def test_keyed_runs_pairs_files_with_runs_and_groups_experiments():
    assert keyed_runs(["p1", "p2"], [[42, 1], [42, 2]]) == {(42, 1): "p1", (42, 2): "p2"}
    grouped = keyed_runs(["a1", "b1"], [["b", 42, 1], ["a", 42, 1]])
    assert list(grouped) == ["b", "a"] and grouped["a"] == {(42, 1): "b1"}
    with pytest.raises(EvaluationError, match="2 prediction files but 1"):
        keyed_runs(["p1", "p2"], [[42, 1]])


@pytest.fixture
def comparison(tmp_path):
    experiments = {
        "baseline": write_runs(tmp_path / "baseline", 0.55, n=200),
        "same": write_runs(tmp_path / "same", 0.55, n=200),
        "gmp_tl": write_runs(tmp_path / "gmp_tl", 0.85, seeds=(42, 43), n=200),
    }
    return comparison_table(experiments, CLASSES, resamples=2000, seed=0)


def test_comparison_leads_with_means_then_tests_then_pooled(comparison):
    columns = list(comparison.columns)
    assert columns[:4] == ["experiment", "n", "n_folds", "n_seeds"]
    assert columns.index("uar_mean") < columns.index("uar_diff") < columns.index("uar_pooled")
    for metric in ("war", "uar"):
        for suffix in ("diff", "diff_ci_low", "diff_ci_high", "p"):
            assert f"{metric}_{suffix}" in columns
    row = comparison.set_index("experiment").loc["gmp_tl"]
    assert row["n_seeds"] == 2 and row["n"] == 600 and row["reference"] == "baseline"
    assert row["uar_p"] < 0.001 and row["uar_diff_ci_low"] > 0.2


def test_holm_adjusted_p_values_are_at_least_the_raw_ones_and_the_unit_is_stated(comparison):
    tested = comparison[comparison["experiment"] != "baseline"]
    for metric in ("war", "uar"):
        assert (tested[f"{metric}_p_holm"] >= tested[f"{metric}_p"]).all()
        # two comparisons: the smaller p doubles, the larger one is kept (or the doubled smaller, if larger)
        low, high = sorted(tested[f"{metric}_p"])
        assert sorted(tested[f"{metric}_p_holm"]) == pytest.approx([min(1, 2 * low), min(1, max(2 * low, high))])
        assert comparison[f"{metric}_p_holm"].isna().tolist() == [True, False, False]
    assert list(comparison.columns[-3:]) == ["reference", "unit", "n_clusters"]
    assert set(comparison["unit"]) == {"utterance"} and set(comparison["n_clusters"]) == {600}


def dialog_manifest(n=200, folds=(1, 2, 3), per_dialog=25) -> pd.DataFrame:
    """The manifest rows of `write_runs`'s utterances: dialogues of `per_dialog` consecutive utterances."""
    rows = [
        {"utt_id": f"Ses0{fold}F_u{i:03d}", "dialog": f"Ses0{fold}_d{i // per_dialog}", "speaker": f"S{fold}{i % 2}"}
        for fold in folds
        for i in range(n)
    ]
    return pd.DataFrame(rows)


def test_dialog_unit_counts_clusters_and_widens_the_interval_on_correlated_dialogues(tmp_path):
    """Hits that come in dialogue blocks: resampling whole dialogues gives a wider CI than single utterances."""
    rng = np.random.default_rng(3)
    runs = {}
    for name in ("ref", "exp"):
        tables = {}
        for fold in (1, 2, 3):
            table = fold_predictions(fold, 200, 0.0, 1)
            good = np.repeat(rng.random(8) < 0.5, 25)  # each dialogue all right or all wrong
            table["predicted"] = np.where(good, table["true"], table["predicted"])
            tables[(42, fold)] = table
        runs[name] = tables
    manifest = dialog_manifest()
    by_utt = comparison_table(runs, CLASSES, resamples=2000, unit="utterance").set_index("experiment").loc["exp"]
    by_dialog = comparison_table(runs, CLASSES, resamples=2000, unit="dialog", manifest=manifest)
    row = by_dialog.set_index("experiment").loc["exp"]
    assert row["unit"] == "dialog" and row["n_clusters"] == 24  # 8 dialogues in each of 3 folds
    assert row["uar_diff"] == pytest.approx(by_utt["uar_diff"])  # same headline statistic
    width = lambda r: r["uar_diff_ci_high"] - r["uar_diff_ci_low"]  # noqa: E731
    assert width(row) > 2.5 * width(by_utt)  # 25 perfectly correlated utterances per dialogue: about √25 wider
    speakers = comparison_table(runs, CLASSES, resamples=200, unit="speaker", manifest=manifest)
    assert set(speakers["n_clusters"]) == {6}


def test_clustered_unit_needs_every_test_utterance_in_the_manifest(tmp_path):
    experiments = {"a": write_runs(tmp_path / "a", 0.6, n=200), "b": write_runs(tmp_path / "b", 0.7, n=200)}
    with pytest.raises(EvaluationError, match="needs the manifest"):
        comparison_table(experiments, CLASSES, resamples=10, unit="dialog")
    manifest = dialog_manifest().iloc[1:]
    with pytest.raises(EvaluationError, match="'Ses01F_u000' is not in the manifest"):
        comparison_table(experiments, CLASSES, resamples=10, unit="dialog", manifest=manifest)
    with pytest.raises(EvaluationError, match="stats.unit 'session' is not one of"):
        comparison_table(experiments, CLASSES, resamples=10, unit="session", manifest=manifest)


def test_reference_row_has_zero_difference_and_empty_cells_in_the_tsv(comparison, tmp_path):
    write_tsv(comparison, tmp_path / "comparison.tsv", float_format="%.6f")
    lines = (tmp_path / "comparison.tsv").read_text().splitlines()
    header, first = lines[0].split("\t"), lines[1].split("\t")
    reference = dict(zip(header, first, strict=True))
    assert reference["experiment"] == "baseline" and float(reference["uar_diff"]) == 0
    assert reference["uar_diff_ci_low"] == reference["uar_p"] == ""


def test_experiments_on_other_test_utterances_cannot_be_compared(tmp_path):
    experiments = {"a": write_runs(tmp_path / "a", 0.6), "b": write_runs(tmp_path / "b", 0.6, folds=(1, 2))}
    with pytest.raises(EvaluationError, match=r"\['b'\] were not evaluated on the same test utterances"):
        comparison_table(experiments, CLASSES, resamples=10)


def test_comparison_page_shows_intervals_p_values_and_a_sentence(comparison):
    text = comparison_page(comparison)
    row = comparison.set_index("experiment").loc["gmp_tl"]
    for value in (row["uar_diff"], row["uar_diff_ci_low"], row["uar_diff_ci_high"], row["war_diff_ci_high"]):
        assert f"{100 * value:+.2f}" in text
    assert f"{100 * row['uar_mean']:.2f} ± {100 * row['uar_std']:.2f}" in text
    assert "Significant at the 0.05 level, against baseline: gmp_tl has a higher UAR" in text
    assert text.count('class="sig"') == 6  # gmp_tl's ΔUAR, ΔWAR, both p and both Holm p; 'same' is not significant
    assert "p Holm (UAR)" in text and "resampling whole utterances within folds (600 utterances)" in text
    assert "same has" not in text


def test_sentence_says_when_nothing_is_significant(comparison):
    assert significance_sentence(comparison[comparison["experiment"] != "gmp_tl"]) == (
        "No experiment differs significantly from baseline in UAR or WAR at the 0.05 level "
        "(Holm-adjusted for all comparisons)."
    )


def test_metrics_page_shows_percentages_and_counts(tmp_path):
    folds, summary = experiment_tables(write_runs(tmp_path, 0.7), CLASSES)
    text = metrics_page(summary, "gmp_tl: summary", "note <b>")
    assert f"<td>{100 * summary.loc[2, 'uar']:.2f}</td>" in text and "<td>240</td>" in text
    assert "note &lt;b&gt;" in text


def test_settings_page_is_readable_yaml_and_escaped():
    text = settings_page({"seed": 42, "gmp": {"layers": (6, 9), "k": [64, 512]}, "note": "<x>"}, "gmp_tl: settings")
    assert "seed: 42\ngmp:\n  layers:\n  - 6\n  - 9\n" in text
    assert "note: &lt;x&gt;" in text


def write_model(folder, stage, fold, losses, scores, best_round, selection="valid_uar"):
    folder.mkdir(parents=True)
    rounds = range(1, len(losses) + 1)
    pd.DataFrame({"round": rounds, "train_loss": losses, selection: scores}).to_csv(
        folder / "history.tsv", sep="\t", index=False
    )
    meta = {"stage": stage, "fold": fold, "seed": 42, "best_round": best_round, "selection": selection}
    (folder / "model.json").write_text(json.dumps(meta))
    return folder


def test_read_curve_finds_the_selected_round(tmp_path):
    folder = write_model(tmp_path / "stage2", "stage2", 1, [3, 2, 1.5], [0.5, 0.7, 0.6], best_round=2)
    curve = read_curve(folder)
    assert (curve.stage, curve.fold, curve.best_round, curve.selection) == ("stage2", 1, 2, "valid_uar")
    assert curve.selected["valid_uar"] == 0.7 and curve.selected["train_loss"] == 2


def test_read_curve_reads_a_model_folder_from_before_rounds_were_named_so(tmp_path):
    folder = write_model(tmp_path / "stage2", "stage2", 1, [3, 2, 1.5], [0.5, 0.7, 0.6], best_round=3)
    history = pd.read_csv(folder / "history.tsv", sep="\t").rename(columns={"round": "epoch"})
    history.to_csv(folder / "history.tsv", sep="\t", index=False)
    meta = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**meta, "best_epoch": meta.pop("best_round")}))
    curve = read_curve(folder)
    assert curve.best_round == 3 and curve.selected["valid_uar"] == 0.6


def test_a_best_round_outside_the_history_is_an_error(tmp_path):
    folder = write_model(tmp_path / "stage2", "stage2", 1, [3, 2], [0.5, 0.7], best_round=5)
    with pytest.raises(EvaluationError, match="best_round 5, which is not a round"):
        read_curve(folder)


def test_plot_curves_draws_every_stage(tmp_path):
    models = [
        write_model(tmp_path / "s1f1", "stage1", 1, [5, 4, 3], [4.5, 4.1, 4.2], 2, selection="valid_loss"),
        write_model(tmp_path / "s2f1", "stage2", 1, [2, 1, 0.5], [0.5, 0.7, 0.6], 2),
        write_model(tmp_path / "s2f2", "stage2", 2, [2, 1, 0.5], [0.4, 0.6, 0.65], 3),
    ]
    plot_curves(models, tmp_path / "curves.png", "test")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    from gmptl.report import curves_figure

    fig = curves_figure([read_curve(m) for m in models], "test")
    axes = fig.axes
    assert len(axes) == 4  # 2 stages × (loss, selection score)
    assert [ax.get_ylabel() for ax in axes] == [
        "stage1: train loss",
        "stage1: valid_loss",
        "stage2: train loss",
        "stage2: valid_uar",
    ]

    def drawn(ax):  # (x, y) of every line with data: the curves, then the ringed selected rounds
        return [(list(line.get_xdata()), list(line.get_ydata())) for line in ax.lines if len(line.get_xdata())]

    assert drawn(axes[0]) == [([1, 2, 3], [5, 4, 3]), ([2], [4])]
    assert drawn(axes[1]) == [([1, 2, 3], [4.5, 4.1, 4.2]), ([2], [4.1])]
    assert drawn(axes[3]) == [([1, 2, 3], [0.5, 0.7, 0.6]), ([2], [0.7]), ([1, 2, 3], [0.4, 0.6, 0.65]), ([3], [0.65])]
    assert [t.get_text() for t in axes[3].get_legend().get_texts()] == ["fold 1", "fold 2", "selected round"]


def test_a_finished_run_ends_with_the_headline_figures_and_where_things_are(tmp_path):
    from gmptl.report import closing_summary

    table = pd.DataFrame(
        [
            {"experiment": "finetune", "uar_mean": 0.70, "uar_std": 0.02, "war_mean": 0.69, "war_std": 0.01,
             "reference": "finetune", "uar_diff": 0.0, "uar_p": float("nan")},
            {"experiment": "gmp_tl", "uar_mean": 0.7312, "uar_std": 0.02, "war_mean": 0.72, "war_std": 0.01,
             "reference": "finetune", "uar_diff": 0.0312, "uar_diff_ci_low": 0.0145, "uar_diff_ci_high": 0.0478,
             "uar_p": 0.0004},
        ]
    )  # fmt: skip
    table.to_csv(tmp_path / "comparison.tsv", sep="\t", index=False)
    text = closing_summary(tmp_path / "comparison.tsv", ["finetune", "gmp_tl"], "snakemake --report report.html")
    assert "finetune             UAR  70.00 ±  2.00" in text
    assert (
        "gmp_tl               UAR  73.12 ±  2.00   WAR  72.00 ±  1.00   ΔUAR vs finetune +3.12 [+1.45, +4.78]" in text
    )
    assert "snakemake --report report.html" in text and "metrics/summary.tsv" in text
    assert closing_summary(tmp_path / "absent.tsv", ["x"], "") == ""
