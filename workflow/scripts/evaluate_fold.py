"""Rule evaluate_fold: score a fold's test session with its stage-2 model."""

from gmptl.jobs import run_evaluation
from gmptl.runtime import configure_torch, setup_logging

if __name__ == "__main__":
    setup_logging(snakemake.log[0])  # noqa: F821
    configure_torch(snakemake.threads)  # noqa: F821
    run_evaluation(
        manifest_path=snakemake.input.manifest,  # noqa: F821
        folds_path=snakemake.input.folds,  # noqa: F821
        fold=int(snakemake.wildcards.fold),  # noqa: F821
        model_dir=snakemake.input.model,  # noqa: F821
        corpus=snakemake.params.corpus,  # noqa: F821
        runtime=snakemake.params.runtime,  # noqa: F821
        batch_seconds=snakemake.params.settings["stage2"]["train"]["eval_batch_seconds"],  # noqa: F821
        predictions_path=snakemake.output.predictions,  # noqa: F821
        metrics_path=snakemake.output.metrics,  # noqa: F821
    )
