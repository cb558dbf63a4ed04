# gmptl — GMP-TL speech emotion recognition on IEMOCAP, as a Snakemake workflow.
# Usage: see README.md. Demo: snakemake --cores 2 --configfile demo.yaml

import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.14.1")

sys.path.insert(0, str(Path(workflow.basedir) / "workflow" / "scripts"))
from gmptl.config import validate_config  # noqa: E402
from gmptl.preflight import check_config  # noqa: E402


configfile: "config.yaml"


config.update(validate_config(config))
check_config(
    config
)  # what the config alone can tell (layers and crops against on-disk backbones), once


report: "workflow/report/workflow.rst"


localrules:
    all,
    make_folds,
    record_stages,
    summarize_experiment,
    plot_experiment,
    compare_experiments,


include: "workflow/rules/common.smk"
include: "workflow/rules/corpus.smk"
include: "workflow/rules/gmp.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"


rule all:
    default_target: True
    input:
        all_targets,


onstart:
    from gmptl.retry import clear_markers

    clear_markers(
        "results/cache"
    )  # a new run tries every job again, whatever an earlier run recorded


onsuccess:
    from gmptl.report import closing_summary

    print(
        closing_summary(
            "results/comparison.tsv",
            list(EXPERIMENTS),
            "snakemake --report report.html (same --configfile)",
        )
    )
