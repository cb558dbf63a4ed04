"""Emotion scores for new recordings from a trained model folder or an experiment's fold models.

`predict_files(model, inputs)` returns one row per recording (and, with `window_s`, one per window):

    path         the file as found (an input, a file under an input folder, or a line of an @list)
    start_s      (windows only) window start in seconds; empty on the whole-file row
    end_s        (windows only) window end in seconds; empty on the whole-file row
    duration_s   length of the whole recording in seconds (on every row of that recording)
    predicted    the class with the highest score
    score_<c>    class probabilities in the model's class order (mean over fold models for an ensemble;
                 on the whole-file row of windows mode, the mean over that recording's windows)
    error        empty, or why the input gave no prediction (its other columns are then empty)

Audio in any format and rate soundfile reads is down-mixed and resampled exactly as the pipeline does
(`audio.load_audio`). Recordings are decoded batch by batch, length-sorted into batches of at most
`batch_seconds` of padded audio. A file the pipeline would refuse (unreadable, truncated, a float file with
NaN / Inf samples, see `audio`) or whose scores are not finite is reported and skipped, never the whole run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch
from tqdm import tqdm

from .audio import (
    NonFiniteAudioError,
    TruncatedAudioError,
    check_complete,
    check_finite_file,
    load_audio,
    resampled_frames,
)
from .backbone import is_tiny_demo_model
from .batching import length_batches
from .errors import AudioError, BackboneError, ConfigError, TrainingError
from .model import GmptlModel, min_samples
from .model_folder import load_model
from .onnx_model import OnnxScorer, is_onnx_folder
from .runtime import autocast, resolve_device

log = logging.getLogger(__name__)

LONG_S = 60  # recordings longer than this are worth scoring in windows (memory grows with length²)

# soundfile format names whose usual file extension differs from the name (RAW has no header: not searched)
EXTENSION_ALIASES = {
    "AIFF": ("aiff", "aif", "aifc"),
    "AU": ("au", "snd"),
    "IRCAM": ("sf",),
    "MAT4": (),  # MATLAB data files are rarely audio
    "MAT5": (),
    "NIST": ("sph", "nist"),
    "OGG": ("ogg", "oga", "opus"),
    "RAW": (),
    "SVX": ("8svx", "iff", "svx"),
    "WAVEX": ("wav",),
}


def audio_extensions() -> frozenset[str]:
    """File extensions (lower case, no dot) of the formats this soundfile build reads."""
    return frozenset(ext for name in sf.available_formats() for ext in EXTENSION_ALIASES.get(name, (name.lower(),)))


@dataclass
class Predictor:
    """One model or an ensemble of models with the same classes and input rate."""

    models: list[GmptlModel]
    classes: list[str]
    sample_rate: int
    min_samples: int
    description: str
    onnx: OnnxScorer | None = None  # an exported ONNX folder, scored with onnxruntime instead of `models`


def fold_models(exp_dir: Path) -> dict[int, Path]:
    """fold → stage-2 model folder, from `exp_dir/stages.tsv` (paths relative to the folder holding results/)."""
    stages = exp_dir / "stages.tsv"
    try:
        table = pd.read_csv(stages, sep="\t", dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise BackboneError(f"'{stages}' is not a readable TSV ({err}); rerun the workflow") from err
    missing = [c for c in ("stage", "fold", "path") if c not in table.columns]
    if missing:
        raise BackboneError(f"'{stages}' lacks column(s) {missing}; rerun the workflow")
    base = Path(os.path.abspath(exp_dir)).parent.parent
    models: dict[int, Path] = {}
    rows = table[table["stage"] == "stage2"]
    if "seed" in rows.columns and rows["seed"].nunique() > 1:  # a run with several seeds: its first seed's models
        first = rows["seed"].dropna().iloc[0]
        log.info("'%s' lists seeds %s; using seed %s's models", stages, list(rows["seed"].dropna().unique()), first)
        rows = rows[rows["seed"] == first]
    for line, row in rows.iterrows():
        try:
            fold = int(row["fold"])
        except (TypeError, ValueError):
            raise BackboneError(f"'{stages}' line {line + 2}: fold '{row['fold']}' is not a number") from None
        if not isinstance(row["path"], str):
            raise BackboneError(f"'{stages}' line {line + 2}: the stage2 row has no path")
        path = Path(row["path"]) if Path(row["path"]).is_absolute() else base / row["path"]
        if models.setdefault(fold, path) != path:
            raise BackboneError(f"'{stages}' lists two stage2 models for fold {fold}: '{models[fold]}' and '{path}'")
    if not models:
        raise BackboneError(f"'{stages}' lists no stage2 model; finish the experiment's run first")
    return dict(sorted(models.items()))


def find_models(model: str | Path, fold: int | None = None) -> tuple[list[Path], str]:
    """The model folders `model` stands for, and a sentence saying which they are.

    A model folder (has model.json) is itself. An experiment's results folder is its `deploy/` model
    when there is one and no `fold` is asked for, else fold `fold`'s stage-2 model, else the ensemble
    of all its fold models (listed in its stages.tsv).
    """
    path = Path(model)
    if is_onnx_folder(path):
        if fold is not None:
            raise ConfigError(f"--fold picks a model of an experiment's results folder; '{path}' is one ONNX export")
        return [path], f"the ONNX export '{path}' (onnxruntime)"
    if (path / "model.json").is_file():
        if fold is not None:
            raise ConfigError(f"--fold picks a model of an experiment's results folder; '{path}' is one model folder")
        return [path], f"model folder '{path}'"
    deploy = path / "deploy"
    if fold is None and (deploy / "model.json").is_file():
        return [deploy], f"the deployed model '{deploy}'"
    if not (path / "stages.tsv").is_file():
        raise BackboneError(
            f"'{path}' is neither a model folder (no model.json) nor an experiment's results folder (no stages.tsv)"
        )
    models = fold_models(path)
    if fold is not None:
        if fold not in models:
            raise BackboneError(f"'{path / 'stages.tsv'}' has no stage2 model of fold {fold} (folds: {list(models)})")
        return [models[fold]], f"fold {fold}'s model '{models[fold]}'"
    return list(models.values()), f"the ensemble (mean probability) of folds {list(models)} of '{path}'"


def warn_if_demo_models(folders: list[Path]) -> None:
    """One warning line when any of `folders` descends from gmptl's tiny random demo backbone."""
    demo = [folder for folder in folders if is_tiny_demo_model(folder)]
    if not demo:
        return
    which = f"model '{demo[0]}' descends" if len(folders) == 1 else f"{len(demo)} of the {len(folders)} models descend"
    log.warning(
        "!!! %s from gmptl's tiny RANDOMLY INITIALISED demo backbone: the scores say nothing about real "
        "recordings; train with a pretrained backbone for real predictions !!!",
        which,
    )


