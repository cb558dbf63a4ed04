"""Rule evaluate_fold: score a fold's test split with the experiment's stage-2 model."""

import use_workflow_library  # noqa: F401  (first: this workflow's gmptl, not an installed copy)

from gmptl.jobs import run_evaluation
from gmptl.runtime import configure_torch, setup_logging
from gmptl.settings import RuntimeSettings

if __name__ == "__main__":
    setup_logging(snakemake.log[0])
    configure_torch(snakemake.threads)
    run_evaluation(
        manifest_path=snakemake.input.manifest,
        folds_path=snakemake.input.folds,
        fold=int(snakemake.params.fold),
        model_dir=snakemake.input.model,
        runtime=RuntimeSettings.from_config(snakemake.config, snakemake.threads),
        predictions_path=snakemake.output.predictions,
        metrics_path=snakemake.output.metrics,
    )
