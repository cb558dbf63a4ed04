"""Rules train_mtl, train_stage1, train_stage2: train one stage (params.stage) of one fold.

The three rules share this adapter because they differ only in the stage name; what a stage
is (heads, losses, initial weights) lives in gmptl.stages.
"""

from gmptl.jobs import run_training
from gmptl.runtime import configure_torch, setup_logging

if __name__ == "__main__":
    setup_logging(snakemake.log[0])
    configure_torch(snakemake.threads)
    gmp = {name: snakemake.input[name] for name in snakemake.input.keys() if name.startswith("L")}
    run_training(
        snakemake.params.stage,
        manifest_path=snakemake.input.manifest,
        folds_path=snakemake.input.folds,
        fold=int(snakemake.wildcards.fold),
        settings=snakemake.params.settings,
        corpus=snakemake.params.corpus,
        runtime=snakemake.params.runtime,
        init_model=snakemake.input.get("model"),
        gmp_paths=gmp,
        out_dir=snakemake.output.model,
        state_dir=snakemake.params.state_dir,
    )
