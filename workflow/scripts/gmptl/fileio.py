"""Atomic writes, TSV helpers and provenance hashes."""

from __future__ import annotations

import contextlib
import errno
import functools
import glob
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from . import __version__


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds.

    Works for files and folders. A killed or failing writer leaves no file that looks finished; its hidden
    temporary (`.<name>.*.tmp`, possibly full-size) is removed when the output is written again.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    staged = tmp / target.name
    try:
        yield staged
        if target.is_dir() and not target.is_symlink():
            if not staged.is_dir():  # a file never replaces a folder (its contents would be lost)
                raise IsADirectoryError(errno.EISDIR, "is a folder; a file cannot replace it", str(target))
            shutil.rmtree(target)
        os.replace(staged, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def copy_folder(source: str | os.PathLike, target: str | os.PathLike, extra: dict[str, str] | None = None) -> None:
    """Copy a folder atomically, hard-linking files where the filesystem allows (no extra disk); `extra` adds
    text files (name → content) to the copy."""

    def link_or_copy(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    with atomic_path(target) as tmp:
        shutil.copytree(source, tmp, copy_function=link_or_copy)
        for name, text in (extra or {}).items():
            (tmp / name).unlink(missing_ok=True)  # never write through a hard link into the source
            (tmp / name).write_text(text, encoding="utf-8")


def write_tsv(frame: pd.DataFrame, path: str | os.PathLike, float_format: str | None = None) -> None:
    """Write a tab-separated table atomically (no index)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False, float_format=float_format)


def stable_hash(obj) -> str:
    """Short hash of a JSON-able object, independent of key order (used as config hash / fingerprint)."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(path: str | os.PathLike, length: int | None = 16, chunk: int = 1 << 20) -> str:
    """Content hash (sha256) of one file: its first `length` hex digits, or all of them with None."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()[:length]


@functools.cache
def code_version() -> str:
    """'gmptl <version>+<digest>': the package version and a digest of the library's own sources.

    Recorded in every artefact's provenance and part of every resume fingerprint, so a resume after
    an edit of the library starts fresh instead of continuing state made by other code.
    """
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return f"gmptl {__version__}+{digest.hexdigest()[:12]}"
