"""Rule record_stages: the table of cached stage outputs an experiment uses (results/<exp>/stages.tsv)."""

import pandas as pd
import use_workflow_library  # noqa: F401  (first: this workflow's gmptl, not an installed copy)

from gmptl.fileio import write_tsv
from gmptl.runtime import setup_logging

if __name__ == "__main__":
    setup_logging(snakemake.log[0])
    write_tsv(pd.DataFrame(snakemake.params.rows), snakemake.output.stages)
