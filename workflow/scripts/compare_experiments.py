"""Rule compare_experiments: all experiments side by side (results/comparison.tsv)."""

from gmptl.fileio import write_tsv
from gmptl.report import comparison_table
from gmptl.runtime import setup_logging

if __name__ == "__main__":
    setup_logging(snakemake.log[0])
    summaries = dict(snakemake.input.items())
    write_tsv(comparison_table(summaries), snakemake.output.comparison, float_format="%.6f")
