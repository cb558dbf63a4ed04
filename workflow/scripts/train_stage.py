"""Rule train_stage: train one stage (mtl | stage1 | stage2) of one fold from its recipe.

What a stage is (heads, losses, initial weights) is read from the recipe (`gmptl.recipes`, `gmptl.stages`);
every path (initial model, GMP label files, outputs) from what Snakemake resolved; runtime settings
(device, precision, threads) from the config's `runtime:` section.
"""

import pandas as pd
import use_workflow_library  # noqa: F401  (first: this workflow's gmptl, not an installed copy)

from gmptl.corpus import read_manifest
from gmptl.jobs import run_training
from gmptl.preflight import check_before_training
from gmptl.recipes import from_json, write_recipe
from gmptl.runtime import configure_torch, setup_logging
from gmptl.settings import RuntimeSettings

if __name__ == "__main__":
    setup_logging(snakemake.log[0])
    configure_torch(snakemake.threads)
    recipe = from_json(snakemake.params.recipe)
    w = snakemake.wildcards
    check_before_training(  # config read as data, not a param: the checks never trigger a rerun
        snakemake.config,
        read_manifest(snakemake.input.manifest),
        pd.read_csv(snakemake.input.folds, sep="\t"),
        stage=(w.stage, w.id),
    )
    write_recipe(snakemake.params.recipe_file, snakemake.params.recipe)
    run_training(
        recipe,
        fold=int(w.fold),
        manifest_path=snakemake.input.manifest,
        folds_path=snakemake.input.folds,
        init_model=snakemake.input.get("model"),
        gmp_paths={name: snakemake.input[name] for name in recipe.label_files(w.fold)},
        out_dir=snakemake.output.model,
        state_dir=snakemake.params.state_dir,
        runtime=RuntimeSettings.from_config(snakemake.config, snakemake.threads),
    )
