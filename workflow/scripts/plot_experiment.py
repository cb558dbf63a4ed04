"""Rule plot_experiment: pooled confusion matrix and training curves (selected rounds marked) of one experiment."""

import use_workflow_library  # noqa: F401  (first: this workflow's gmptl, not an installed copy)

from gmptl.report import plot_confusion, plot_curves
from gmptl.runtime import setup_logging

if __name__ == "__main__":
    setup_logging(snakemake.log[0])
    exp = snakemake.wildcards.exp
    model_dirs = [path for name, path in snakemake.input.items() if name != "predictions"]
    plot_confusion(
        list(snakemake.input.predictions),
        snakemake.params.classes,
        snakemake.output.confusion,
        f"{exp}: pooled test confusion",
    )
    plot_curves(model_dirs, snakemake.output.curves, f"{exp}: training curves")
