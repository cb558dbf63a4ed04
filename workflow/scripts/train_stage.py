"""Rules train_mtl, train_stage1, train_stage2: train one stage (params.stage) of one fold.

The three rules share this adapter because they differ only in the stage name; what a stage
is (heads, losses, initial weights) lives in gmptl.stages.
"""

from gmptl.jobs import run_training
from gmptl.runtime import configure_torch, setup_logging

if __name__ == "__main__":
    setup_logging(snakemake.log[0])  # noqa: F821
    configure_torch(snakemake.threads)  # noqa: F821
    gmp = {name: snakemake.input[name] for name in snakemake.input.keys() if name.startswith("L")}  # noqa: F821
    run_training(
        snakemake.params.stage,  # noqa: F821
        manifest_path=snakemake.input.manifest,  # noqa: F821
        folds_path=snakemake.input.folds,  # noqa: F821
        fold=int(snakemake.wildcards.fold),  # noqa: F821
        settings=snakemake.params.settings,  # noqa: F821
        corpus=snakemake.params.corpus,  # noqa: F821
        runtime=snakemake.params.runtime,  # noqa: F821
        init_model=snakemake.input.get("model"),  # noqa: F821
        gmp_paths=gmp,
        out_dir=snakemake.output.model,  # noqa: F821
        state_dir=snakemake.params.state_dir,  # noqa: F821
    )
