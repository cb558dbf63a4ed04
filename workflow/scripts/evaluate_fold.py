"""Rule evaluate_fold: score a fold's test split with the experiment's stage-2 model."""

import os

import use_workflow_library  # noqa: F401  (first: this workflow's gmptl, not an installed copy)

from gmptl.gpu_slots import slot_for_job
from gmptl.runtime import configure_torch, setup_logging
from gmptl.settings import RuntimeSettings

if __name__ == "__main__":
    setup_logging(snakemake.log[0])
    runtime = RuntimeSettings.from_config(snakemake.config, snakemake.threads)
    slot = slot_for_job(runtime, os.environ)  # before CUDA is initialised; held until the job ends
    from gmptl.jobs import run_evaluation  # torch loads only after the GPU slot is taken

    configure_torch(snakemake.threads)
    run_evaluation(
        manifest_path=snakemake.input.manifest,
        folds_path=snakemake.input.folds,
        fold=int(snakemake.params.fold),
        model_dir=snakemake.input.model,
        runtime=runtime,
        predictions_path=snakemake.output.predictions,
        metrics_path=snakemake.output.metrics,
    )