def load_predictor(model: str | Path, fold: int | None = None) -> Predictor:
    """Load the model(s) `model` stands for (see `find_models`); they must agree on classes and rate."""
    folders, description = find_models(model, fold)
    log.info("using %s", description)
    if is_onnx_folder(folders[0]):
        return onnx_predictor(folders[0], description)
    models, first = [], None
    for folder in folders:
        loaded, meta = load_model(folder)
        if loaded.emotion is None:
            raise BackboneError(f"model folder '{folder}' has no emotion head (stage '{meta.get('stage')}')")
        key = (meta["spec"]["classes"], int(meta["audio"]["sample_rate"]))
        if first is not None and key != first[1]:
            raise BackboneError(
                f"model folders '{first[0]}' and '{folder}' differ in classes or sample rate ({first[1]} vs {key})"
            )
        first = first or (folder, key)
        models.append(loaded.eval())
    warn_if_demo_models(folders)
    classes, rate = first[1]
    return Predictor(models, list(classes), rate, max(min_samples(m.encoder) for m in models), description)


def onnx_predictor(folder: Path, description: str) -> Predictor:
    """A `Predictor` scoring with the exported graph in `folder` (onnxruntime)."""
    scorer = OnnxScorer.load(folder)
    info = scorer.description
    if ((info.get("source") or {}).get("backbone_source") or {}).get("tiny_demo_model"):
        log.warning(
            "!!! the ONNX export '%s' descends from gmptl's tiny RANDOMLY INITIALISED demo backbone: the scores say "
            "nothing about real recordings !!!",
            folder,
        )
    rate, shortest = int(info["sample_rate"]), int(info["min_samples"])
    return Predictor([], list(info["classes"]), rate, shortest, description, scorer)


