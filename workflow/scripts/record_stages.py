"""Rule record_stages: the table of cached stage outputs an experiment uses (results/<exp>/stages.tsv)."""

import pandas as pd

from gmptl.fileio import write_tsv
from gmptl.runtime import setup_logging

if __name__ == "__main__":
    setup_logging(snakemake.log[0])
    write_tsv(pd.DataFrame(snakemake.params.rows), snakemake.output.stages)
