"""Rule extract_features: hidden states of the GMP layers for every utterance of one fold → HDF5."""

import os

import use_workflow_library  # noqa: F401  (first: this workflow's gmptl, not an installed copy)

from gmptl.gpu_slots import slot_for_job
from gmptl.recipes import write_recipe
from gmptl.runtime import configure_torch, setup_logging
from gmptl.settings import RuntimeSettings

if __name__ == "__main__":
    setup_logging(snakemake.log[0])
    runtime = RuntimeSettings.from_config(snakemake.config, snakemake.threads)
    slot = slot_for_job(runtime, os.environ)  # before CUDA is initialised; held until the job ends
    from gmptl.jobs import run_extraction  # torch loads only after the GPU slot is taken

    configure_torch(snakemake.threads)
    write_recipe(snakemake.params.recipe_file, snakemake.params.recipe)
    run_extraction(
        snakemake.params.recipe,
        recipe_id=snakemake.wildcards.id,
        fold=int(snakemake.wildcards.fold),
        manifest_path=snakemake.input.manifest,
        folds_path=snakemake.input.folds,
        model_dir=snakemake.input.model,
        out_path=snakemake.output.features,
        runtime=runtime,
    )
