"""The `gmptl` console script: the user-facing commands outside Snakemake.

Each subcommand is one `add_<name>(subparsers)` function that builds its parser and sets `run`
(a function of the parsed arguments returning the exit status); list it in `COMMANDS`.
Exit status: 0 success, 1 some inputs failed (the rest is written), 2 bad arguments or nothing could run.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import ConfigError, GmptlError
from .failures import storage_failure
from .fileio import atomic_path

log = logging.getLogger("gmptl")


def run_predict(args: argparse.Namespace) -> int:
    check_file_output(args.output, "-o")
    if args.timeline:
        return run_timeline(args)
    given = [option for option in TIMELINE_ONLY if getattr(args, dest_of(option)) not in (None, False)]
    if given:
        raise ConfigError(f"{', '.join(given)} belong(s) to --timeline; add --timeline or drop them")
    from .predict import predict_files  # torch and transformers load only when a command needs them

    table = predict_files(
        args.model,
        args.inputs,
        fold=args.fold,
        window_s=args.window,
        hop_s=args.hop,
        device=args.device,
        precision=args.precision,
        batch_seconds=args.batch_seconds,
        progress=sys.stderr.isatty(),
    )
    write_table(table, args.output)
    whole = table[table["start_s"].isna()] if "start_s" in table else table  # one row per input
    return report_failures(len(whole), int(whole["error"].notna().sum()))


def check_file_output(path: str | None, option: str) -> None:
    """A file to write must not be an existing folder (it would be replaced by the file)."""
    if path and Path(path).is_dir():
        raise ConfigError(f"{option} '{path}' is an existing folder; name a file to write")


def write_table(table, output: str | None) -> None:
    if output:
        with atomic_path(output) as tmp:
            table.to_csv(tmp, sep="\t", index=False, float_format="%.6f")
    else:
        table.to_csv(sys.stdout, sep="\t", index=False, float_format="%.6f")


def report_failures(inputs: int, failed: int) -> int:
    log.info("predicted %d of %d input(s)", inputs - failed, inputs)
    if failed:
        log.warning("%d input(s) failed; their reasons are above and in the 'error' column", failed)
    return 1 if failed else 0


def timeline_outputs(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(HTML page, PNG folder): as given, else beside `-o OUT.tsv` (OUT.html, OUT_plots/), else none.

    Checked before any scoring: no output may be another one, or an existing file or folder of the wrong kind.
    """
    if args.no_pictures:
        if args.html or args.plots:
            raise ConfigError("--no-pictures writes no page and no PNG; drop it or --html / --plots")
        return None, None
    stem = None
    if args.output:
        out = Path(args.output)
        stem = out.with_suffix("") if out.suffix else out
    page = args.html or (f"{stem}.html" if stem is not None else None)
    plots = args.plots or (f"{stem}_plots" if stem is not None else None)
    check_file_output(page, "--html")
    if plots and Path(plots).exists() and not Path(plots).is_dir():
        raise ConfigError(f"--plots '{plots}' is an existing file; name a folder for the PNGs")
    named = [(o, p) for o, p in (("-o", args.output), ("--html", page), ("--plots", plots)) if p]
    for i, (first, one) in enumerate(named):
        for second, other in named[i + 1 :]:
            if Path(one).resolve() == Path(other).resolve():
                raise ConfigError(f"{first} and {second} both name '{one}'; give each output its own path")
    return page, plots


def run_timeline(args: argparse.Namespace) -> int:
    from .timeline import VadOptions, timeline
    from .timeline_report import pictures, plot_files, timeline_page

    page, plots = timeline_outputs(args)  # bad output paths fail before any scoring
    vad = VadOptions(
        **given(
            threshold=args.vad_threshold,
            min_speech_s=args.min_speech,
            min_silence_s=args.min_silence,
            speech_pad_s=args.speech_pad,
        )
    )
    table = timeline(
        args.model,
        args.inputs,
        fold=args.fold,
        segments=args.segments or ("windows" if args.window is not None else "vad"),
        vad=vad,
        window_s=args.window,
        hop_s=args.hop,
        **given(max_segment_s=args.max_segment, smooth=args.smooth),  # unset: the library's defaults
        device=args.device,
        precision=args.precision,
        batch_seconds=args.batch_seconds,
        progress=sys.stderr.isatty(),
    )
    classes = [c[len("score_") :] for c in table.columns if c.startswith("score_")]
    write_table(table, args.output)
    drawn = pictures(table, classes) if plots or page else {}
    if plots:
        written = plot_files(table, classes, plots, drawn)
        log.info("wrote %d timeline picture(s) in '%s'", len(written), plots)
    if page:
        with atomic_path(page) as tmp:
            text = timeline_page(table, classes, page=page, drawn=drawn, **given(audio=args.html_audio))
            tmp.write_text(text, encoding="utf-8")
        log.info("wrote the timeline page '%s'", page)
    files = table.drop_duplicates("file")
    return report_failures(len(files), int(files["error"].notna().sum()))


