"""Rule deploy_model: results/<exp>/deploy/, the experiment's stage-2 model trained on all data (fold 0)."""

import use_workflow_library  # noqa: F401  (first: this workflow's gmptl, not an installed copy)

from gmptl.fileio import copy_folder
from gmptl.runtime import setup_logging

if __name__ == "__main__":
    setup_logging(snakemake.log[0])
    copy_folder(snakemake.input.model, snakemake.output.model)
