"""Rule build_manifest: read the corpus (any `corpus.format`) into results/manifest.tsv and its count table."""

import logging

import use_workflow_library  # noqa: F401  (first: this workflow's gmptl, not an installed copy)

from gmptl.corpus import CorpusSettings, count_table, full_release_differences, read_corpus
from gmptl.fileio import write_tsv
from gmptl.runtime import setup_logging

log = logging.getLogger("build_manifest")


def main(corpus: dict, manifest_path: str, counts_path: str, check_full_release: bool = True) -> None:
    settings = CorpusSettings.from_config(corpus)
    manifest = read_corpus(settings).manifest
    counts = count_table(manifest, list(settings.classes))
    log.info("%d utterances; counts per session:\n%s", len(manifest), counts.to_string(index=False))
    if settings.format == "iemocap" and settings.subset == "all" and check_full_release:
        differences = full_release_differences(manifest)
        if differences:
            log.warning("this corpus differs from the full IEMOCAP release: %s", "; ".join(differences))
    write_tsv(counts, counts_path)
    write_tsv(manifest, manifest_path)


if __name__ == "__main__":
    setup_logging(snakemake.log[0])
    check = snakemake.config["runtime"]["check_full_release"]  # a warning only: not a param, never a rerun trigger
    main(snakemake.params.corpus, snakemake.output.manifest, snakemake.output.counts, check)
