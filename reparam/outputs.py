"""The output step of a study's rows, shared by the apps that run or merge studies (`reparam convergence`,
`reparam aggregate`): results.csv + summary.csv + figures + provenance.json + the printed summary."""
from __future__ import annotations

import io
import logging
from pathlib import Path

import pandas as pd

from .checks import headline, summarize, valid_mask
from .rates import interval_label
from .console import say
from .plots import study_figures
from .provenance import write_provenance
from .sweep import write_results
from .results import write_table


logger = logging.getLogger(__name__)


def write_outputs(results: pd.DataFrame, out_dir: Path, figures: bool = True, stream=None,
                  started: float | None = None) -> pd.DataFrame:
    """The tables, figures and provenance of a study's rows; the summary text goes to `stream` if given, else
    through logging where configured (Hydra: console and job log), else to stdout. `started` (perf_counter)
    is when the run began, for the wall time in provenance.json (default: process start)."""
    out_dir = Path(out_dir)
    write_results(results, out_dir / "results.csv")
    by = ("truth", "structure", "regime") if results["truth"].nunique() > 1 else ("structure", "regime")
    several = "setting_id" in results.columns and results["setting_id"].nunique() > 1
    if several:  # fits of different settings are summarized apart, never pooled
        by = ("setting_id",) + by
    summary = summarize(results, by=by)
    write_table(summary, out_dir / "summary.csv")
    paths = []
    if figures and results["truth"].nunique() == 1 and not several:
        paths = study_figures(results, summary, out_dir)
    write_provenance(out_dir, started)  # after the figures: its wall time is the whole run's
    text = io.StringIO()
    print_summary(results, summary, text)
    print(f"\nwrote {out_dir / 'results.csv'} ({len(results)} rows), {out_dir / 'summary.csv'}", file=text)
    for p in paths:
        if p.suffix == ".png":
            print(f"figure: {p} (+ .pdf)", file=text)
    if figures and not paths:
        print("figures: skipped (need >= 2 sample sizes and a single truth; aggregate a multirun with "
              "`reparam aggregate dirs=[DIR]`)", file=text)
    say(logger, text.getvalue().rstrip("\n"), stream)
    return summary


def print_summary(results: pd.DataFrame, summary: pd.DataFrame, stream) -> None:
    ok = valid_mask(results)
    conv = results["converged"].astype(bool)
    print(f"\nfits: {len(results)}, valid (loss <= truth's, the basic inequality) {int(ok.sum())}, excluded "
          f"{int((~ok).sum())}; diagnostics: converged {int(conv.sum())}, solver status of the valid fits "
          f"{results.loc[ok, 'status'].value_counts().to_dict()}", file=stream)
    if summary.empty:
        return
    if summary["n_sizes"].max() < 2:
        print("summary: one sample size per curve, no slopes (aggregate several runs)", file=stream)
        return
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_rows", 200):
        print(f"\nTHEORY checks (slope of log mean error vs log n, valid fits; {interval_label()} over "
              "replicates):", file=stream)
        print(headline(summary).to_string(index=False), file=stream)
        shown = ["setting_id", "truth", "structure", "regime", "n_max"]
        big = summary[summary.error == "voronoi_prefix"][[c for c in shown + [
                                                                       "mean_at_n_max", "median_at_n_max", "slope",
                                                                       "median_slope"] if c in summary]]
        print("\nvoronoi_prefix at the largest n (mean and median of valid fits):", file=stream)
        print(big.to_string(index=False), file=stream)
