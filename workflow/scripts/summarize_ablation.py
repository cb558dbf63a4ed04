"""Rule ablation: the grid's points side by side against its base (results/ablation.tsv, its page and plot)."""

import logging

import use_workflow_library  # noqa: F401  (first: this workflow's gmptl, not an installed copy)

from gmptl.ablation import ablation_page, ablation_table, plot_ablation
from gmptl.corpus import read_manifest
from gmptl.fileio import write_tsv
from gmptl.grid import GridPoint
from gmptl.html_report import write_page
from gmptl.report import keyed_runs
from gmptl.runtime import setup_logging

log = logging.getLogger("ablation")

if __name__ == "__main__":
    setup_logging(snakemake.log[0])
    experiments = keyed_runs(list(snakemake.input.predictions), snakemake.params.runs)
    points = [GridPoint(name, dict(values), {}) for name, values in snakemake.params.points]
    stats, base = snakemake.params.stats, snakemake.params.base
    manifest = read_manifest(snakemake.input.manifest)
    tests = {"resamples": stats["resamples"], "seed": stats["seed"], "unit": stats["unit"], "manifest": manifest}
    table = ablation_table(experiments, points, base, snakemake.params.classes, **tests)
    log.info("ablation:\n%s", table.to_string(index=False))
    write_tsv(table, snakemake.output.table, float_format="%.6f")
    keys = list(points[0].values)
    write_page(ablation_page(table, keys), snakemake.output.html)
    plot_ablation(table, keys, snakemake.output.plot, f"ablation grid on {base}")
