"""Pictures of a timeline table (`timeline.timeline`): a PNG per recording and one self-contained HTML page.

`plot_file(rows, classes, png)`: stacked class scores over time (one step per segment), the top label as a
band underneath, non-speech stretches grey in both.
`timeline_page(table, classes, audio=…)`: per recording, a clickable timeline band (a click on a segment seeks
the audio player to its start and plays), the scores picture, and the share of time per emotion; the audio is
embedded (Ogg Vorbis at 16 kHz, about 0.2 MB a minute) or linked to the original file.
"""

from __future__ import annotations

import base64
import html
import io
import os
import urllib.parse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import soundfile as sf  # noqa: E402

from .audio import stream_audio  # noqa: E402
from .fileio import atomic_path  # noqa: E402

SILENCE = "#d9d9d9"
EMBED_RATE = 16000
AUDIO_MODES = ("embed", "link")


def class_colours(classes: list[str]) -> dict[str, str]:
    palette = plt.get_cmap("tab10").colors
    return {c: matplotlib.colors.to_hex(palette[i % len(palette)]) for i, c in enumerate(classes)}


def plot_file(rows: pd.DataFrame, classes: list[str], png: str | os.PathLike) -> None:
    """Scores of one recording's segment rows over time, written to `png`."""
    colours = class_colours(classes)
    fig, (ax, band) = plt.subplots(
        2, 1, figsize=(11, 3.2), sharex=True, gridspec_kw={"height_ratios": [5, 1], "hspace": 0.08}
    )
    scored = rows[rows["emotion"].notna()]
    edges = np.column_stack([scored["start_s"], scored["end_s"]]).ravel()
    bottom = np.zeros(len(edges))
    for c in classes:
        top = bottom + np.repeat(scored[f"score_{c}"].to_numpy(dtype=float), 2)
        ax.fill_between(edges, bottom, top, color=colours[c], label=c, linewidth=0)
        bottom = top
    for _, row in rows.iterrows():
        colour = colours[row["emotion"]] if isinstance(row["emotion"], str) else SILENCE
        band.axvspan(row["start_s"], row["end_s"], color=colour, linewidth=0)
        if not isinstance(row["emotion"], str):
            ax.axvspan(row["start_s"], row["end_s"], color=SILENCE, linewidth=0)
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.set_title(Path(str(rows["file"].iloc[0])).name, fontsize=10, loc="left")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    band.set_yticks([])
    band.set_ylabel("top", rotation=0, ha="right", va="center", fontsize=8)
    band.set_xlabel("time (s)")
    band.set_xlim(rows["start_s"].min(), rows["end_s"].max())
    fig.savefig(png, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def time_shares(rows: pd.DataFrame, classes: list[str]) -> dict[str, float]:
    """Share of the recording's time per top emotion, and 'no speech' (sums to 1)."""
    seconds = (rows["end_s"] - rows["start_s"]).to_numpy(dtype=float)
    total = seconds.sum()
    labels = rows["emotion"].where(rows["emotion"].notna(), "no speech")
    return {c: float(seconds[labels.to_numpy() == c].sum() / total) for c in [*classes, "no speech"]}


def embedded_audio(path: str) -> str:
    """`path` as a data: URI of Ogg Vorbis at 16 kHz mono (WAV where this libsndfile writes no Vorbis)."""
    vorbis = "VORBIS" in sf.available_subtypes("OGG")
    kind, subtype = ("OGG", "VORBIS") if vorbis else ("WAV", "PCM_16")
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", EMBED_RATE, 1, subtype, format=kind) as out:
        for block in stream_audio(path, EMBED_RATE):
            out.write(np.clip(block, -1, 1))
    mime = "audio/ogg" if vorbis else "audio/wav"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def timeline_band(rows: pd.DataFrame, colours: dict[str, str], index: int) -> str:
    """An SVG band, one rectangle per segment; a click seeks audio player `index` to the segment's start."""
    end = float(rows["end_s"].max())
    rects = []
    for k, (_, row) in enumerate(rows.iterrows()):
        label = row["emotion"] if isinstance(row["emotion"], str) else "no speech"
        x, w = 1000 * row["start_s"] / end, 1000 * (row["end_s"] - row["start_s"]) / end
        rects.append(
            f'<rect class="segment" id="seg-{index}-{k}" x="{x:.3f}" y="0" width="{max(w, 0.5):.3f}" height="40" '
            f'fill="{colours.get(label, SILENCE)}" data-start="{row["start_s"]:.3f}" data-player="{index}">'
            f"<title>{row['start_s']:.2f}–{row['end_s']:.2f} s: {html.escape(label)}</title></rect>"
        )
    return (
        f'<svg class="timeline" viewBox="0 0 1000 40" preserveAspectRatio="none" width="100%" height="40">'
        f"{''.join(rects)}</svg>"
    )


SCRIPT = """
document.querySelectorAll('rect.segment').forEach(function (rect) {
  rect.addEventListener('click', function () {
    var player = document.getElementById('player-' + rect.dataset.player);
    player.currentTime = parseFloat(rect.dataset.start);
    var playing = player.play();
    if (playing && playing.catch) { playing.catch(function () {}); }  // autoplay may be refused
    document.querySelectorAll('rect.segment.current').forEach(function (r) { r.classList.remove('current'); });
    rect.classList.add('current');
  });
});
"""

STYLE = """
body { font-family: sans-serif; margin: 1.5em; max-width: 1200px; }
section { margin-bottom: 2.5em; }
svg.timeline { border: 1px solid #999; cursor: pointer; }
rect.segment.current { stroke: black; stroke-width: 2; }
table { border-collapse: collapse; } td, th { padding: 0.2em 0.8em; text-align: right; }
.key span { display: inline-block; width: 1em; height: 1em; margin: 0 0.3em 0 1em; vertical-align: middle; }
img { max-width: 100%; }
"""


def scored_files(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(file, its rows in time order) for every recording with a timeline, in table order."""
    good = table[table["error"].isna()]
    return [(path, rows.sort_values("start_s")) for path, rows in good.groupby("file", sort=False)]


def pictures(table: pd.DataFrame, classes: list[str]) -> dict[str, bytes]:
    """file → its PNG (`plot_file`), drawn once for both the page and the PNG folder."""
    drawn = {}
    for path, rows in scored_files(table):
        png = io.BytesIO()
        plot_file(rows, classes, png)
        drawn[path] = png.getvalue()
    return drawn


def timeline_page(
    table: pd.DataFrame,
    classes: list[str],
    *,
    audio: str = "embed",
    page: str | os.PathLike | None = None,
    drawn: dict[str, bytes] | None = None,
) -> str:
    """The HTML page (one section per recording with a timeline); `page` is where it will be written, for
    relative links to the audio files with `audio='link'`; `drawn`: the `pictures`, when already drawn."""
    if audio not in AUDIO_MODES:
        raise ValueError(f"audio must be one of {AUDIO_MODES}, not {audio!r}")
    colours = {**class_colours(classes), "no speech": SILENCE}
    key = "".join(f'<span style="background:{colour}"></span>{html.escape(c)}' for c, colour in colours.items())
    drawn = pictures(table, classes) if drawn is None else drawn
    sections = []
    for index, (path, rows) in enumerate(scored_files(table)):
        if audio == "embed":
            source = embedded_audio(path)
        else:
            here = Path(page).resolve().parent if page is not None else Path.cwd()
            link = Path(os.path.relpath(Path(path).resolve(), here)).as_posix()
            source = html.escape(urllib.parse.quote(link))  # '#', '?' and '%' in a name stay part of it
        picture = base64.b64encode(drawn[path]).decode()
        shares = time_shares(rows, classes)
        summary = "".join(
            f"<tr><th>{html.escape(c)}</th><td>{100 * share:.1f} %</td></tr>" for c, share in shares.items()
        )
        sections.append(
            f'<section class="recording" id="file-{index}"><h2>{html.escape(str(path))}</h2>'
            f'<audio id="player-{index}" controls preload="metadata" src="{source}"></audio>'
            f"{timeline_band(rows, colours, index)}"
            f'<img alt="scores over time" src="data:image/png;base64,{picture}">'
            f'<table class="summary"><caption>share of time</caption>{summary}</table></section>'
        )
    failed = table[table["error"].notna()]
    errors = "".join(f"<li>{html.escape(str(r.file))}: {html.escape(str(r.error))}</li>" for r in failed.itertuples())
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>emotion timeline</title><style>{STYLE}</style>'
        f'</head><body><h1>Emotion over time</h1><p class="key">{key}</p>'
        f"<p>Click a segment to play the recording from its start.</p>{''.join(sections)}"
        + (f"<h2>Not scored</h2><ul>{errors}</ul>" if errors else "")
        + f"<script>{SCRIPT}</script></body></html>"
    )


def plot_files(
    table: pd.DataFrame, classes: list[str], folder: str | os.PathLike, drawn: dict[str, bytes] | None = None
) -> list[Path]:
    """One PNG per scored recording in `folder` (named after the file; a clash gets the file's index)."""
    drawn = pictures(table, classes) if drawn is None else drawn
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    names: set[str] = set()
    for index, path in enumerate(drawn):
        name = Path(str(path)).stem
        name = name if name not in names else f"{name}-{index}"
        names.add(name)
        with atomic_path(folder / f"{name}.png") as tmp:
            tmp.write_bytes(drawn[path])
        written.append(folder / f"{name}.png")
    return written