# options that only --timeline reads: given without it they would be silently ignored
TIMELINE_ONLY = (
    "--segments",
    "--vad-threshold",
    "--min-speech",
    "--min-silence",
    "--speech-pad",
    "--max-segment",
    "--smooth",
    "--html",
    "--plots",
    "--no-pictures",
    "--html-audio",
)


def dest_of(option: str) -> str:
    """The attribute argparse stores a long option under."""
    return option.lstrip("-").replace("-", "_")


def given(**options) -> dict:
    """The options the user set (argparse leaves the others None), so the library's defaults stay the only ones."""
    return {name: value for name, value in options.items() if value is not None}


def add_timeline_options(group) -> None:
    group.add_argument(
        "--timeline",
        action="store_true",
        help="one row per segment (file, start_s, end_s, speech, emotion, score_<class>..., error), a PNG per "
        "file and an HTML page (beside -o OUT.tsv: OUT_plots/, OUT.html)",
    )
    group.add_argument(
        "--segments",
        choices=["vad", "windows", "file"],
        help="how recordings are cut: vad (silero-vad speech segments, the default), windows (--window/--hop), file",
    )
    group.add_argument("--vad-threshold", type=float, metavar="P", help="speech probability (0.5)")
    group.add_argument("--min-speech", type=float, metavar="S", help="shortest speech kept (0.25 s)")
    group.add_argument("--min-silence", type=float, metavar="S", help="shortest pause that ends speech (0.3 s)")
    group.add_argument("--speech-pad", type=float, metavar="S", help="padding per side (0.03 s)")
    group.add_argument("--max-segment", type=float, metavar="S", help="longer speech is split evenly (10 s)")
    group.add_argument(
        "--smooth", type=int, metavar="N", help="average scores over N speech segments each side (0: off)"
    )
    group.add_argument("--html", metavar="FILE", help="the timeline page (default: beside -o)")
    group.add_argument("--plots", metavar="DIR", help="folder for one PNG per file (default: beside -o)")
    group.add_argument("--no-pictures", action="store_true", help="write the TSV only (no PNG, no page)")
    group.add_argument(
        "--html-audio",
        choices=["embed", "link"],
        help="embed the audio in the page (Ogg Vorbis 16 kHz; the default) or link to the original files",
    )


def add_predict(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="emotion scores for recordings with a trained model",
        description=(
            "Score recordings with a model folder, or with an experiment's results folder (its deploy/ model, "
            "fold N's model with --fold, else the mean probability of its fold models). Writes a TSV: path, "
            "[start_s, end_s,] duration_s, predicted, score_<class>..., error."
        ),
    )
    parser.add_argument(
        "--model", required=True, metavar="PATH", help="a model folder or an experiment's results folder"
    )
    parser.add_argument("--fold", type=int, metavar="N", help="with a results folder: use fold N's model only")
    parser.add_argument("-o", "--output", metavar="FILE", help="TSV to write (default: standard output)")
    parser.add_argument("--window", type=float, metavar="S", help="also score windows of S seconds")
    parser.add_argument("--hop", type=float, metavar="S", help="seconds between window starts (default: --window)")
    parser.add_argument("--device", default="auto", metavar="D", help="auto (CUDA when present), cpu, cuda, cuda:N")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "bf16", "fp16", "fp32"],
        help="autocast on CUDA (auto = bf16, as the pipeline)",
    )
    parser.add_argument(
        "--batch-seconds", type=float, default=120.0, metavar="S", help="seconds of padded audio per batch"
    )
    add_timeline_options(parser.add_argument_group("emotion over time (--timeline)"))
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files, folders, or @list.txt")
    parser.set_defaults(run=run_predict)


def run_export(args: argparse.Namespace) -> int:
    from .export import export_model  # torch, transformers and onnx load only when a command needs them

    out = export_model(args.model, args.to, args.out, fold=args.fold)
    log.info("wrote '%s' (its README.md is the model card)", out)
    return 0


def add_export(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="a trained model as one ONNX graph or a stock transformers model, with a model card",
        description=(
            "Export a model folder, or an experiment's results folder (its deploy/ model, or fold N's model with "
            "--fold), into the folder OUT: --to onnx writes model.onnx (raw 16 kHz audio to class scores, dynamic "
            "batch and length) for onnxruntime and `gmptl predict --model OUT`; --to transformers writes a folder "
            "that transformers.pipeline('audio-classification', model=OUT) loads with stock classes. Each folder "
            "gets a README.md model card."
        ),
    )
    parser.add_argument("model", metavar="MODEL", help="a model folder or an experiment's results folder")
    parser.add_argument("--to", required=True, choices=["onnx", "transformers"], help="the export format")
    parser.add_argument("out", metavar="OUT", help="the folder to write (replaced when it exists)")
    parser.add_argument("--fold", type=int, metavar="N", help="with a results folder: export fold N's model")
    parser.set_defaults(run=run_export)


