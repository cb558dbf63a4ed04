"""The console script ends bad config files, read-only caches and full disks with one sentence, not a traceback."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest
from conftest import ROOT

import gmptl.cache
from gmptl.cli import main
from gmptl.failures import storage_failure

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "workflow" / "scripts")}
COMMANDS = {"plan": ["plan", "--utterances", "10", "--mean-seconds", "3"], "cache": ["cache", "list"]}
BAD_FILES = {
    "malformed.yaml": (
        b"train: {epochs: 2\n  lr: [1\n",
        "is not valid YAML (line 2, column 5: expected ',' or '}', but got ':'); fix it",
    ),
    "list.yaml": (
        b"- train\n- epochs\n",
        "holds a YAML list, not a mapping of config keys (like `train: {epochs: 2}`); fix it",
    ),
    "binary.yaml": (bytes(range(256)), "is not UTF-8 text (byte 128); give a YAML file"),
}


def run_gmptl(workdir, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "gmptl.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=ENV, cwd=workdir)


@pytest.mark.parametrize("name", sorted(BAD_FILES))
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_bad_config_file_is_one_sentence_naming_it(tmp_path, command, name):
    content, problem = BAD_FILES[name]
    (tmp_path / name).write_bytes(content)
    result = run_gmptl(tmp_path, *COMMANDS[command], "--configfile", name)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [f"gmptl {command}: config file '{name}' {problem}"]


def unused_cache_folder(workdir):
    folder = workdir / "results" / "cache" / "stage2" / "0123456789ab"
    (folder / "fold1").mkdir(parents=True)
    (folder / "fold1" / "weights.bin").write_bytes(b"x" * 100)
    return folder


def test_prune_on_a_read_only_cache_is_one_sentence_naming_the_folder(tmp_path, monkeypatch, capsys):
    # Tests run as root, whom chmod does not stop: the removal is made to fail as on a read-only mount,
    # with the folder-relative file name shutil.rmtree reports there.
    folder = unused_cache_folder(tmp_path)

    def read_only(path, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", "weights.bin")

    monkeypatch.setattr(gmptl.cache.shutil, "rmtree", read_only)
    code = main(["cache", "prune", "--yes", "-d", str(tmp_path), "--configfile", str(ROOT / "demo.yaml")])
    captured = capsys.readouterr()
    assert code == 2 and "deleted" not in captured.out
    assert captured.err.splitlines() == [
        f"gmptl cache: '{folder}' is on a read-only file system; remount it writable, or use a writable folder"
    ]


def test_an_unexpected_error_keeps_its_traceback(tmp_path, monkeypatch):
    def bug(*args, **kwargs):
        raise ValueError("a bug")

    monkeypatch.setattr(gmptl.cache, "cache_entries", bug)
    with pytest.raises(ValueError, match="a bug"):
        main(["cache", "list", "-d", str(tmp_path), "--configfile", str(ROOT / "demo.yaml")])


# --- storage_failure: the shapes the writers raise (messages as h5py 3 and safetensors raise them) -------------


def test_a_plain_enospc_without_a_file_name_names_what_was_being_written():
    sentence = storage_failure(OSError(errno.ENOSPC, "No space left on device"), ["out/model.json"])
    assert (
        sentence
        == "no space is left on the device holding 'out/model.json'; free space there, or write elsewhere, and rerun"
    )


def test_h5py_full_disk_names_the_hdf5_file_from_its_message():
    err = OSError(
        errno.ENOSPC,
        "Can't synchronously write data (file write failed: time = Fri Dec  4 19:31:11 2026\n, filename = "
        "'results/cache/features/x/fold1.h5', file descriptor = 3, errno = 28, error message = 'No space left on "
        "device', buf = 0x563bc0b70370, total write size = 336512, bytes this sub-write = 336512, offset = 65536)",
    )
    assert storage_failure(err).startswith("no space is left on the device holding 'results/cache/features/x/fold1.h5'")


def test_a_safetensors_error_chained_under_another_is_recognised_by_its_os_error_code():
    class SafetensorError(Exception):  # safetensors' own class is not an OSError
        pass

    try:
        try:
            raise SafetensorError("Error while serializing: I/O error: Disk quota exceeded (os error 122)")
        except SafetensorError as inner:
            raise RuntimeError("saving the model failed") from inner
    except RuntimeError as outer:
        sentence = storage_failure(outer, ["stage2/heads.safetensors"])
    assert sentence.startswith("the disk quota of the file system holding 'stage2/heads.safetensors' is exceeded")


def test_errors_that_are_not_about_storage_give_no_sentence():
    assert storage_failure(ValueError("the hub said: [Errno 13] Permission denied")) is None  # EACCES: OSError only
    assert storage_failure(OSError(errno.ENOENT, "No such file or directory", "x")) is None
    assert storage_failure(ValueError("a bug")) is None


def test_a_full_disk_in_a_workflow_job_ends_its_log_with_one_sentence(tmp_path):
    """The adapters' excepthook (runtime.setup_logging) says what a storage failure is, without a traceback."""
    log = tmp_path / "job.log"
    code = (
        "import errno\n"
        "from gmptl.runtime import setup_logging\n"
        f"setup_logging({str(log)!r})\n"
        "raise OSError(errno.ENOSPC, 'No space left on device', '/data/results/cache/x.h5')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "workflow" / "scripts")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode != 0
    text = log.read_text()
    assert "Traceback" not in text
    assert "no space is left on the device holding '/data/results/cache/x.h5'" in text.splitlines()[-1], text
