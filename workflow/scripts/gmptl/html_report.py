"""Small self-contained HTML pages for `snakemake --report`, which shows HTML and images on screen but TSVs only
as download links: the comparison (with confidence intervals and p-values), per-fold and summary tables, and an
experiment's effective settings.

Metrics appear in percent (0.8123 → 81.23) and differences in percentage points. The CSS is scoped to the
class ``gmptl`` so that a page can also be inlined into the report's own page without restyling it.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import pandas as pd
import yaml

from .fileio import atomic_path

STYLE = """
.gmptl { font-family: system-ui, sans-serif; font-size: 14px; color: #1f2937; }
.gmptl h1 { font-size: 17px; margin: 0.4em 0; }
.gmptl p { max-width: 60em; }
.gmptl .scroll { overflow-x: auto; }
.gmptl table { border-collapse: collapse; margin: 0.5em 0; }
.gmptl th, .gmptl td { border: 1px solid #d1d5db; padding: 3px 8px; text-align: right; white-space: nowrap; }
.gmptl th { background: #f3f4f6; }
.gmptl td.name, .gmptl th.name { text-align: left; }
.gmptl td.sig { background: #dcfce7; font-weight: 600; }
.gmptl tr.reference td { color: #6b7280; }
.gmptl pre { background: #f9fafb; border: 1px solid #e5e7eb; padding: 0.8em; font-size: 13px; }
"""

METRIC_NAMES = {"war": "WAR", "uar": "UAR", "macro_f1": "macro-F1"}


def page(title: str, body: str) -> str:
    """A complete HTML document with the scoped style."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n"
        f'<body><div class="gmptl"><h1>{html.escape(title)}</h1>\n{body}\n</div></body></html>\n'
    )


def percent(value: float, signed: bool = False) -> str:
    """0.81234 → '81.23' ('+81.23' when signed); NaN → ''."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"


def p_value(value: float) -> str:
    """'0.0123', '< 0.0001' for tiny values, '' for NaN."""
    if value is None or math.isnan(value):
        return ""
    return "< 0.0001" if value < 0.0001 else f"{value:.4f}"


def significant(comparison: pd.DataFrame, metric: str, alpha: float) -> pd.Series:
    """Which rows differ from the reference in `metric` at family-wise level `alpha` (Holm-adjusted p < alpha;
    the raw p of a table written before the adjustment existed)."""
    column = f"{metric}_p_holm" if f"{metric}_p_holm" in comparison else f"{metric}_p"
    return comparison[column].lt(alpha)


UNIT_WORDS = {"dialog": "dialogues", "speaker": "speakers", "utterance": "utterances"}


def unit_sentence(comparison: pd.DataFrame) -> str:
    """How the paired tests resampled, e.g. 'resampling whole dialogues within folds (20 dialogues)'."""
    unit = str(comparison["unit"].iloc[0]) if "unit" in comparison else "utterance"
    words = UNIT_WORDS.get(unit, unit)
    count = f" ({int(comparison['n_clusters'].iloc[0])} {words})" if "n_clusters" in comparison else ""
    return f"resampling whole {words} within folds{count}"


def significance_sentence(comparison: pd.DataFrame, alpha: float = 0.05) -> str:
    """One sentence naming every difference to the reference that is significant at `alpha`, or saying none is."""
    reference = comparison["reference"].iloc[0]
    found = []
    for metric in ("uar", "war"):
        for _, row in comparison[significant(comparison, metric, alpha)].iterrows():
            direction = "higher" if row[f"{metric}_diff"] > 0 else "lower"
            found.append(
                f"{row['experiment']} has a {direction} {METRIC_NAMES[metric]} "
                f"({percent(row[f'{metric}_diff'], signed=True)} points, 95 % CI "
                f"[{percent(row[f'{metric}_diff_ci_low'], signed=True)}, "
                f"{percent(row[f'{metric}_diff_ci_high'], signed=True)}], p = {p_value(row[f'{metric}_p'])}"
                + (f", Holm-adjusted p = {p_value(row[f'{metric}_p_holm'])}" if f"{metric}_p_holm" in row else "")
                + ")"
            )
    if len(comparison) < 2:
        return f"Only {reference} was run, so there is nothing to compare it with."
    if not found:
        return f"No experiment differs significantly from {reference} in UAR or WAR at the {alpha} level" + (
            " (Holm-adjusted for all comparisons)." if "uar_p_holm" in comparison else "."
        )
    return f"Significant at the {alpha} level, against {reference}: " + "; ".join(found) + "."


def comparison_page(comparison: pd.DataFrame, alpha: float = 0.05) -> str:
    """The comparison table (`report.comparison_table`) as a page: headline means ± std, differences to the
    reference with 95 % CIs and p-values (significant cells highlighted), pooled figures, and a sentence."""
    reference = comparison["reference"].iloc[0]
    heads = ["experiment"]
    for metric in ("uar", "war"):
        name = METRIC_NAMES[metric]
        heads += [f"{name} mean ± std", f"Δ{name} [95 % CI]", f"p ({name})", f"p Holm ({name})"]
    heads += ["macro-F1 mean ± std", "UAR pooled", "WAR pooled", "seeds"]
    rows = [_comparison_row(row, reference, alpha) for _, row in comparison.iterrows()]
    n_folds = int(comparison["n_folds"].max())
    body = (
        f"<p>{html.escape(significance_sentence(comparison, alpha))}</p>\n"
        + _table(heads, rows)
        + f"<p>Metrics in percent. <em>mean ± std</em>: over the {n_folds} folds (per-fold figures averaged over "
        f"seeds; std with ddof 1); <em>pooled</em>: over all {int(comparison['n'].max())} test utterances. Δ: "
        f"difference to {html.escape(str(reference))} in percentage points, with a 95 % paired bootstrap "
        f"confidence interval and the p-value of a paired permutation test, both {unit_sentence(comparison)}; "
        "<em>p Holm</em>: the p-value adjusted for all comparisons with the reference (Holm); highlighted where "
        f"the Holm-adjusted p &lt; {alpha}.</p>"
    )
    return page("Comparison of experiments", body)


def _comparison_row(row: pd.Series, reference: str, alpha: float) -> tuple[str, list[str]]:
    is_reference = row["experiment"] == reference
    cells = [_cell(row["experiment"] + (" (reference)" if is_reference else ""), "name")]
    for metric in ("uar", "war"):
        holm_p = row.get(f"{metric}_p_holm", row[f"{metric}_p"])
        mark = "sig" if holm_p < alpha else ""
        cells.append(_cell(f"{percent(row[f'{metric}_mean'])} ± {percent(row[f'{metric}_std'])}"))
        cells.append(_cell("—" if is_reference else _diff_text(row, metric), mark))
        cells.append(_cell("" if is_reference else p_value(row[f"{metric}_p"]), mark))
        cells.append(_cell("" if is_reference else p_value(holm_p) + (" *" if mark else ""), mark))
    cells.append(_cell(f"{percent(row['macro_f1_mean'])} ± {percent(row['macro_f1_std'])}"))
    cells += [_cell(percent(row["uar_pooled"])), _cell(percent(row["war_pooled"])), _cell(row["n_seeds"])]
    return ("reference" if is_reference else "", cells)


def _diff_text(row: pd.Series, metric: str) -> str:
    low, high = percent(row[f"{metric}_diff_ci_low"], True), percent(row[f"{metric}_diff_ci_high"], True)
    return f"{percent(row[f'{metric}_diff'], True)} [{low}, {high}]"


def metrics_page(table: pd.DataFrame, title: str, note: str) -> str:
    """A per-fold or summary metrics table (`report.experiment_tables`): metrics in percent, counts as is."""
    shown = table.copy()
    for column in shown.columns:
        if column in ("war", "uar", "macro_f1") or column.startswith("recall_"):
            shown[column] = shown[column].map(percent)
    heads = [METRIC_NAMES.get(c, c) for c in shown.columns]
    rows = [("", [_cell(v, "name" if i == 0 else "") for i, v in enumerate(values)]) for values in shown.values]
    return page(title, _table(heads, rows) + f"<p>{html.escape(note)}</p>")


def settings_page(settings: dict, title: str) -> str:
    """An experiment's effective settings as a readable YAML block."""
    text = yaml.safe_dump(_plain(settings), sort_keys=False, default_flow_style=False, allow_unicode=True)
    return page(title, f"<pre>{html.escape(text)}</pre>")


def write_page(text: str, path: str | Path) -> None:
    """Write a page atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _plain(value):
    """Settings as plain YAML-able types (tuples → lists, paths and other objects → strings)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _cell(value, css: str = "") -> str:
    attr = f' class="{css}"' if css else ""
    return f"<td{attr}>{html.escape(str(value))}</td>"


def _table(heads: list[str], rows: list[tuple[str, list[str]]]) -> str:
    head = "".join(f'<th class="{"name" if i == 0 else ""}">{html.escape(h)}</th>' for i, h in enumerate(heads))
    body = "\n".join(f'<tr class="{css}">{"".join(cells)}</tr>' for css, cells in rows)
    return f'<div class="scroll"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table></div>\n'
