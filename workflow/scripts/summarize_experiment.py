"""Rule summarize_experiment: per-fold table, summary (mean, std, pooled) and settings page of one experiment."""

import logging

import use_workflow_library  # noqa: F401  (first: this workflow's gmptl, not an installed copy)

from gmptl.fileio import write_tsv
from gmptl.html_report import metrics_page, settings_page, write_page
from gmptl.report import experiment_tables, keyed_runs
from gmptl.runtime import setup_logging

log = logging.getLogger("summarize_experiment")

FOLDS_NOTE = (
    "One row per test fold (and seed): n test utterances, WAR (accuracy), UAR (unweighted average recall), "
    "macro-F1 and the recall of each class, in percent."
)
SUMMARY_NOTE = (
    "mean and std: over folds (per-fold figures averaged over seeds), n = folds; pooled: over all test utterances "
    "of all seeds, n = test utterances; seed_mean and seed_std (several seeds only): over the seeds' fold-means, "
    "n = seeds. In percent."
)

if __name__ == "__main__":
    setup_logging(snakemake.log[0])
    exp = snakemake.wildcards.exp
    runs = keyed_runs(list(snakemake.input.predictions), snakemake.params.runs)
    folds, summary = experiment_tables(runs, snakemake.params.classes)
    log.info("summary:\n%s", summary.to_string(index=False))
    write_tsv(folds, snakemake.output.folds, float_format="%.6f")
    write_tsv(summary, snakemake.output.summary, float_format="%.6f")
    write_page(metrics_page(folds, f"{exp}: metrics per fold", FOLDS_NOTE), snakemake.output.folds_html)
    write_page(metrics_page(summary, f"{exp}: summary", SUMMARY_NOTE), snakemake.output.summary_html)
    write_page(settings_page(snakemake.params.settings, f"{exp}: effective settings"), snakemake.output.settings_html)
