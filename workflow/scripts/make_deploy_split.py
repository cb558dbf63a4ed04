"""Rule make_deploy_split: the split of the deploy models (fold 0: all data trains, validation held out)."""

import use_workflow_library  # noqa: F401  (first: this workflow's gmptl, not an installed copy)

from gmptl.corpus import read_manifest
from gmptl.fileio import write_tsv
from gmptl.folds import deploy_split
from gmptl.runtime import setup_logging

if __name__ == "__main__":
    setup_logging(snakemake.log[0])
    settings = snakemake.params.folds
    split = deploy_split(
        read_manifest(snakemake.input.manifest),
        settings["validation"],
        settings["valid_fraction"],
        snakemake.params.seed,
    )
    write_tsv(split, snakemake.output.split)
