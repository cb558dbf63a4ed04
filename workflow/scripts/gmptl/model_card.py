"""Model cards: the `README.md` of every exported folder and of every deploy model folder, in the Hugging Face
model-card format (a YAML header with the task, the dataset and the metrics; a Markdown body).

The body says what the model is (method, backbone, heads), what it was trained and evaluated on (corpus,
protocol, per-fold WAR/UAR with mean ± std over folds and the comparison's CI), with which seeds, how it was
trained (its recipe id and settings), what it is for and not for, and how to run it. `ExperimentResults` reads
the figures from an experiment's results folder; without one (a bare model folder) the card says so.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

PAPER = "https://arxiv.org/abs/2405.02151"
CORPUS_NAMES = {
    "iemocap": "IEMOCAP",
    "ravdess": "RAVDESS",
    "crema_d": "CREMA-D",
    "msp_podcast": "MSP-Podcast",
    "emodb": "EmoDB",
    "table": "a corpus table",
}


@dataclass
class ExperimentResults:
    """What an experiment's results folder says about its models: per-fold metrics, summary, comparison."""

    name: str
    folds: pd.DataFrame  # fold (, seed), n, war, uar, …
    summary: pd.DataFrame  # statistic (mean | std | pooled …), war, uar, …
    comparison: pd.Series | None  # its row of results/comparison.tsv (None when absent)

    @classmethod
    def read(cls, exp_dir: str | Path) -> ExperimentResults | None:
        """The figures of `exp_dir` (results/<exp>), or None when its metrics tables are not written yet."""
        exp_dir = Path(exp_dir)
        folds, summary = exp_dir / "metrics" / "folds.tsv", exp_dir / "metrics" / "summary.tsv"
        if not (folds.is_file() and summary.is_file()):
            return None
        return cls.from_files(exp_dir.name, folds, summary, exp_dir.parent / "comparison.tsv")

    @classmethod
    def from_files(cls, name: str, folds, summary, comparison) -> ExperimentResults:
        """The figures of experiment `name` from its folds.tsv, summary.tsv and results/comparison.tsv (which
        may be absent)."""
        row = None
        if Path(comparison).is_file():
            table = pd.read_csv(comparison, sep="\t").set_index("experiment")
            row = table.loc[name] if name in table.index else None
        return cls(name, pd.read_csv(folds, sep="\t"), pd.read_csv(summary, sep="\t"), row)


def model_card(meta: dict, *, kind: str, results: ExperimentResults | None, usage: str, notes: list[str]) -> str:
    """The README.md of a model folder. `meta`: its model.json; `kind`: gmptl, onnx or transformers; `usage`:
    the Markdown of how to run it; `notes`: what this format cannot reproduce (empty when exact)."""
    recipe = meta.get("recipe") or {}
    corpus = recipe.get("data", {}).get("corpus", {}) if isinstance(recipe.get("data"), dict) else {}
    classes = meta["spec"]["classes"]
    header = _header(meta, kind, results, corpus)
    body = [
        f"# {results.name if results else 'gmptl'} — speech emotion recognition ({', '.join(classes)})",
        "",
        _what(meta, kind),
        "",
        "## Data and protocol",
        "",
        _data(meta, corpus),
        "",
        "## Results",
        "",
        _results(meta, results),
        "",
        "## Intended use and limitations",
        "",
        _limitations(meta, corpus, notes),
        "",
        "## How it was trained",
        "",
        _training(meta, recipe),
        "",
        "## How to run it",
        "",
        usage.strip(),
        "",
    ]
    return "---\n" + yaml.safe_dump(header, sort_keys=False, allow_unicode=True) + "---\n\n" + "\n".join(body)


def _header(meta: dict, kind: str, results: ExperimentResults | None, corpus: dict) -> dict:
    dataset = CORPUS_NAMES.get(corpus.get("format", "iemocap"), "speech emotion corpus")
    header = {
        "library_name": {"transformers": "transformers", "onnx": "onnx"}.get(kind, "gmptl"),
        "pipeline_tag": "audio-classification",
        "tags": ["speech-emotion-recognition", "gmptl", "gmp-tl", meta.get("backbone", {}).get("model_type", "")],
        "datasets": [dataset.lower()],
        "metrics": ["unweighted_average_recall", "weighted_average_recall"],
    }
    figures = _figures(meta, results)
    if figures:
        header["model-index"] = [
            {
                "name": results.name if results else "gmptl",
                "results": [
                    {
                        "task": {"type": "audio-classification", "name": "Speech emotion recognition"},
                        "dataset": {"name": dataset, "type": dataset.lower()},
                        "metrics": [
                            {
                                "type": "unweighted_average_recall",
                                "name": f"UAR ({figures['scope']})",
                                "value": round(100 * float(figures["uar"]), 2),
                            },
                            {
                                "type": "weighted_average_recall",
                                "name": f"WAR ({figures['scope']})",
                                "value": round(100 * float(figures["war"]), 2),
                            },
                        ],
                    }
                ],
            }
        ]
    return header


