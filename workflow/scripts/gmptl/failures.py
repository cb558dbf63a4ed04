"""Storage failures (full disk, quota, read-only file system, no permission) as one sentence naming the path.

Writers deep in other libraries report these in their own ways: an `OSError` with `errno` (and often no
`filename`), h5py an `OSError` whose message holds `filename = '…'` and `errno = 28`, safetensors a
`SafetensorError` whose message ends in `(os error 28)`. `storage_failure` recognises all of them anywhere
in an exception's chain and says what happened, where, and what to do; any other exception gives None
(it is a bug or another kind of error, and keeps its traceback).
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator, Sequence

# errno → (what happened to the path, what to do); the path is filled in as {path}
STORAGE_ERRNOS = {
    errno.ENOSPC: ("no space is left on the device holding {path}", "free space there, or write elsewhere, and rerun"),
    errno.EDQUOT: (
        "the disk quota of the file system holding {path} is exceeded",
        "free space there, or ask for a bigger quota, and rerun",
    ),
    errno.EROFS: ("{path} is on a read-only file system", "remount it writable, or use a writable folder"),
    errno.EACCES: ("permission to write or delete {path} is denied", "fix its (or its folder's) permissions"),
    errno.EPERM: ("the operation on {path} is not permitted", "fix its (or its folder's) permissions"),
}
# errnos whose text is recognised in messages of exceptions that are not OSError (e.g. safetensors' own)
TEXT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
ERRNO_IN_TEXT = re.compile(r"\(os error (\d+)\)|errno = (\d+)|\[Errno (\d+)\]")
FILENAME_IN_TEXT = re.compile(r"filename = '([^']+)'")


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then its causes and contexts (each exception once)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def storage_errno(exc: BaseException) -> int | None:
    """The storage errno (one of `STORAGE_ERRNOS`) of one exception, from its `errno` or its message."""
    if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
        return exc.errno
    match = ERRNO_IN_TEXT.search(str(exc))
    code = int(next(group for group in match.groups() if group)) if match else None
    allowed = STORAGE_ERRNOS if isinstance(exc, OSError) else TEXT_ERRNOS
    return code if code in allowed else None


def failed_path(exc: BaseException, writing: Sequence[str]) -> str:
    """The path an exception names (its `filename`, or h5py's `filename = '…'`), else the paths being written."""
    filename = getattr(exc, "filename", None)
    if filename is None:
        match = FILENAME_IN_TEXT.search(str(exc))
        filename = match.group(1) if match else None
    if filename is not None:
        return f"'{filename}'"
    if writing:
        return " or ".join(f"'{path}'" for path in writing)
    return "a file being written"


def storage_failure(exc: BaseException, writing: Sequence[str] = ()) -> str | None:
    """One sentence for a full disk, exceeded quota, read-only file system or denied permission; else None.

    `writing` names the outputs the failing code was writing, for errors that do not name their file.
    """
    for link in exception_chain(exc):
        code = storage_errno(link)
        if code is not None:
            what, fix = STORAGE_ERRNOS[code]
            return f"{what.format(path=failed_path(link, writing))}; {fix}"
    return None
