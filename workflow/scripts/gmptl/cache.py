"""Housekeeping of the stage cache (results/cache): which outputs the configured experiments use, and pruning.

The configured experiments are read exactly as the workflow reads them: the workflow's `config.yaml`,
then each `--configfile` merged over it, validated. Their recipes (`gmptl.recipes`) name the cache
folders in use; every other `results/cache/<kind>/<id>/` folder is unused and can be deleted.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from .config import deep_merge, experiment_settings, load_yaml, validate_config
from .errors import ConfigError
from .recipes import CACHE, KINDS, catalog, experiment_seeds, experiment_stages, seeded

WORKFLOW_ROOT = Path(__file__).resolve().parents[3]
YAML_KINDS = {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}


@dataclass
class CacheEntry:
    """One recipe folder of the cache, all folds together."""

    kind: str
    id: str
    path: Path
    bytes: int
    used_by: list[str]


def read_config_file(path: str | Path) -> dict:
    """One config file as a mapping (an empty file is {}); anything else is a `ConfigError` naming the file."""
    if not Path(path).is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        content = load_yaml(path)
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file '{path}' is not UTF-8 text (byte {err.start}); give a YAML file") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"config file '{path}' is not valid YAML ({yaml_problem(err)}); fix it") from err
    except OSError as err:
        raise ConfigError(f"config file '{path}' cannot be read ({err.strerror})") from err
    if content is None:
        return {}
    if not isinstance(content, dict):
        kind = YAML_KINDS.get(type(content), "scalar")
        raise ConfigError(
            f"config file '{path}' holds a YAML {kind}, not a mapping of config keys (like `train: {{epochs: 2}}`); "
            "fix it"
        )
    return content


def yaml_problem(err: yaml.YAMLError) -> str:
    """'line L, column C: problem' of a YAML error (its first line when it has no position)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


def load_config(configfiles: list[str | Path], base: str | Path | None = None) -> dict:
    """The validated config the workflow would see for `snakemake --configfile FILES…`."""
    base = Path(base) if base else WORKFLOW_ROOT / "config.yaml"
    config: dict = {}
    for path in [base, *configfiles]:
        config = deep_merge(config, read_config_file(path))
    return validate_config(config)


def stage_users(config: dict) -> dict[tuple[str, str], list[str]]:
    """(kind, id) of every cached stage of the configured experiments → the experiments using it."""
    users: dict[tuple[str, str], list[str]] = {}
    for name in config["experiments"]:
        settings = experiment_settings(config, name)
        for seed in experiment_seeds(config, settings):
            for key in catalog({seed: experiment_stages(config, seeded(settings, seed))}):
                users.setdefault(key, [])
                if name not in users[key]:
                    users[key].append(name)
    return users


def folder_bytes(path: Path) -> int:
    """Bytes of the files under `path` (symbolic links not followed)."""
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def cache_entries(workdir: str | Path, config: dict) -> list[CacheEntry]:
    """Every recipe folder under `<workdir>/results/cache`, with its size and the experiments using it."""
    users = stage_users(config)
    entries = []
    for kind in KINDS:
        folder = Path(workdir) / CACHE / kind
        if not folder.is_dir():
            continue
        for path in sorted(p for p in folder.iterdir() if p.is_dir()):
            entries.append(CacheEntry(kind, path.name, path, folder_bytes(path), users.get((kind, path.name), [])))
    return entries


def unused_entries(entries: list[CacheEntry]) -> list[CacheEntry]:
    """The entries no configured experiment uses (what `gmptl cache prune` deletes)."""
    return [entry for entry in entries if not entry.used_by]


def delete_entry(entry: CacheEntry) -> None:
    """Delete one cache folder; an `OSError` (read-only cache, no permission) names that folder.

    (shutil.rmtree names the failing file relative to its folder, which says little.)
    """
    try:
        shutil.rmtree(entry.path)
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(entry.path)) from err


def human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover


def format_entries(entries: list[CacheEntry]) -> str:
    """A table of cache entries: kind, id, size, used by."""
    lines = [f"{'kind':<9}{'id':<14}{'size':>11}  used by"]
    for entry in entries:
        used = ", ".join(entry.used_by) or "-  (unused)"
        lines.append(f"{entry.kind:<9}{entry.id:<14}{human_bytes(entry.bytes):>11}  {used}")
    unused = [entry for entry in entries if not entry.used_by]
    lines.append(
        f"{len(entries)} cached stage output(s); {len(unused)} unused, {human_bytes(sum(e.bytes for e in unused))}"
    )
    return "\n".join(lines)
