"""Rule make_folds: the folds of the manifest under folds.protocol, validation from training data only."""

import logging

import use_workflow_library  # noqa: F401  (first: this workflow's gmptl, not an installed copy)

from gmptl.corpus import read_manifest
from gmptl.fileio import write_tsv
from gmptl.folds import make_folds
from gmptl.runtime import setup_logging

log = logging.getLogger("make_folds")


def main(manifest_path: str, folds_path: str, settings: dict, seed: int) -> None:
    manifest = read_manifest(manifest_path)
    folds = make_folds(
        manifest,
        validation=settings["validation"],
        valid_fraction=settings["valid_fraction"],
        seed=seed,
        protocol=settings.get("protocol", "session"),
        k=settings.get("k", 5),
    )
    sizes = folds.groupby(["fold", "split"]).size().unstack(fill_value=0)
    log.info(
        "fold sizes (protocol: %s, validation: %s):\n%s",
        settings.get("protocol", "session"),
        settings["validation"],
        sizes.to_string(),
    )
    write_tsv(folds, folds_path)


if __name__ == "__main__":
    setup_logging(snakemake.log[0])
    main(snakemake.input.manifest, snakemake.output.folds, snakemake.params.folds, snakemake.params.seed)
