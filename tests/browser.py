"""Headless-browser helpers for report tests: what a reader's browser shows, not what the file contains.

`dump_dom` runs Debian's `chromium --headless --dump-dom`, which prints the DOM after the page's scripts ran
(the Snakemake report is a React app: its file holds the items as base64 data URIs inside a script, and only
the rendered DOM shows what is on screen). `rendered` drops <script>/<style> so that a search finds only
rendered content. `report_items` decodes the items embedded in a `snakemake --report` file; opening one with
`dump_dom(data_uri)` shows what the report's iframe displays when the reader clicks that item.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def dump_dom(target: str | Path, budget_ms: int = 5000, timeout_s: int = 120) -> str:
    """The DOM of a local HTML file (or a data:/file: URL) after `budget_ms` of virtual time in headless chromium."""
    if CHROMIUM is None:
        raise RuntimeError("chromium is not on PATH (Debian: apt-get install chromium)")
    url = str(target) if str(target).startswith(("data:", "file:")) else Path(target).resolve().as_uri()
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # needed as root (containers, CI)
        "--disable-gpu",
        "--no-first-run",
        f"--virtual-time-budget={budget_ms}",
        "--dump-dom",
        url,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    if result.returncode != 0 or not result.stdout.strip():
        raise RuntimeError(f"chromium failed on {url[:200]} (exit {result.returncode}): {result.stderr[-2000:]}")
    return result.stdout


def rendered(dom: str) -> str:
    """The DOM without <script> and <style> elements: text found here is rendered, not merely embedded."""
    return re.sub(r"<(script|style)\b.*?</\1>", "", dom, flags=re.S | re.I)


def report_items(report_html: str | Path) -> dict[str, dict]:
    """The items embedded in a `snakemake --report` HTML file: path → {mime_type, caption, data_uri, content}."""
    text = Path(report_html).read_text(encoding="utf-8")
    match = re.search(r'<script id="results">\s*var results = (\{.*?\});?\s*</script>', text, flags=re.S)
    if match is None:
        raise ValueError(f"{report_html} holds no `var results = ...` script; not a Snakemake >= 8 report?")
    items = json.loads(match.group(1))
    for item in items.values():
        item["content"] = base64.b64decode(item["data_uri"].split("base64,", 1)[1])
    return items