def _figures(meta: dict, results: ExperimentResults | None) -> dict | None:
    """The headline the header states: this fold's test figures, or the mean over folds for a deploy model."""
    if results is None:
        return None
    fold = int(meta.get("fold", -1))
    rows = results.folds[results.folds["fold"] == fold]
    if fold > 0 and len(rows):
        return {"uar": rows["uar"].mean(), "war": rows["war"].mean(), "scope": f"fold {fold}'s test set"}
    mean = results.summary.set_index("statistic").loc["mean"]
    return {"uar": mean["uar"], "war": mean["war"], "scope": "mean over the folds' test sets"}


def _what(meta: dict, kind: str) -> str:
    spec, backbone = meta["spec"], meta.get("backbone", {})
    classifier = (
        f"an AM-Softmax (cosine) classifier, margin {spec['margin']}, scale {spec['scale']}"
        if spec.get("emotion_classifier") == "amsoftmax"
        else "a linear classifier"
    )
    formats = {
        "gmptl": "a gmptl model folder (safetensors weights, `model.json`)",
        "onnx": "one ONNX graph from raw audio to class scores (`model.onnx`), for onnxruntime",
        "transformers": "a stock `transformers` audio-classification model (no custom code)",
    }
    return (
        f"A speech emotion recognition model trained with gmptl, a reproduction of GMP-TL (gender-augmented "
        f"multi-scale pseudo-label transfer learning, [arXiv 2405.02151]({PAPER})), as {formats[kind]}. "
        f"Backbone: {backbone.get('model_type', '?')} ({backbone.get('num_layers', '?')} layers, width "
        f"{backbone.get('hidden_size', '?')}), fine-tuned; head: {spec.get('emotion_pooling')} pooling over the "
        f"frames of the last layer and {classifier}; classes, in output order: {', '.join(spec['classes'])}. "
        f"Stage: {meta.get('stage', '?')} (initialised from {_init_text(meta)})."
    )


def _init_text(meta: dict) -> str:
    init = (meta.get("recipe") or {}).get("init")
    if isinstance(init, dict) and set(init) == {"backbone"}:
        return f"the pretrained backbone '{init['backbone']}'"
    if isinstance(init, dict) and init:
        kind = next(iter(init))
        return {"stage1": "the stage-1 model trained on GMP pseudo-labels", "mtl": "the multi-task model"}.get(
            kind, kind
        )
    return str(meta.get("init", "?"))


PROTOCOLS = {
    "session": "leave one session out",
    "speaker": "leave one speaker out",
    "kfold": "speaker-disjoint k-fold",
    "predefined": "the corpus's own train/valid/test split",
}


def _data(meta: dict, corpus: dict) -> str:
    fold = int(meta.get("fold", -1))
    folds = ((meta.get("recipe") or {}).get("data") or {}).get("folds", {})
    name = CORPUS_NAMES.get(corpus.get("format", "iemocap"), "the corpus")
    audio = meta.get("audio", {})
    protocol = PROTOCOLS.get(folds.get("protocol"), folds.get("protocol", "?"))
    trained = (
        "all of the corpus's data (the deploy model: no test set of its own; its figures below are those of the "
        "experiment's fold models)"
        if fold == 0
        else f"the training sessions of fold {fold} (its test data were never seen: not for training, validation "
        "or checkpoint selection)"
    )
    return (
        f"Trained on {name} ({corpus.get('subset', 'all')} utterances, sessions {corpus.get('sessions', '?')}), "
        f"on {trained}. Protocol: {protocol}; validation: {folds.get('validation', '?')} (held-out training data; "
        f"never the test fold). Input: mono audio at {audio.get('sample_rate', 16000)} Hz (at least "
        f"{audio.get('min_samples', '?')} samples)."
    )


