"""Shared fixtures: tiny IEMOCAP trees written on the fly, a tiny HuBERT, offline Hugging Face."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

ROOT = Path(__file__).resolve().parents[1]
HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"


def write_wav(path: Path, seconds: float, rate: int = 16000, channels: int = 1, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    samples = int(round(seconds * rate))
    data = (0.1 * rng.standard_normal((samples, channels))).astype(np.float32)
    sf.write(path, data if channels > 1 else data[:, 0], rate, subtype="PCM_16")


def summary_line(utt_id: str, label: str, start: float = 1.0, end: float = 2.5) -> str:
    return f"[{start:.4f} - {end:.4f}]\t{utt_id}\t{label}\t[2.5000, 3.0000, 2.0000]\n"


def write_label_file(path: Path, turns: list[tuple[str, str]]) -> None:
    """An EmoEvaluation file in the real format: header, summary lines, evaluator lines, blanks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    blocks = []
    for i, (utt_id, label) in enumerate(turns):
        blocks.append(
            summary_line(utt_id, label, 1.0 + 3 * i, 2.5 + 3 * i)
            + "C-E2:\tNeutral;\t()\nC-E3:\tAnger;\t()\nA-E3:\tval 3; act 2; dom  2;\t()\n"
        )
    path.write_text(HEADER + "\n".join(blocks) + "\n")


def write_tree(root: Path, sessions: dict[int, dict[str, list[tuple[str, str]]]], seconds: float = 1.5) -> Path:
    """IEMOCAP tree: {session: {dialog: [(utt_id, label), ...]}}; one wav per utterance."""
    for session, dialogs in sessions.items():
        session_dir = root / f"Session{session}"
        for dialog, turns in dialogs.items():
            write_label_file(session_dir / "dialog" / "EmoEvaluation" / f"{dialog}.txt", turns)
            for i, (utt_id, _) in enumerate(turns):
                write_wav(
                    session_dir / "sentences" / "wav" / dialog / f"{utt_id}.wav",
                    seconds,
                    seed=zlib.crc32(utt_id.encode()) % 1000 + i,
                )
    return root


def balanced_sessions(n_sessions: int = 5, per_class: int = 2) -> dict:
    """Every session: two dialogs, both speakers, every class `per_class` times per speaker."""
    sessions = {}
    for s in range(1, n_sessions + 1):
        dialog = f"Ses{s:02d}F_impro01"
        turns, counter = [], {"F": 0, "M": 0}
        for gender in ("F", "M"):
            for label in ["neu", "hap", "ang", "sad"] * per_class:
                turns.append((f"{dialog}_{gender}{counter[gender]:03d}", label))
                counter[gender] += 1
        sessions[s] = {dialog: turns}
    return sessions


@pytest.fixture
def tree(tmp_path) -> Path:
    return write_tree(tmp_path / "IEMOCAP_full_release", balanced_sessions())


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> str:
    from gmptl.backbone import make_tiny_hubert

    out = tmp_path_factory.mktemp("tiny") / "tiny_hubert"
    make_tiny_hubert(out, hidden_size=32, num_layers=2, seed=0)
    return str(out)


# The workflow, run as a user runs it -------------------------------------------------------------

SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]
SMALL = """
demo: {utterances_per_speaker: 8, min_duration_s: 0.8, max_duration_s: 1.4}
corpus: {sessions: [1, 2, 3]}
gmp: {layers: [1, 2], k: [4, 8]}
kmeans: {n_init: 1}
train: {epochs: 2, batch_size: 4}
stage1: {train: {epochs: 1}}
deploy: [finetune]
"""


def snakemake(workdir: Path, *args: str, configs=(), timeout: int = 900) -> subprocess.CompletedProcess:
    """Run the project's Snakefile in `workdir` with config files (relative to the repo root, or absolute)."""
    files = [str(ROOT / c) if not Path(c).is_absolute() else c for c in configs]
    command = [*SNAKEMAKE, "-d", str(workdir), *args] + (["--configfile", *files] if files else [])
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=workdir)
    result.output = result.stdout + result.stderr  # Snakemake prints plans and errors on either stream
    return result


def job_counts(output: str) -> dict[str, int]:
    """Jobs per rule of a (dry-)run's 'Job stats' table."""
    table = output.split("Job stats:")[1].split("Reasons:")[0] if "Job stats:" in output else ""
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"}


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """A finished small demo run: (workdir, config files). Tests may rerun jobs but must leave it finished."""
    workdir = tmp_path_factory.mktemp("workflow")
    (workdir / "small.yaml").write_text(SMALL)
    configs = ("demo.yaml", str(workdir / "small.yaml"))
    result = snakemake(workdir, "--cores", "2", configs=configs)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir, configs
