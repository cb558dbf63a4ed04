"""Rule make_demo_corpus: write the synthetic IEMOCAP-shaped demo corpus."""

import logging

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
        )
    log.info("demo corpus written to %s", out_dir)


if __name__ == "__main__":
    setup_logging(snakemake.log[0])
    main(snakemake.output.corpus, snakemake.params.demo, snakemake.params.sessions)