def read_list(path: str) -> list[str]:
    """Paths listed one per line (blank lines and `#` comments skipped), relative to the working directory."""
    lines = Path(path).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def expand_inputs(inputs: Iterable[str | os.PathLike]) -> list[tuple[str, str | None]]:
    """(path, None) per file to score and (input, reason) per input that gives none, in input order.

    An input is a file (taken whatever its extension), a folder (searched recursively for the
    extensions of `audio_extensions`, macOS `._*` files skipped) or `@list.txt` (a file of such paths).
    """
    extensions = audio_extensions()
    entries: list[tuple[str, str | None]] = []
    for item in map(str, inputs):
        items = [item]
        if item.startswith("@"):
            try:
                items = read_list(item[1:])
            except (OSError, UnicodeDecodeError) as err:
                entries.append((item, f"the list file cannot be read ({err})"))
                continue
        for path in map(Path, items):
            if not path.is_dir():
                entries.append((str(path), None))
                continue
            found = sorted(
                p
                for p in path.rglob("*")
                if p.suffix[1:].lower() in extensions and not p.name.startswith("._") and p.is_file()
            )
            entries += [(str(p), None) for p in found] or [(str(path), "the folder holds no audio file")]
    seen: set[str] = set()
    return [e for e in entries if not (e[0] in seen or seen.add(e[0]))]


def unusable(err: AudioError) -> str:
    """Why a recording gives no prediction, as the 'error' column says it (the row names the file)."""
    if isinstance(err, TruncatedAudioError):
        return f"is truncated: {err.detail}"
    if isinstance(err, NonFiniteAudioError):
        return err.detail
    return f"cannot be decoded ({err.__cause__ or err})"


def probe(path: str, sample_rate: int, shortest: int) -> tuple[float | None, int, str | None]:
    """(duration in seconds, samples at `sample_rate`, None) from the header, or (…, reason) when unusable.

    The pipeline's own checks apply: a truncated WAV and a float file with NaN / Inf samples are unusable.
    """
    if not Path(path).exists():
        return None, 0, "the file does not exist"
    if Path(path).stat().st_size == 0:
        return None, 0, "the file is empty (0 bytes)"
    try:
        info = sf.info(path)
    except (RuntimeError, OSError) as err:
        return None, 0, f"cannot be read as audio ({err})"
    if info.frames <= 0:
        return 0.0, 0, "holds no samples"
    duration = info.frames / info.samplerate
    try:
        check_complete(path, info.frames, info.samplerate)
        check_finite_file(path, info.subtype, info.samplerate)
    except AudioError as err:
        return duration, 0, unusable(err)
    samples = resampled_frames(info.frames, info.samplerate, sample_rate)
    if samples < shortest:
        return (
            duration,
            samples,
            f"is {1000 * duration:.1f} ms long; the model needs at least {1000 * shortest / sample_rate:.1f} ms",
        )
    return duration, samples, None


def window_bounds(samples: int, window: int, hop: int) -> list[tuple[int, int]]:
    """Windows of `window` samples every `hop` samples; the last one ends at the recording's end.

    A recording no longer than one window is one window (the whole recording).
    """
    if samples <= window:
        return [(0, samples)]
    return [(start, start + window) for start in [*range(0, samples - window, hop), samples - window]]


HEADER_SLACK = 0.05  # seconds a file may decode short of its header's length (MP3 decoder padding) unrefused


