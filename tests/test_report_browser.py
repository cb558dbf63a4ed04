"""The comparison page, opened in a headless browser (Debian's chromium), shows its CIs and p-values on screen."""

from __future__ import annotations

import pandas as pd
import pytest
from browser import CHROMIUM, dump_dom, rendered

from gmptl.html_report import comparison_page, write_page

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH (Debian: apt-get install chromium)"),
]


def comparison() -> pd.DataFrame:
    row = {"n": 5531, "n_folds": 5, "n_seeds": 1, "reference": "hubert_ft"}
    for metric in ("war", "uar", "macro_f1"):
        row.update({f"{metric}_mean": 0.70, f"{metric}_std": 0.02, f"{metric}_pooled": 0.701})
    base = {"experiment": "hubert_ft", **row, "war_diff": 0.0, "uar_diff": 0.0}
    gmp = {"experiment": "gmp_tl", **row, "uar_mean": 0.7312, "war_mean": 0.7205}
    gmp.update({"uar_diff": 0.0312, "uar_diff_ci_low": 0.0145, "uar_diff_ci_high": 0.0478, "uar_p": 0.0004})
    gmp.update({"war_diff": 0.0205, "war_diff_ci_low": -0.0031, "war_diff_ci_high": 0.0437, "war_p": 0.0893})
    return pd.DataFrame([base, gmp])


def test_browser_shows_the_comparison_with_intervals(tmp_path):
    path = tmp_path / "comparison.html"
    write_page(comparison_page(comparison()), path)
    screen = rendered(dump_dom(path))
    for text in ("+3.12 [+1.45, +4.78]", "0.0004 *", "+2.05 [-0.31, +4.37]", "0.0893", "73.12 ± 2.00"):
        assert text in screen
    assert "gmp_tl has a higher UAR (+3.12 points, 95 % CI [+1.45, +4.78], p = 0.0004)" in screen
    assert "higher WAR" not in screen  # p = 0.089 is not significant