def _results(meta: dict, results: ExperimentResults | None) -> str:
    if results is None:
        return "No evaluation tables were found beside this model (it was exported from a bare model folder)."
    folds = results.folds
    lines = ["| fold | test utterances | WAR | UAR |", "|---|---|---|---|"]
    per_fold = folds.groupby("fold").agg(n=("n", "first"), war=("war", "mean"), uar=("uar", "mean"))
    for fold, row in per_fold.iterrows():
        mark = " (this model)" if int(fold) == int(meta.get("fold", -1)) else ""
        lines.append(f"| {fold}{mark} | {int(row['n'])} | {100 * row['war']:.2f} | {100 * row['uar']:.2f} |")
    table = results.summary.set_index("statistic")
    mean, std = table.loc["mean"], table.loc["std"]
    lines.append(
        f"| mean ± std (ddof 1) | | {100 * mean['war']:.2f} ± {100 * std['war']:.2f} | "
        f"{100 * mean['uar']:.2f} ± {100 * std['uar']:.2f} |"
    )
    seeds = sorted(set(folds["seed"])) if "seed" in folds else [meta.get("seed")]
    text = "\n".join(lines) + f"\n\nSeeds: {', '.join(str(s) for s in seeds)} (figures averaged over seeds)."
    row = results.comparison
    if row is not None and row.get("reference") != results.name and not _missing(row.get("uar_p")):
        text += (
            f" Against {row['reference']}: ΔUAR {100 * row['uar_diff']:+.2f} points, 95 % CI "
            f"[{100 * row['uar_diff_ci_low']:+.2f}, {100 * row['uar_diff_ci_high']:+.2f}], p = {row['uar_p']:.3g}"
            + (f" (Holm {row['uar_p_holm']:.3g})" if not _missing(row.get("uar_p_holm")) else "")
            + f"; resampling whole {row.get('unit', 'utterance')} clusters within folds."
        )
    return text


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _limitations(meta: dict, corpus: dict, notes: list[str]) -> str:
    paragraphs = [
        "For research on categorical speech emotion recognition of the classes above, on speech like the "
        "training corpus's (acted or elicited English dialogue for IEMOCAP). Not for decisions about people: "
        "emotion labels are annotators' judgements, the classes cover a fraction of what people express, and "
        "accuracy drops on other languages, recording conditions, speakers and spontaneous speech."
    ]
    if (meta.get("backbone_source") or {}).get("tiny_demo_model"):
        paragraphs.append(
            "**This model descends from gmptl's tiny randomly initialised demo backbone, trained on the synthetic "
            "demo corpus: its scores say nothing about real recordings.**"
        )
    if notes:
        paragraphs.append("\n".join(f"- {note}" for note in notes))
    return "\n\n".join(paragraphs)


def _training(meta: dict, recipe: dict) -> str:
    shown = {key: meta.get(key) for key in ("stage", "fold", "seed", "best_round", "selection", "code_version")}
    ids = meta.get("stage_ids") or {}
    listed = "; ".join(f"{stage} `{stage_id}`" for stage, stage_id in ids.items())
    text = (
        "Trained by gmptl's workflow (`snakemake`), whose stages are named by the hash of their recipe"
        + (f" (results/cache/<stage>/<id>/; this model's stages: {listed})" if listed else "")
        + f". This model: {json.dumps(shown)}. Its full recipe (every setting that can change the result, and the "
        "recipes of the stages it starts from):\n\n```json\n" + json.dumps(recipe, indent=1, default=str) + "\n```"
    )
    return text


def deploy_card(meta: dict, results: ExperimentResults, stage_ids: dict[str, str]) -> str:
    """The README.md of an experiment's deploy model folder (results/<exp>/deploy)."""
    usage = f"""With gmptl:

```
gmptl predict --model results/{results.name} recording.wav …      # this deploy model
gmptl export results/{results.name} --to onnx OUT                  # one ONNX graph (onnxruntime)
gmptl export results/{results.name} --to transformers OUT          # a stock transformers model
```

In Python: `from gmptl.predict import predict_files; predict_files("results/{results.name}", ["recording.wav"])`
returns a pandas DataFrame (path, duration_s, predicted, score_<class>, error)."""
    return model_card({**meta, "stage_ids": stage_ids}, kind="gmptl", results=results, usage=usage, notes=[])
