"""Every my.yaml of the README, run as the README runs it (`--configfile config.yaml my.yaml`), up to the manifest.

Snakemake merges config files key by key, so a corpus key that config.yaml (the IEMOCAP paper run) sets
also applies to the corpus.format of my.yaml; these runs catch that. The my.yaml texts are read from
README.md itself, only `root:` pointed at a small fixture tree of the format's layout.
"""

from __future__ import annotations

import re
import textwrap

import pandas as pd
import pytest
import yaml
from conftest import ROOT, balanced_sessions, snakemake, write_tree
from test_corpora import CREMA, EMODB, MSP_LABELS, RAVDESS, crema_tree, emodb_tree, msp_tree, ravdess_tree, table_tree

from gmptl.corpus import read_manifest
from gmptl.schema import section

FORMATS = tuple(section("corpus")["properties"]["format"]["enum"])  # the schema lists every format

README = (ROOT / "README.md").read_text()


def other_corpora_recipes() -> dict[str, str]:
    """The my.yaml examples of README 'Other corpora', by corpus.format (iemocap: its improvised-only one)."""
    section = README.split("## Other corpora", 1)[1].split("\n## ", 1)[0]
    block = section.split("Examples:", 1)[1].split("**Protocols**", 1)[0]
    recipes = {}
    for chunk in re.split(r"\n[ \t]*\n", block.strip("\n")):
        text = textwrap.dedent(chunk) + "\n"
        recipes[yaml.safe_load(text)["corpus"].get("format", "iemocap")] = text
    return recipes


def real_data_recipe() -> str:
    """The my.yaml of README 'Real data', step 3 (a real IEMOCAP copy)."""
    step = README.split("## Real data", 1)[1].split("\n4. ", 1)[0]
    return textwrap.dedent(step.split("(the paper-style run):", 1)[1].strip("\n")) + "\n"


def recipe(name: str) -> str:
    return real_data_recipe() if name == "iemocap_full" else other_corpora_recipes()[name]


# --- fixture trees, one per layout -------------------------------------------------------------

SCRIPTED = [  # a scripted dialog beside the improvised ones: exc merges into hap, xxx and fru are dropped
    ("Ses01F_script01_1_F000", "exc"),
    ("Ses01F_script01_1_M000", "xxx"),
    ("Ses01F_script01_1_F001", "fru"),
    ("Ses01F_script01_1_M001", "sad"),
]
TABLE_ROWS = ["file,label,spk,sex", "a/u1.wav,neu,anna,female", "a/u2.wav,hap,anna,F", "b/u3.wav,sad,bob,M"]
TABLE_CSV = "\n".join([*TABLE_ROWS, "b/u4.wav,ang,bob,male"]) + "\n"  # the README's columns: file, label, spk, sex


def iemocap_tree(root):
    sessions = balanced_sessions(n_sessions=5, per_class=1)  # 5 sessions × 2 speakers × 4 classes, improvised
    sessions[1]["Ses01F_script01_1"] = SCRIPTED
    return write_tree(root, sessions, seconds=0.5)


TREES = {
    "iemocap_full": iemocap_tree,
    "iemocap": iemocap_tree,
    "ravdess": lambda root: ravdess_tree(root, RAVDESS),
    "crema_d": lambda root: crema_tree(root, CREMA),
    "msp_podcast": lambda root: msp_tree(root, MSP_LABELS),
    "emodb": lambda root: emodb_tree(root, EMODB),
    "table": lambda root: table_tree(root, TABLE_CSV, name="labels.csv"),
}

