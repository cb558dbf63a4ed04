# Helpers shared by the rules. Functions take what they need as arguments or wildcards;
# the library (workflow/scripts/gmptl) never sees `snakemake` or `config`.

from gmptl.config import experiment_settings, needs_gmp

EXPERIMENTS = {name: experiment_settings(config, name) for name in config["experiments"]}
FOLDS = sorted(config["corpus"]["sessions"])
DEMO = config["demo"]["enabled"]
CORPUS_ROOT = config["corpus"]["root"]


wildcard_constraints:
    exp="|".join(sorted(EXPERIMENTS)),
    fold=r"\d+",
    layer=r"\d+",
    k=r"\d+",


def corpus_input(wildcards):
    """The demo corpus folder when the workflow builds it; a real corpus is read, not tracked."""
    return [CORPUS_ROOT] if DEMO else []


def all_targets():
    return [
        "results/manifest.tsv",
        "results/manifest_counts.tsv",
        "results/folds.tsv",
    ]
