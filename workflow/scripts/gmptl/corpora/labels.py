"""Raw label vocabularies and default label maps of the corpus formats (no heavy imports: the config uses it).

Each default map sends a corpus's raw labels to short class names (neu, hap, ang, sad, fea, dis, sur,
cal, bor, con, oth); `resolve_label_map` keeps the entries whose class is in `corpus.classes`, so the
default 4 classes (neu, hap, ang, sad) need no map, and e.g. `classes: [neu, hap, ang, sad, fea]` on
RAVDESS needs none either.
"""

from __future__ import annotations

DEFAULT_LABEL_MAPS: dict[str, dict[str, str]] = {
    # EmoEvaluation labels; xxx (no agreement) is never mapped, exc (excited) merges into hap.
    "iemocap": {
        "neu": "neu",
        "hap": "hap",
        "exc": "hap",
        "ang": "ang",
        "sad": "sad",
        "fru": "fru",
        "sur": "sur",
        "fea": "fea",
        "dis": "dis",
        "oth": "oth",
    },
    # File-name emotion codes 01..08, read as words.
    "ravdess": {
        "neutral": "neu",
        "calm": "cal",
        "happy": "hap",
        "sad": "sad",
        "angry": "ang",
        "fearful": "fea",
        "disgust": "dis",
        "surprised": "sur",
    },
    "crema_d": {"NEU": "neu", "HAP": "hap", "ANG": "ang", "SAD": "sad", "FEA": "fea", "DIS": "dis"},
    # EmoClass letters; X (no agreement) is never mapped.
    "msp_podcast": {
        "N": "neu",
        "H": "hap",
        "A": "ang",
        "S": "sad",
        "F": "fea",
        "D": "dis",
        "U": "sur",
        "C": "con",
        "O": "oth",
    },
    # German initials: W Wut, L Langeweile, E Ekel, A Angst, F Freude, T Trauer, N neutral.
    "emodb": {"N": "neu", "F": "hap", "W": "ang", "T": "sad", "A": "fea", "E": "dis", "L": "bor"},
}

# Raw labels each corpus documents; a dropped label outside this set is warned about by name.
LABEL_VOCABULARY: dict[str, frozenset[str] | None] = {
    "iemocap": frozenset(DEFAULT_LABEL_MAPS["iemocap"]) | {"xxx"},
    "ravdess": frozenset(DEFAULT_LABEL_MAPS["ravdess"]),
    "crema_d": frozenset(DEFAULT_LABEL_MAPS["crema_d"]),
    "msp_podcast": frozenset(DEFAULT_LABEL_MAPS["msp_podcast"]) | {"X"},
    "emodb": frozenset(DEFAULT_LABEL_MAPS["emodb"]),
    "table": None,  # a table's labels are the user's own: every unmapped one is warned about
}


def resolve_label_map(corpus_format: str, label_map: dict[str, str] | None, classes: list[str]) -> dict[str, str]:
    """`label_map` when given; else the format's default map restricted to `classes` (table: identity)."""
    if label_map is not None:
        return dict(label_map)
    if corpus_format == "table":
        return {name: name for name in classes}
    return {raw: name for raw, name in DEFAULT_LABEL_MAPS[corpus_format].items() if name in classes}
