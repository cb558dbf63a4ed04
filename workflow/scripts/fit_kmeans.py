"""Rule fit_kmeans: k-means of one layer at one k on a fold's training frames; labels for all frames."""

import os

import use_workflow_library  # noqa: F401  (first: this workflow's gmptl, not an installed copy)

from gmptl.gpu_slots import slot_for_job
from gmptl.recipes import write_recipe
from gmptl.runtime import configure_torch, setup_logging
from gmptl.settings import GmpHead, RuntimeSettings

if __name__ == "__main__":
    setup_logging(snakemake.log[0])
    runtime = RuntimeSettings.from_config(snakemake.config, snakemake.threads)
    slot = slot_for_job(runtime, os.environ)  # before CUDA is initialised; held until the job ends
    from gmptl.jobs import run_kmeans  # torch loads only after the GPU slot is taken

    configure_torch(snakemake.threads)
    w = snakemake.wildcards
    write_recipe(snakemake.params.recipe_file, snakemake.params.recipe)
    run_kmeans(
        snakemake.params.recipe,
        recipe_id=w.id,
        features_path=snakemake.input.features,
        head=GmpHead(int(w.layer), int(w.k)),
        out_path=snakemake.output.labels,
        runtime=runtime,
    )
