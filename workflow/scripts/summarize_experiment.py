"""Rule summarize_experiment: per-fold table and summary (mean, std, pooled) of one experiment."""

import logging

from gmptl.fileio import write_tsv
from gmptl.report import experiment_tables
from gmptl.runtime import setup_logging

log = logging.getLogger("summarize_experiment")

if __name__ == "__main__":
    setup_logging(snakemake.log[0])
    folds, summary = experiment_tables(
        list(snakemake.input.metrics),
        list(snakemake.input.predictions),
        snakemake.params.classes,
    )
    log.info("summary:\n%s", summary.to_string(index=False))
    write_tsv(folds, snakemake.output.folds, float_format="%.6f")
    write_tsv(summary, snakemake.output.summary, float_format="%.6f")