def check_decoded_length(path: str, samples: int, decoded: int, predictor: Predictor) -> None:
    """A file that decodes to clearly less than the `samples` its header declares is a `TruncatedAudioError`."""
    rate = predictor.sample_rate
    if decoded < samples - max(predictor.min_samples, HEADER_SLACK * rate):
        detail = f"its header declares {samples / rate:.2f} s of audio but it decodes to {decoded / rate:.2f} s"
        raise TruncatedAudioError(path, detail)


@dataclass
class Recording:
    path: str
    duration_s: float | None
    samples: int
    error: str | None
    probs: dict[int, np.ndarray]  # segment index → class probabilities


@torch.no_grad()
def ensemble_probs(predictor: Predictor, waves: list[np.ndarray], device: torch.device, precision: str) -> np.ndarray:
    """Mean over the predictor's models of the softmax of the emotion scores, one row per wave."""
    if predictor.onnx is not None:
        return predictor.onnx.probs(waves)
    lengths = torch.tensor([len(w) for w in waves])
    batch = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(w) for w in waves], batch_first=True).to(device)
    total = torch.zeros(len(waves), len(predictor.classes), device=device)
    for model in predictor.models:
        with autocast(device, precision):
            scores = model(batch, lengths.to(device))["emotion"]
        total += torch.softmax(scores.float(), dim=1)
    return (total / len(predictor.models)).cpu().numpy()


