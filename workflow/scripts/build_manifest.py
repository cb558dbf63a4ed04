"""Rule build_manifest: read the IEMOCAP tree into results/manifest.tsv and its count table."""

import logging

from gmptl.corpus import build_manifest, count_table, full_release_differences
from gmptl.fileio import write_tsv
from gmptl.runtime import setup_logging

log = logging.getLogger("build_manifest")


def main(corpus: dict, manifest_path: str, counts_path: str, check_full_release: bool = True) -> None:
    manifest = build_manifest(
        corpus["root"],
        corpus["sessions"],
        corpus["label_map"],
        corpus["classes"],
        sample_rate=corpus["sample_rate"],
        on_format_mismatch=corpus["on_format_mismatch"],
        on_missing_audio=corpus["on_missing_audio"],
    )
    counts = count_table(manifest, corpus["classes"])
    log.info("%d utterances; counts per session:\n%s", len(manifest), counts.to_string(index=False))
    if check_full_release:
        differences = full_release_differences(manifest)
        if differences:
            log.warning("this corpus differs from the full IEMOCAP release: %s", "; ".join(differences))
    write_tsv(counts, counts_path)
    write_tsv(manifest, manifest_path)


if __name__ == "__main__":
    setup_logging(snakemake.log[0])
    check = snakemake.config["corpus"]["check_full_release"]  # a warning only: not a param, never a rerun trigger
    main(snakemake.params.corpus, snakemake.output.manifest, snakemake.output.counts, check)
