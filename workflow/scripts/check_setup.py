"""Rule check_setup: what can be checked before any training (layers, k, utterance lengths) is checked first."""

import logging

import pandas as pd
import use_workflow_library  # noqa: F401  (first: this workflow's gmptl, not an installed copy)

from gmptl.corpus import read_manifest
from gmptl.fileio import atomic_path
from gmptl.preflight import run_preflight
from gmptl.runtime import setup_logging

log = logging.getLogger("check_setup")

if __name__ == "__main__":
    setup_logging(snakemake.log[0])
    report = run_preflight(
        read_manifest(snakemake.input.manifest),
        pd.read_csv(snakemake.input.folds, sep="\t"),
        snakemake.params.checks,
        snakemake.params.sample_rate,
    )
    log.info("checks passed:\n%s", "\n".join(report))
    with atomic_path(snakemake.output.report) as tmp:
        tmp.write_text("\n".join(report) + "\n")
