"""Rule train_stage: train one stage (mtl | stage1 | stage2) of one fold from its recipe.

What a stage is (heads, losses, initial weights) is read from the recipe (`gmptl.recipes`, `gmptl.stages`);
every path (initial model, GMP label files, outputs) from what Snakemake resolved; runtime settings
(device, precision, threads, tensorboard) from the config's `runtime:` section. TensorBoard event files go
to `fold<N>.tb` beside the job's log (undeclared: never a rerun trigger). The job takes its GPU slot before
torch loads. A deterministic failure (bad input or config, a full disk) is recorded beside the model folder,
and the rule's retries only report it (`gmptl.retry`); a time-out or a crash is retried and resumes.
"""

import os
from functools import partial

import use_workflow_library  # noqa: F401  (first: this workflow's gmptl, not an installed copy)

from gmptl.gpu_slots import slot_for_job
from gmptl.retry import failure_marker, reports_only, run_attempt
from gmptl.runtime import configure_torch, setup_logging
from gmptl.settings import RuntimeSettings


def train(smk) -> None:
    """Check the fold's data against the config, record the recipe, train the stage."""
    import pandas as pd  # the heavy imports (torch, transformers) come after the GPU slot

    from gmptl.corpus import read_manifest
    from gmptl.events import events_folder
    from gmptl.jobs import run_training
    from gmptl.preflight import check_before_training
    from gmptl.recipes import from_json, write_recipe

    configure_torch(smk.threads)
    recipe = from_json(smk.params.recipe)
    w = smk.wildcards
    check_before_training(  # config read as data, not a param: the checks never trigger a rerun
        smk.config,
        read_manifest(smk.input.manifest),
        pd.read_csv(smk.input.folds, sep="\t"),
        stage=(w.stage, w.id),
    )
    write_recipe(smk.params.recipe_file, smk.params.recipe)
    run_training(
        recipe,
        fold=int(w.fold),
        manifest_path=smk.input.manifest,
        folds_path=smk.input.folds,
        init_model=smk.input.get("model"),
        gmp_paths={name: smk.input[name] for name in recipe.label_files(w.fold)},
        out_dir=smk.output.model,
        state_dir=smk.params.state_dir,
        runtime=RuntimeSettings.from_config(smk.config, smk.threads),
        events_dir=str(events_folder(smk.log[0])),  # beside the log, undeclared: never a rerun trigger
    )


if __name__ == "__main__":
    attempt = int(snakemake.resources.attempt)
    setup_logging(snakemake.log[0], attempt=attempt)
    marker = failure_marker(snakemake.output.model)
    if not reports_only(marker, attempt):  # an attempt that only reports an earlier failure needs no GPU
        slot = slot_for_job(RuntimeSettings.from_config(snakemake.config), os.environ)  # held until the job ends
    job = {key: str(snakemake.wildcards[key]) for key in ("stage", "id", "fold")}
    run_attempt(partial(train, snakemake), marker=marker, attempt=attempt, identity=job)
