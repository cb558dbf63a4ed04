"""Rule make_folds: leave-one-session-out folds with validation from the training sessions."""

import logging

import pandas as pd

from gmptl.fileio import write_tsv
from gmptl.folds import make_folds
from gmptl.runtime import setup_logging

log = logging.getLogger("make_folds")


def main(manifest_path: str, folds_path: str, settings: dict, seed: int) -> None:
    manifest = pd.read_csv(manifest_path, sep="\t")
    folds = make_folds(manifest, settings["validation"], settings["valid_fraction"], seed)
    sizes = folds.groupby(["fold", "split"]).size().unstack(fill_value=0)
    log.info("fold sizes (validation: %s):\n%s", settings["validation"], sizes.to_string())
    write_tsv(folds, folds_path)


if __name__ == "__main__":
    setup_logging(snakemake.log[0])
    main(snakemake.input.manifest, snakemake.output.folds, snakemake.params.folds, snakemake.params.seed)
