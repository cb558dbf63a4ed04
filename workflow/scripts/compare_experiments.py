"""Rule compare_experiments: all experiments side by side, with paired tests against the reference
(results/comparison.tsv and its HTML page)."""

import logging

import use_workflow_library  # noqa: F401  (first: this workflow's gmptl, not an installed copy)

from gmptl.corpus import read_manifest
from gmptl.fileio import write_tsv
from gmptl.html_report import comparison_page, write_page
from gmptl.report import comparison_table, keyed_runs
from gmptl.runtime import setup_logging

log = logging.getLogger("compare_experiments")

if __name__ == "__main__":
    setup_logging(snakemake.log[0])
    experiments = keyed_runs(list(snakemake.input.predictions), snakemake.params.runs)
    stats = snakemake.params.stats
    manifest = read_manifest(snakemake.input.manifest)
    comparison = comparison_table(
        experiments,
        snakemake.params.classes,
        reference=snakemake.params.reference,
        resamples=stats["resamples"],
        seed=stats["seed"],
        unit=stats["unit"],
        manifest=manifest,
    )
    log.info("comparison:\n%s", comparison.to_string(index=False))
    write_tsv(comparison, snakemake.output.comparison, float_format="%.6f")
    write_page(comparison_page(comparison), snakemake.output.html)
