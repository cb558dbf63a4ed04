"""A synthetic demo corpus of speech-like audio, in the IEMOCAP, RAVDESS or table layout.

Source-filter synthesis: a jittered glottal pulse train (low-passed for spectral tilt, with
breath noise) through three formant resonators, in syllable-like segments with raised-cosine
envelopes, consonant-like noise bursts and pauses. Speakers have gender-typical pitch and
formant scales; emotions differ in pitch level and range, tempo, energy, tilt and breathiness,
with per-utterance variation so that classes overlap (learnable, not trivially separable).

The IEMOCAP tree uses the real layout and EmoEvaluation format, including labels to drop
(xxx, fru), an evaluator-level `Categorical/` subfolder, macOS `._*` files, and letter-suffixed
and script dialog ids, so the demo exercises the same reader as the real corpus. The RAVDESS tree
uses the release's `Actor_NN/MM-VV-EE-II-SS-RR-AA.wav` names (with calm and fearful files the
default map drops, and one song file per actor); the table corpus is `labels.tsv` (path, emotion,
speaker, gender, session, split) beside `wav/<speaker>/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import lfilter

from .errors import ConfigError

SAMPLE_RATE = 16000
STYLES = {  # pitch factor, pitch range, tempo, energy, tilt pole (higher = darker), breath noise
    "neu": dict(pitch=1.00, range=0.06, tempo=1.00, energy=1.00, tilt=0.90, breath=0.03),
    "hap": dict(pitch=1.22, range=0.22, tempo=1.12, energy=1.35, tilt=0.82, breath=0.02),
    "ang": dict(pitch=1.12, range=0.14, tempo=1.28, energy=1.90, tilt=0.65, breath=0.01),
    "sad": dict(pitch=0.86, range=0.04, tempo=0.74, energy=0.55, tilt=0.96, breath=0.10),
}
STYLE_OF_LABEL = {"exc": "hap", "neutral": "neu", "calm": "neu", "happy": "hap", "angry": "ang"}  # speaks like
RAW_LABELS = {"neu": ["neu"], "hap": ["hap", "exc"], "ang": ["ang"], "sad": ["sad"]}
CLASS_SHARE = {"neu": 0.31, "hap": 0.30, "ang": 0.20, "sad": 0.19}
DROPPED_LABELS = ["xxx", "fru"]
VOWELS = [(730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410)]
EVALUATOR_WORDS = {
    "neu": "Neutral",
    "hap": "Happiness",
    "exc": "Excited",
    "ang": "Anger",
    "sad": "Sadness",
    "xxx": "Frustration",
    "fru": "Frustration",
}


@dataclass(frozen=True)
class Speaker:
    session: int
    gender: str
    f0: float
    formant_scale: float


def dialog_ids(session: int) -> list[str]:
    """Four dialogs per session: improvised, letter-suffixed, and two script ids."""
    prefix = f"Ses{session:02d}"
    return [f"{prefix}F_impro01", f"{prefix}M_impro05a", f"{prefix}F_script01_1", f"{prefix}M_script01_1b"]


def make_speaker(session: int, gender: str, rng: np.random.Generator) -> Speaker:
    if gender == "F":
        return Speaker(session, gender, float(rng.normal(205, 12)), float(rng.normal(1.16, 0.03)))
    return Speaker(session, gender, float(rng.normal(112, 8)), float(rng.normal(1.0, 0.03)))


def resonator(signal: np.ndarray, freq: float, bandwidth: float) -> np.ndarray:
    """Second-order formant resonator (unit gain at DC)."""
    r = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
    theta = 2 * np.pi * freq / SAMPLE_RATE
    a = [1.0, -2 * r * np.cos(theta), r * r]
    return lfilter([sum(a)], a, signal)


def glottal_source(f0: np.ndarray, tilt: float, breath: float, rng: np.random.Generator) -> np.ndarray:
    """Pulse train following the per-sample pitch `f0`, low-passed (tilt) plus breath noise."""
    phase = np.cumsum(f0 / SAMPLE_RATE)
    pulses = np.diff(np.floor(phase), prepend=0.0)
    source = lfilter([1.0], [1.0, -tilt], lfilter([1.0], [1.0, -tilt], pulses))
    source = source / (np.abs(source).max() + 1e-9)
    return source + breath * rng.standard_normal(len(f0))


def style_name(label: str) -> str | None:
    """The style a raw label speaks in (exc like hap, RAVDESS words like their class); None for xxx, fru …"""
    name = STYLE_OF_LABEL.get(label, label)
    return name if name in STYLES else None


def synthesize(speaker: Speaker, emotion: str, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """One utterance of `duration_s` seconds in the style of raw label `emotion` (none: a random style)."""
    name = style_name(emotion) or str(rng.choice(list(STYLES)))
    style = STYLES[name]
    n = int(duration_s * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    pitch = speaker.f0 * style["pitch"] * rng.normal(1.0, 0.06)
    pitch_range = style["range"] * rng.uniform(0.6, 1.4)
    contour = 1 + pitch_range * np.sin(2 * np.pi * rng.uniform(1.5, 3.5) * t + rng.uniform(0, 2 * np.pi))
    declination = 1 - (0.12 if name == "sad" else 0.05) * t / max(duration_s, 1e-3)
    f0 = pitch * contour * declination * (1 + 0.01 * rng.standard_normal(n))
    tilt = float(np.clip(style["tilt"] + rng.normal(0, 0.03), 0.3, 0.985))
    source = glottal_source(f0, tilt, style["breath"], rng)
    syllable_s = 0.19 / (style["tempo"] * rng.normal(1.0, 0.08))
    out = np.zeros(n)
    start = int(rng.uniform(0.05, 0.15) * SAMPLE_RATE)
    while start < n - int(0.08 * SAMPLE_RATE):
        length = int(syllable_s * rng.uniform(0.7, 1.3) * SAMPLE_RATE)
        stop = min(n, start + length)
        formants = [f * speaker.formant_scale * rng.normal(1.0, 0.04) for f in VOWELS[rng.integers(len(VOWELS))]]
        segment = source[start:stop]
        for freq, bandwidth in zip(formants, (80, 110, 150), strict=False):
            segment = resonator(segment, min(freq, 0.45 * SAMPLE_RATE), bandwidth)
        envelope = np.sin(np.linspace(0, np.pi, stop - start)) ** 0.7
        burst = min(stop - start, int(0.025 * SAMPLE_RATE))
        segment[:burst] += 0.3 * rng.standard_normal(burst) * np.linspace(1, 0, burst)
        out[start:stop] += segment * envelope * rng.uniform(0.7, 1.0)
        gap = 0.25 if rng.random() < 0.15 else 0.02
        start = stop + int(gap / style["tempo"] * SAMPLE_RATE)
    energy = style["energy"] * rng.lognormal(0.0, 0.15)
    out = out / (np.sqrt(np.mean(out**2)) + 1e-9) * 0.05 * energy
    out += 0.0005 * rng.standard_normal(n)
    return np.clip(out, -0.99, 0.99).astype(np.float32)


def utterance_plan(n_kept: int, rng: np.random.Generator) -> list[str]:
    """Raw labels of one speaker's utterances: `n_kept` four-class ones plus ~10 % to drop."""
    counts = {c: int(round(share * n_kept)) for c, share in CLASS_SHARE.items()}
    counts["neu"] += n_kept - sum(counts.values())
    labels = []
    for emotion, count in counts.items():
        labels += [str(rng.choice(RAW_LABELS[emotion])) for _ in range(count)]
    labels += [str(rng.choice(DROPPED_LABELS)) for _ in range(max(1, n_kept // 10))]
    rng.shuffle(labels)
    return labels


def evaluation_block(start: float, end: float, utt_id: str, label: str, rng: np.random.Generator) -> str:
    vad = ", ".join(f"{v:.4f}" for v in rng.uniform(1.5, 4.5, size=3))
    word = EVALUATOR_WORDS[label]
    lines = [f"[{start:.4f} - {end:.4f}]\t{utt_id}\t{label}\t[{vad}]"]
    lines += [f"C-E{i}:\t{word};\t()" for i in (1, 2, 4)]
    lines += [
        f"A-E{i}:\tval {rng.integers(1, 6)}; act {rng.integers(1, 6)}; dom  {rng.integers(1, 6)};\t()" for i in (1, 2)
    ]
    return "\n".join(lines) + "\n"


def write_session(root: Path, session: int, n_kept: int, durations: tuple[float, float], rng) -> None:
    speakers = {g: make_speaker(session, g, rng) for g in ("F", "M")}
    dialogs = dialog_ids(session)
    blocks: dict[str, list[str]] = {d: [] for d in dialogs}
    clock = {d: 2.0 for d in dialogs}
    counters = {(d, g): 0 for d in dialogs for g in speakers}
    session_dir = root / f"Session{session}"
    for gender, speaker in speakers.items():
        for i, label in enumerate(utterance_plan(n_kept, rng)):
            dialog = dialogs[i % len(dialogs)]
            utt_id = f"{dialog}_{gender}{counters[dialog, gender]:03d}"
            counters[dialog, gender] += 1
            duration = float(rng.uniform(*durations))
            wav_dir = session_dir / "sentences" / "wav" / dialog
            wav_dir.mkdir(parents=True, exist_ok=True)
            sf.write(
                wav_dir / f"{utt_id}.wav", synthesize(speaker, label, duration, rng), SAMPLE_RATE, subtype="PCM_16"
            )
            blocks[dialog].append(evaluation_block(clock[dialog], clock[dialog] + duration, utt_id, label, rng))
            clock[dialog] += duration + 0.5
    write_labels(session_dir, blocks)


def write_labels(session_dir: Path, blocks: dict[str, list[str]]) -> None:
    """EmoEvaluation/<dialog>.txt in the real format, plus distractors the reader must skip."""
    folder = session_dir / "dialog" / "EmoEvaluation"
    (folder / "Categorical").mkdir(parents=True, exist_ok=True)
    header = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
    for dialog, dialog_blocks in blocks.items():
        (folder / f"{dialog}.txt").write_text(header + "\n".join(dialog_blocks) + "\n")
        categorical = [b.split("\t")[1] + " :Neutral state; ()" for b in dialog_blocks]
        (folder / "Categorical" / f"{dialog}_e2_cat.txt").write_text("\n".join(categorical) + "\n")
        (folder / f"._{dialog}.txt").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")


RAVDESS_CODES = {"neutral": "01", "calm": "02", "happy": "03", "sad": "04", "angry": "05", "fearful": "06"}
RAVDESS_WORDS = {
    "neu": "neutral",
    "hap": "happy",
    "exc": "happy",
    "ang": "angry",
    "sad": "sad",
    "xxx": "calm",
    "fru": "fearful",
}
RAVDESS_VARIANTS = [(i, s, r) for i in (1, 2) for s in (1, 2) for r in (1, 2)]  # intensity, statement, repetition


def write_wav(path: Path, speaker: Speaker, label: str, durations: tuple[float, float], rng) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    wave = synthesize(speaker, label, float(rng.uniform(*durations)), rng)
    sf.write(path, wave, SAMPLE_RATE, subtype="PCM_16")


def write_ravdess_actor(root: Path, actor: int, n_kept: int, durations: tuple[float, float], rng) -> None:
    """Actor_NN/03-01-EE-II-SS-RR-NN.wav for the plan's labels, plus one song file (03-02-…)."""
    speaker = make_speaker(actor, "M" if actor % 2 else "F", rng)
    used: dict[str, int] = {}
    folder = root / f"Actor_{actor:02d}"
    for label in [RAVDESS_WORDS[raw] for raw in utterance_plan(n_kept, rng)]:
        if used.get(label, 0) >= len(RAVDESS_VARIANTS):
            raise ConfigError(
                f"config key 'demo.utterances_per_speaker': {n_kept} is too many for RAVDESS names (8 per emotion)"
            )
        intensity, statement, repetition = RAVDESS_VARIANTS[used.get(label, 0)]
        used[label] = used.get(label, 0) + 1
        name = f"03-01-{RAVDESS_CODES[label]}-{intensity:02d}-{statement:02d}-{repetition:02d}-{actor:02d}.wav"
        write_wav(folder / name, speaker, label, durations, rng)
    write_wav(folder / f"03-02-03-01-01-01-{actor:02d}.wav", speaker, "happy", durations, rng)


def table_rows(root: Path, index: int, n_speakers: int, n_kept: int, durations: tuple[float, float], rng) -> list[dict]:
    """One table speaker's wavs (wav/spkNN/) and rows; speakers pair into sessions: last test, the one before valid."""
    gender = "F" if index % 2 == 0 else "M"
    name, session = f"spk{index + 1:02d}", index // 2 + 1
    last = (n_speakers - 1) // 2 + 1
    split = "test" if session == last else "valid" if session == last - 1 > 1 else "train"
    speaker = make_speaker(session, gender, rng)
    rows = []
    for number, raw in enumerate(r for r in utterance_plan(n_kept, rng) if style_name(r)):
        path = Path("wav") / name / f"{name}_{number:03d}.wav"
        write_wav(root / path, speaker, raw, durations, rng)
        label = style_name(raw)
        rows.append(
            {
                "path": path.as_posix(),
                "emotion": label,
                "speaker": name,
                "gender": gender,
                "session": session,
                "split": split,
            }
        )
    return rows


def make_demo_corpus(
    out_dir: str | Path,
    utterances_per_speaker: int = 24,
    min_duration_s: float = 1.0,
    max_duration_s: float = 2.5,
    seed: int = 7,
    sessions: tuple[int, ...] = (1, 2, 3, 4, 5),
    corpus_format: str = "iemocap",
    speakers: int = 8,
) -> None:
    """Write the synthetic corpus into `out_dir` (deterministic from `seed`).

    iemocap: an IEMOCAP_full_release tree with two speakers per session of `sessions`;
    ravdess: `speakers` actors; table: `speakers` speakers listed in `out_dir/labels.tsv`.
    """
    out_dir = Path(out_dir)
    durations = (min_duration_s, max_duration_s)
    if corpus_format == "iemocap":
        for session in sessions:
            write_session(out_dir, session, utterances_per_speaker, durations, np.random.default_rng([seed, session]))
    elif corpus_format == "ravdess":
        for actor in range(1, speakers + 1):
            write_ravdess_actor(out_dir, actor, utterances_per_speaker, durations, np.random.default_rng([seed, actor]))
    elif corpus_format == "table":
        rows = []
        for index in range(speakers):
            rng = np.random.default_rng([seed, index + 1])
            rows += table_rows(out_dir, index, speakers, utterances_per_speaker, durations, rng)
        columns = ["path", "emotion", "speaker", "gender", "session", "split"]
        lines = ["\t".join(columns)] + ["\t".join(str(row[c]) for c in columns) for row in rows]
        (out_dir / "labels.tsv").write_text("\n".join(lines) + "\n")
    else:
        raise ConfigError(f"config key 'demo.format': '{corpus_format}' is not iemocap, ravdess or table")
    (out_dir / "README.txt").write_text(
        f"Synthetic {corpus_format}-layout demo corpus written by gmptl (not real data).\n"
    )


DEMO_FOLDER = Path("results/demo")


@dataclass(frozen=True)
class DemoOutputs:
    """What the demo rules build: the corpus, the tiny backbone, both, or neither."""

    corpus: bool
    backbone: bool


def demo_outputs(enabled: bool, corpus_root: str, backbone: str) -> DemoOutputs:
    """Which demo artefacts the workflow builds. Demo rules write only under results/demo/.

    With `demo.enabled`, a corpus root or backbone under results/demo/ is built there; one that exists
    elsewhere is used as it is; one that does not exist elsewhere (a mistyped path, a hub id) is an error,
    so a random model or a synthetic corpus can never stand in for a real one.
    """
    if not enabled:
        return DemoOutputs(False, False)
    built = {}
    for key, value in (("corpus.root", corpus_root), ("backbone", backbone)):
        path = Path(value)
        inside = not path.is_absolute() and DEMO_FOLDER in (path, *path.parents)
        if not inside and not path.exists():
            raise ConfigError(
                f"config key '{key}': demo.enabled builds demo data only under {DEMO_FOLDER}/, and '{value}' "
                f"is neither there nor an existing folder; for the demo use {DEMO_FOLDER}/… (see demo.yaml), "
                "for real data set demo.enabled: false"
            )
        built[key] = inside
    return DemoOutputs(corpus=built["corpus.root"], backbone=built["backbone"])
