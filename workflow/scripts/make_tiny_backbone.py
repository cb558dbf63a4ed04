"""Rule make_tiny_backbone: write the demo's tiny randomly initialised HuBERT."""

import use_workflow_library  # noqa: F401  (first: this workflow's gmptl, not an installed copy)

from gmptl.backbone import make_tiny_hubert
from gmptl.fileio import atomic_path
from gmptl.runtime import configure_torch, setup_logging


def main(out_dir: str, demo: dict) -> None:
    with atomic_path(out_dir) as tmp:
        make_tiny_hubert(
            tmp, hidden_size=demo["hidden_size"], num_layers=demo["num_layers"], seed=demo["backbone_seed"]
        )


if __name__ == "__main__":
    setup_logging(snakemake.log[0])
    configure_torch(1)
    main(snakemake.output.backbone, snakemake.params.demo)
