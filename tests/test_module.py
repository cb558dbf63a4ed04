"""gmptl used as a Snakemake module inside someone else's workflow, from another directory."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
from conftest import ROOT

HOST_SNAKEFILE = """\
configfile: "{root}/config.yaml"
configfile: "{root}/demo.yaml"


module gmptl:
    snakefile:
        "{root}/workflow/Snakefile"
    config:
        config


use rule * from gmptl as gmptl_*


rule count_folds:
    input:
        rules.gmptl_make_folds.output[0],
    output:
        "fold_count.txt",
    shell:
        "tail -n +2 {{input}} | cut -f1 | sort -u | wc -l > {{output}}"
"""


def test_gmptl_runs_as_a_module_of_another_workflow(tmp_path):
    """A host workflow in its own directory imports every gmptl rule (prefixed) and builds on its folds."""
    (tmp_path / "Snakefile").write_text(HOST_SNAKEFILE.format(root=ROOT))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the module finds its own library
    command = [sys.executable, "-m", "snakemake", "--cores", "2", "fold_count.txt", "results/manifest.tsv"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env={**env, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    manifest = pd.read_csv(tmp_path / "results" / "manifest.tsv", sep="\t")
    folds = pd.read_csv(tmp_path / "results" / "folds.tsv", sep="\t", comment="#")
    assert len(manifest) == 240 and set(manifest["session"]) == {1, 2, 3, 4, 5}
    assert set(folds["utt_id"]) == set(manifest["utt_id"])
    assert int((tmp_path / "fold_count.txt").read_text()) == 5  # leave-one-session-out
