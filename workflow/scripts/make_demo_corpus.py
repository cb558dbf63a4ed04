"""Rule make_demo_corpus: write the synthetic demo corpus (IEMOCAP, RAVDESS or table layout)."""

import logging

import use_workflow_library  # noqa: F401  (first: this workflow's gmptl, not an installed copy)

from gmptl.demo import make_demo_corpus
from gmptl.fileio import atomic_path
from gmptl.runtime import setup_logging

log = logging.getLogger("make_demo_corpus")


def main(out_dir: str, demo: dict, sessions: list[int]) -> None:
    with atomic_path(out_dir) as tmp:
        make_demo_corpus(
            tmp,
            utterances_per_speaker=demo["utterances_per_speaker"],
            min_duration_s=demo["min_duration_s"],
            max_duration_s=demo["max_duration_s"],
            seed=demo["corpus_seed"],
            sessions=tuple(sessions),
            corpus_format=demo.get("format", "iemocap"),
            speakers=demo.get("speakers", 8),
        )
    log.info("%s demo corpus written to %s", demo.get("format", "iemocap"), out_dir)


if __name__ == "__main__":
    setup_logging(snakemake.log[0])
    main(snakemake.output.corpus, snakemake.params.demo, snakemake.params.sessions)