def pick_device(name: str) -> torch.device:
    """`resolve_device` (auto → CUDA when present), with errors that name the command-line option."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is visible; use --device auto or cpu")
    try:
        return resolve_device(name)
    except TrainingError as err:
        raise ConfigError(f"--device {name} is not a torch device (auto, cpu, cuda or cuda:N)") from err


def check_windows(window_s: float | None, hop_s: float | None, predictor: Predictor) -> tuple[int, int] | None:
    """(window, hop) in samples, or None without windows; bad values are a `ConfigError` naming the option."""
    if window_s is None:
        if hop_s is not None:
            raise ConfigError("--hop needs --window")
        return None
    hop_s = window_s if hop_s is None else hop_s
    window, hop = round(window_s * predictor.sample_rate), round(hop_s * predictor.sample_rate)
    if window < predictor.min_samples:
        raise ConfigError(f"--window {window_s} is shorter than the model's shortest input")
    if not 0 < hop <= window:
        raise ConfigError(f"--hop {hop_s} must be positive and at most --window {window_s} (no unscored gaps)")
    return window, hop


def score_segments(
    predictor: Predictor,
    recordings: list[Recording],
    segments: list[tuple[int, int, int]],
    *,
    device: torch.device,
    precision: str,
    batch_seconds: float,
    progress: bool,
) -> None:
    """Fill `recordings[i].probs[s]` for every segment s = (recording, start, end), decoding each file once."""
    lengths = np.asarray([end - start for _, start, end in segments])
    remaining = np.bincount([r for r, _, _ in segments], minlength=len(recordings))
    decoded: dict[int, np.ndarray] = {}
    bar = tqdm(total=len(segments), unit="segment", disable=not progress, leave=False)
    for batch in length_batches(lengths, batch_seconds * predictor.sample_rate):
        kept, waves = [], []
        for s in batch:
            r, start, end = segments[s]
            if r not in decoded and recordings[r].error is None:
                try:
                    decoded[r] = load_audio(recordings[r].path, predictor.sample_rate, "convert")
                    check_decoded_length(recordings[r].path, recordings[r].samples, len(decoded[r]), predictor)
                except AudioError as err:
                    decoded.pop(r, None)
                    recordings[r].error = unusable(err)
                    log.warning("skipped '%s': %s", recordings[r].path, recordings[r].error)
            if r in decoded:
                kept.append(s)
                waves.append(decoded[r][start:end] if end < recordings[r].samples else decoded[r][start:])
        if waves:
            for s, probs in zip(kept, ensemble_probs(predictor, waves, device, precision), strict=True):
                recordings[segments[s][0]].probs[s] = probs
        for s in batch:
            remaining[segments[s][0]] -= 1
            if remaining[segments[s][0]] == 0:
                decoded.pop(segments[s][0], None)
        bar.update(len(batch))
    bar.close()


def result_rows(
    predictor: Predictor, recordings: list[Recording], segments: list[tuple[int, int, int]], windows: bool
) -> list[dict]:
    """The output rows, in input order (see the module docstring)."""
    by_recording: dict[int, list[int]] = {}
    for s, (r, _, _) in enumerate(segments):
        by_recording.setdefault(r, []).append(s)
    rows = []
    for r, rec in enumerate(recordings):
        base = {"path": rec.path, "duration_s": rec.duration_s}
        if rec.error is not None:
            rows.append({**base, "error": rec.error})
            continue
        parts = by_recording[r]
        mean = np.mean([rec.probs[s] for s in parts], axis=0)
        if not np.isfinite(mean).all():  # finite but extreme samples can still overflow inside the model
            rec.error = "the model's scores of it are not finite (its samples reach extreme values?)"
            log.warning("skipped '%s': %s", rec.path, rec.error)
            rows.append({**base, "error": rec.error})
            continue
        rows.append({**base, **scores(predictor.classes, mean)})
        if windows:
            for s in parts:
                _, start, end = segments[s]
                bounds = {"start_s": start / predictor.sample_rate, "end_s": end / predictor.sample_rate}
                rows.append({**base, **bounds, **scores(predictor.classes, rec.probs[s])})
    return rows


def scores(classes: list[str], probs: np.ndarray) -> dict:
    return {
        "predicted": classes[int(probs.argmax())],
        **{f"score_{c}": float(p) for c, p in zip(classes, probs, strict=True)},
    }


def output_columns(classes: list[str], windows: bool) -> list[str]:
    where = ["start_s", "end_s"] if windows else []
    return ["path", *where, "duration_s", "predicted", *[f"score_{c}" for c in classes], "error"]


def predict_files(
    model: Predictor | str | Path,
    inputs: Iterable[str | os.PathLike],
    *,
    fold: int | None = None,
    window_s: float | None = None,
    hop_s: float | None = None,
    device: str = "auto",
    precision: str = "auto",
    batch_seconds: float = 120.0,
    progress: bool = False,
) -> pd.DataFrame:
    """Score every recording in `inputs` with `model` (a `Predictor`, a model folder or an experiment's
    results folder, see `find_models`); the table's columns are described in the module docstring."""
    if isinstance(model, Predictor) and fold is not None:
        raise ValueError("predict_files: pass `fold` to load_predictor, not with a loaded Predictor")
    predictor = model if isinstance(model, Predictor) else load_predictor(model, fold)
    windows = check_windows(window_s, hop_s, predictor)
    recordings = []
    for path, problem in expand_inputs(inputs):
        if problem is None:
            duration, samples, problem = probe(path, predictor.sample_rate, predictor.min_samples)
        else:
            duration, samples = None, 0
        if problem:
            log.warning("skipped '%s': %s", path, problem)
        recordings.append(Recording(path, duration, samples, problem, {}))
    segments = [
        (r, start, end)
        for r, rec in enumerate(recordings)
        if rec.error is None
        for start, end in (window_bounds(rec.samples, *windows) if windows else [(0, rec.samples)])
    ]
    long = sum(rec.samples > LONG_S * predictor.sample_rate for rec in recordings)
    if long and windows is None:
        log.info(
            "%d recording(s) last over %d s: scored whole; --window scores long recordings in pieces", long, LONG_S
        )
    torch_device = pick_device(device)
    for m in predictor.models:
        m.to(torch_device)
    score_segments(
        predictor,
        recordings,
        segments,
        device=torch_device,
        precision=precision,
        batch_seconds=batch_seconds,
        progress=progress,
    )
    rows = result_rows(predictor, recordings, segments, windows is not None)
    return pd.DataFrame(rows, columns=output_columns(predictor.classes, windows is not None))
