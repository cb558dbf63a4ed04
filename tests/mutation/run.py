"""Mutation testing of gmptl's core on demand (not in CI): how many deliberate breakages of each module its tests
catch.

    python tests/mutation/run.py                  # every module below (an hour or more on 2 cores)
    python tests/mutation/run.py metrics stats    # some of them
    python tests/mutation/run.py --list           # the modules and the tests each is checked with

The tool is mutmut (3.x): it rewrites each function into variants with one small change (an operator, a
constant, a comparison, a removed argument …) and runs the module's tests against every variant; a variant is
*killed* when a test fails. It was chosen over cosmic-ray for its speed (it selects, per mutant, only the tests
that execute the mutated function, and forks instead of re-importing torch) and because it needs no database
or worker set-up. mutmut only understands a flat `src/` layout, so each run works in a scratch copy of the
checkout with `workflow/scripts/gmptl` as `src/gmptl`; the checkout itself is never touched.

Prints one row per module — mutants, killed, survived, timed out, without covering test, score — and writes the
survivors to `mutation-survivors-<module>.txt` in the scratch folder (printed at the end). Judged-equivalent
survivors are listed, each with a reason, in `tests/mutation/equivalent.md`; the score counts them as
explained: score = (killed + timed out + equivalent) / mutants.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

# module (under gmptl/) → the test files that state its behaviour
MODULES: dict[str, list[str]] = {
    "kmeans": ["test_kmeans.py"],
    "gmp": ["test_gmp.py"],
    "metrics": ["test_metrics.py", "test_stats.py", "test_report.py"],
    "stats": ["test_stats.py", "test_report.py"],
    "folds": ["test_folds.py"],
    "protocols": ["test_folds.py", "test_config.py"],
    "corpora/iemocap": ["test_corpus.py"],
    "corpora/table": ["test_corpora.py", "test_corpus_config.py"],
    "corpora/ravdess": ["test_corpora.py"],
    "corpora/crema_d": ["test_corpora.py"],
    "corpora/msp_podcast": ["test_corpora.py"],
    "corpora/emodb": ["test_corpora.py"],
    "recipes": ["test_recipes.py", "test_config.py", "test_corpus_recipes.py", "test_plan.py"],
    "objectives": ["test_objectives.py", "test_model.py"],
    "model": ["test_model.py", "test_objectives.py"],
    "frames": ["test_frames.py", "test_features.py", "test_gmp.py"],
}


def scratch_copy(dest: Path) -> None:
    """The checkout's tracked and unignored files in `dest`, with the library also as `src/gmptl`."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = ROOT / name.decode()
        if source.is_file():
            target = dest / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    shutil.copytree(dest / "workflow" / "scripts" / "gmptl", dest / "src" / "gmptl")


def configure(dest: Path, module: str, tests: list[str]) -> None:
    """pyproject.toml of the scratch copy: tests import `src/gmptl`; mutmut mutates `module` only. Tests of the rule
    scripts (named `…script…`) are left out: a rule script refuses a gmptl that is not its own workflow's."""
    text = (dest / "pyproject.toml").read_text()
    text = re.sub(r'pythonpath = \["workflow/scripts"\]', 'pythonpath = ["src"]', text)
    selection = json.dumps([f"tests/{name}" for name in tests])
    text += f"""
[tool.mutmut]
source_paths = ["src"]
only_mutate = ["src/gmptl/{module}.py"]
pytest_add_cli_args_test_selection = {selection}
pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x", "-m", "not slow and not slurm", "-k", "not script"]
also_copy = ["config.yaml", "demo.yaml", "workflow", "Snakefile", "README.md"]
"""
    (dest / "pyproject.toml").write_text(text)


def equivalent(module: str) -> set[str]:
    """Mutant names judged equivalent in equivalent.md (lines `- <mutant name>: reason`)."""
    path = HERE / "equivalent.md"
    if not path.is_file():
        return set()
    prefix = "gmptl." + module.replace("/", ".") + "."
    names = re.findall(r"^- `?([\w.]+__mutmut_\d+)`?:", path.read_text(), re.M)
    return {name for name in names if name.startswith(prefix)}


def run_module(module: str, tests: list[str], workdir: Path, children: int, snapshot: Path) -> dict:
    dest = workdir / module.replace("/", "_")
    shutil.copytree(snapshot, dest)
    configure(dest, module, tests)
    # one thread: mutmut forks its workers from a process that has run torch, and a forked child waits for ever
    # on the parent's OpenMP thread pool (every torch mutant would "time out")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": "", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    ran = subprocess.run(["mutmut", "run", "--max-children", str(children)], cwd=dest, env=env, capture_output=True)
    if ran.returncode != 0:  # e.g. the module's tests fail on the unmutated copy: no score can be given
        tail = (ran.stdout + ran.stderr).decode(errors="replace")[-3000:]
        raise SystemExit(f"mutmut run failed for {module} (exit {ran.returncode}) in {dest}:\n{tail}")
    results = subprocess.run(["mutmut", "results", "--all", "true"], cwd=dest, env=env, capture_output=True, text=True)
    status: dict[str, str] = {}
    for line in results.stdout.splitlines():
        match = re.match(r"\s*([\w.]+__mutmut_\d+): (.+)", line)
        if match:
            status[match[1]] = match[2].strip()
    explained = equivalent(module)
    survivors = sorted(name for name, state in status.items() if state == "survived" and name not in explained)
    (workdir / f"mutation-survivors-{module.replace('/', '_')}.txt").write_text("\n".join(survivors) + "\n")
    count = {key: sum(state == key for state in status.values()) for key in ("killed", "survived", "timeout")}
    count["no tests"] = sum(state == "no tests" for state in status.values())
    count["equivalent"] = sum(name in explained for name, state in status.items() if state == "survived")
    total = len(status)
    score = (count["killed"] + count["timeout"] + count["equivalent"]) / total if total else float("nan")
    return {"module": module, "mutants": total, **count, "score": score}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", help=f"some of: {', '.join(MODULES)} (default: all)")
    parser.add_argument("--list", action="store_true", help="list the modules and their tests")
    parser.add_argument("--children", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="parallel mutants")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR (kept) instead of a temporary folder")
    args = parser.parse_args()
    if args.list:
        for module, tests in MODULES.items():
            print(f"{module:<22} {' '.join(tests)}")
        return 0
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {unknown}; --list shows them")
    if shutil.which("mutmut") is None:
        parser.error("mutmut is not installed: pip install 'mutmut==3.8.1'")
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="gmptl-mutation-"))
    snapshot = workdir / "checkout"  # taken once: every module is measured on the same code and tests
    scratch_copy(snapshot)
    rows = []
    print(f"| module | mutants | killed | survived | timeout | no tests | equivalent | score |\n|{'---|' * 8}")
    for module in args.modules or list(MODULES):
        row = run_module(module, MODULES[module], workdir, args.children, snapshot)
        rows.append(row)
        print(
            f"| {module} | {row['mutants']} | {row['killed']} | {row['survived']} | {row['timeout']} | "
            f"{row['no tests']} | {row['equivalent']} | {100 * row['score']:.1f} % |",
            flush=True,
        )
    print(f"survivors (not judged equivalent): {workdir}/mutation-survivors-<module>.txt")
    return 0 if all(row["score"] >= 0.9 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
