"""Config checks of the corpus and folds blocks: one sentence naming the key."""

from __future__ import annotations

import pytest

from gmptl.config import _check_corpus, validate_config
from gmptl.errors import ConfigError


def corpus(**extra):
    return validate_config({"corpus": {"root": "/data/x", **extra}})["corpus"]


def test_label_map_default_is_resolved_per_format():
    assert corpus()["label_map"] == {"neu": "neu", "hap": "hap", "exc": "hap", "ang": "ang", "sad": "sad"}
    assert corpus(format="emodb")["label_map"] == {"N": "neu", "F": "hap", "W": "ang", "T": "sad"}
    assert corpus(format="crema_d", classes=["neu", "fea"])["label_map"] == {"NEU": "neu", "FEA": "fea"}


def test_new_keys_have_defaults():
    config = validate_config({"corpus": {"root": "/data/x"}})
    assert (config["corpus"]["format"], config["corpus"]["subset"], config["corpus"]["table"]) == (
        "iemocap",
        "all",
        None,
    )
    assert (config["folds"]["protocol"], config["folds"]["k"], config["demo"]["format"]) == ("session", 5, "iemocap")


@pytest.mark.parametrize(
    ("block", "folds", "demo", "message"),
    [
        ({"format": "table"}, None, None, "'corpus.table' is missing"),
        ({"format": "ravdess", "subset": "improvised"}, None, None, "'corpus.subset' applies to corpus.format iemocap"),
        ({"table": "x.tsv"}, None, None, "'corpus.table' applies to corpus.format table"),
        ({"include_song": True}, None, None, "'corpus.include_song' applies to corpus.format ravdess"),
        (
            {"format": "ravdess", "classes": ["neu", "bor"]},
            None,
            None,
            r"no label in corpus.label_map maps to \['bor'\]",
        ),
        ({}, {"protocol": "predefined"}, None, "predefined needs a corpus with its own split"),
        ({"format": "msp_podcast"}, {"protocol": "speaker"}, None, "one fold per MSP-Podcast speaker"),
        ({}, None, {"enabled": True, "format": "ravdess"}, "'demo.format' is ravdess but corpus.format is iemocap"),
    ],
)
def test_cross_key_errors_name_the_key(block, folds, demo, message):
    defaults = {"root": "/data/x", "format": "iemocap", "classes": ["neu", "hap", "ang", "sad"], "label_map": None}
    defaults |= {"table": None, "columns": {}, "subset": "all", "include_song": False}
    with pytest.raises(ConfigError, match=message):
        _check_corpus(defaults | block, folds, demo)


def test_consistent_blocks_pass():
    table = corpus(format="table", table="labels.tsv", columns={"path": "file"})
    _check_corpus(table, {"protocol": "predefined"}, {"enabled": True, "format": "table"})


def test_schema_rejects_unknown_format_and_protocol():
    with pytest.raises(ConfigError, match="config key 'corpus.format'"):
        validate_config({"corpus": {"root": "x", "format": "wav2vec"}})
    with pytest.raises(ConfigError, match="config key 'folds.protocol'"):
        validate_config({"corpus": {"root": "x"}, "folds": {"protocol": "loso"}})
