"""Rule deploy_model: results/<exp>/deploy/, the experiment's stage-2 model trained on all data (fold 0), with
its model card (README.md: the experiment's fold figures and comparison)."""

from pathlib import Path

import use_workflow_library  # noqa: F401  (first: this workflow's gmptl, not an installed copy)

from gmptl.fileio import copy_folder
from gmptl.model_card import ExperimentResults, deploy_card
from gmptl.model_folder import read_model_json
from gmptl.runtime import setup_logging

if __name__ == "__main__":
    setup_logging(snakemake.log[0])
    meta = read_model_json(Path(snakemake.input.model))
    results = ExperimentResults.from_files(
        snakemake.wildcards.exp, snakemake.input.folds, snakemake.input.summary, snakemake.input.comparison
    )
    card = deploy_card(meta, results, stage_ids=snakemake.params.stage_ids)
    copy_folder(snakemake.input.model, snakemake.output.model, extra={"README.md": card})