# What each recipe's manifest must hold: utterances per class, and gender per speaker.
EXPECTED = {
    "iemocap_full": ({"neu": 10, "hap": 11, "ang": 10, "sad": 11}, {"Ses01F": "F", "Ses01M": "M", "Ses05M": "M"}),
    "iemocap": ({"neu": 10, "hap": 10, "ang": 10, "sad": 10}, {"Ses03F": "F", "Ses03M": "M"}),
    # calm is dropped by the default map (not mapped to neutral); the song file is left out
    "ravdess": ({"neu": 1, "hap": 1, "ang": 1, "sad": 1}, {"Actor_01": "M", "Actor_02": "F", "Actor_12": "F"}),
    "crema_d": ({"neu": 1, "hap": 1, "ang": 1, "sad": 1}, {"1001": "M", "1002": "F"}),  # DIS dropped
    "msp_podcast": ({"neu": 1, "hap": 1, "ang": 1, "sad": 2}, {"127": "F", "12": "M", "Unknown": ""}),  # X dropped
    "emodb": ({"neu": 1, "hap": 1, "ang": 1, "sad": 1}, {"03": "M", "08": "F", "16": "F", "11": "M"}),  # L dropped
    "table": ({"neu": 1, "hap": 1, "ang": 1, "sad": 1}, {"anna": "F", "bob": "M"}),
}


def my_yaml(tmp_path, name: str, root) -> str:
    """The README's my.yaml of `name`, its `root:` pointed at `root`, written to tmp_path/my.yaml."""
    text, count = re.subn(r"root: /data/[^,}\s]+", f"root: {root}", recipe(name))
    assert count == 1, f"README recipe {name} has {count} 'root: /data/…' values:\n{text}"
    (tmp_path / "my.yaml").write_text(text)
    return str(tmp_path / "my.yaml")


def build(tmp_path, my: str):
    """`snakemake --cores 1 results/manifest.tsv --configfile config.yaml my.yaml`, with the repo's config.yaml."""
    return snakemake(tmp_path, "--cores", "1", "results/manifest.tsv", configs=("config.yaml", my), timeout=300)


def test_the_readme_has_a_recipe_for_every_format():
    assert sorted(other_corpora_recipes()) == sorted(FORMATS)
    assert yaml.safe_load(real_data_recipe())["corpus"] == {"root": "/data/IEMOCAP_full_release"}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_readme_recipe_builds_the_manifest_of_its_format(tmp_path, name):
    root = TREES[name](tmp_path / "corpus")
    result = build(tmp_path, my_yaml(tmp_path, name, root))
    assert result.returncode == 0, result.output[-3000:]
    manifest = read_manifest(tmp_path / "results" / "manifest.tsv")
    classes, genders = EXPECTED[name]
    assert manifest["emotion"].value_counts().to_dict() == classes
    assert manifest.groupby("speaker")["gender"].first()[list(genders)].to_dict() == genders
    counts = pd.read_csv(tmp_path / "results" / "manifest_counts.tsv", sep="\t", dtype={"session": str})
    assert counts.set_index("session").loc["all", list(classes)].to_dict() == classes
    if name == "iemocap":  # improvised-only
        assert manifest["dialog"].str.contains("impro").all()


@pytest.mark.slow
def test_a_label_map_of_another_corpus_stops_before_any_job(tmp_path):
    root = ravdess_tree(tmp_path / "RAVDESS", RAVDESS)
    iemocap_map = "{neu: neu, hap: hap, exc: hap, ang: ang, sad: sad}"  # what config.yaml used to set
    (tmp_path / "my.yaml").write_text(f"corpus: {{format: ravdess, root: {root}, label_map: {iemocap_map}}}\n")
    result = build(tmp_path, str(tmp_path / "my.yaml"))
    assert result.returncode != 0
    assert "config key 'corpus.label_map': no ravdess label maps to ['neu', 'hap', 'ang']" in result.output
    assert not (tmp_path / "results" / "manifest.tsv").exists()


def test_a_class_without_utterances_stops_the_manifest(tmp_path):
    no_angry = [name for name in RAVDESS if name.split("-")[2] != "05"]
    root = ravdess_tree(tmp_path / "RAVDESS", no_angry)
    (tmp_path / "my.yaml").write_text(f"corpus: {{format: ravdess, root: {root}}}\n")
    result = build(tmp_path, str(tmp_path / "my.yaml"))
    assert result.returncode != 0
    sentence = "no utterance of class(es) ['ang'] of corpus.classes"
    assert sentence in (tmp_path / "results" / "logs" / "build_manifest.log").read_text()
    assert sentence in result.output and "labels dropped: calm 1" in result.output
    assert not (tmp_path / "results" / "manifest.tsv").exists()
    assert not (tmp_path / "results" / "manifest_counts.tsv").exists()