def run_cache(args: argparse.Namespace) -> int:
    from .cache import cache_entries, delete_entry, format_entries, human_bytes, load_config, unused_entries

    entries = cache_entries(args.directory, load_config(args.configfile))
    if args.action == "list":
        print(format_entries(entries))
        return 0
    unused = unused_entries(entries)
    for entry in unused:
        if args.yes:
            delete_entry(entry)  # one at a time: a failure leaves the lines of what is already deleted
        print(f"{'deleted' if args.yes else 'would delete'} {entry.path} ({human_bytes(entry.bytes)})", flush=True)
    total = human_bytes(sum(entry.bytes for entry in unused))
    if args.yes:
        log.info("deleted %d unused stage output(s), %s", len(unused), total)
    else:
        log.info("%d unused stage output(s), %s; nothing deleted (dry run): add --yes to delete", len(unused), total)
    return 0


def add_workflow_arguments(parser: argparse.ArgumentParser) -> None:
    """The config files and working directory, as snakemake takes them."""
    parser.add_argument("--configfile", nargs="*", default=[], metavar="FILE", help="as given to snakemake")
    parser.add_argument("-d", "--directory", default=".", metavar="DIR", help="working directory holding results/")


def add_cache(subparsers) -> None:
    parser = subparsers.add_parser(
        "cache",
        help="list or prune cached stage outputs (results/cache) that no configured experiment uses",
        description=(
            "The configured experiments are read as snakemake reads them: the workflow's config.yaml, then each "
            "--configfile merged over it. 'list' shows every cached stage output with its size and the experiments "
            "using it; 'prune' deletes the unused ones (a dry run unless --yes)."
        ),
    )
    parser.add_argument("action", choices=["list", "prune"])
    add_workflow_arguments(parser)
    parser.add_argument("--yes", action="store_true", help="prune: really delete")
    parser.set_defaults(run=run_cache)


def run_plan(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .cache import load_config

    config = load_config(args.configfile)  # before torch loads: a bad config file is reported at once
    from .plan import corpus_from_files, corpus_from_statistics, format_plan, make_plan

    if (args.utterances is None) != (args.mean_seconds is None):
        raise ConfigError("give --utterances and --mean-seconds together")
    if args.utterances is not None:
        corpus = corpus_from_statistics(config, args.utterances, args.mean_seconds)
    else:
        workdir = Path(args.directory)
        manifest = Path(args.manifest) if args.manifest else workdir / "results/manifest.tsv"
        folds = None if args.manifest else workdir / "results/folds.tsv"
        corpus = corpus_from_files(config, manifest, folds)
    plan = make_plan(config, corpus, gpu_gib=args.gpu_mem)
    print(format_plan(plan))
    for row in plan.misfits:
        log.error(
            "%s (%s, %s) needs about %.1f GiB, more than the %g GiB GPU; lower %s",
            row.job,
            row.backbone,
            row.setting,
            row.estimate.total / 2**30,
            args.gpu_mem,
            row.lower,
        )
    return 1 if plan.misfits else 0


def add_plan(subparsers) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="jobs, GPU hours, audio hours per fold and disk of the configured run, before it starts",
        description=(
            "The configured run is read as snakemake reads it (config.yaml, then each --configfile). Planned on "
            "the built manifest (results/manifest.tsv and results/folds.tsv under -d DIR), another manifest "
            "(--manifest PATH; folds made as make_folds makes them), or corpus statistics "
            "(--utterances N --mean-seconds S)."
        ),
    )
    add_workflow_arguments(parser)
    parser.add_argument("--manifest", metavar="PATH", help="a manifest.tsv to plan on")
    parser.add_argument("--utterances", type=int, metavar="N", help="plan from statistics: number of utterances")
    parser.add_argument("--mean-seconds", type=float, metavar="S", help="plan from statistics: mean duration")
    parser.add_argument(
        "--gpu-mem",
        type=float,
        metavar="GIB",
        help="the GPU's memory: mark each job whose estimated peak does not fit, name the key to lower, exit 1",
    )
    parser.set_defaults(run=run_plan)


COMMANDS: list[Callable] = [add_predict, add_export, add_cache, add_plan]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gmptl", description="GMP-TL speech emotion recognition tools.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(subparsers)
    return parser


def quiet_libraries() -> None:
    """Keep transformers and the hub from printing progress bars and notices on stderr."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - transformers is a dependency
        return
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


@contextlib.contextmanager
def messages_on_stderr(command: str) -> Iterator[None]:
    """gmptl's log messages (INFO and up) on stderr as `gmptl <command>: message` while a command runs."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"gmptl {command}: %(message)s"))
    saved = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.level, log.propagate = saved


def outputs_of(args: argparse.Namespace) -> list[str]:
    """What a command writes, for storage errors that do not name their file."""
    if args.command == "predict":
        extra = [p for p in timeline_outputs(args) if p] if args.timeline else []
        return [args.output or "standard output", *extra]
    return []


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
    with messages_on_stderr(args.command):
        try:
            return args.run(args)
        except GmptlError as err:
            log.error("%s", err)
            return 2
        except Exception as err:  # a full disk or read-only folder deep in a writer: one sentence, not a traceback
            sentence = storage_failure(err, outputs_of(args))
            if sentence is None:
                raise
            log.error("%s", sentence)
            return 2


if __name__ == "__main__":
    sys.exit(main())
