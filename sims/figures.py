"""`python -m sims.figures [--dir figures]`: redraw the committed figures from the committed tables only.

Reads DIR/results.csv + DIR/summary.csv (main job) and DIR/robustness.csv (robustness sweep), and writes
DIR/convergence_*.{png,pdf}, DIR/sample_complexity.{png,pdf}, DIR/robustness.{png,pdf} and, from
DIR/inverse-bound/inverse_bound.csv, DIR/inverse-bound/inverse_bound.{png,pdf}.
No fitting happens here; `python -m sims.canonical` reruns the recorded studies that produced the tables.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from reparam.plots import inverse_bound_figure, robustness_figure, save_figure, study_figures
from reparam.validation import DataError


#: Columns the figures read (a table without them is refused with a message, not a KeyError traceback).
RESULT_COLUMNS = ["structure", "regime", "n", "replicate", "truth", "voronoi_prefix"]
SUMMARY_COLUMNS = ["structure", "regime", "error", "slope", "slope_lo", "slope_hi", "prediction", "predicted"]
ROBUSTNESS_COLUMNS = ["structure", "regime", "error", "truth", "slope"]


def read_table(path: Path, columns: list[str], **kwargs) -> pd.DataFrame:
    """A CSV that must exist, parse and hold `columns`; DataError naming the file otherwise."""
    if not path.is_file():
        raise DataError(f"{path} is missing (run `python -m sims.canonical`, or point --dir at a run folder)")
    try:
        table = pd.read_csv(path, **kwargs)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as err:
        raise DataError(f"{path} is not a readable CSV table ({str(err).splitlines()[0]})") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(f"{path} lacks the columns {missing} that the figures need (is it a study table?)")
    return table


def redraw(directory: Path) -> list[Path]:
    paths = []
    results = read_table(directory / "results.csv", RESULT_COLUMNS)
    summary = read_table(directory / "summary.csv", SUMMARY_COLUMNS, keep_default_na=False, na_values=[""])
    summary["prediction"] = summary["prediction"].fillna("")
    paths += study_figures(results, summary, directory)
    if (directory / "inverse-bound" / "inverse_bound.csv").exists():  # written by `python -m sims.check inverse-bound`
        paths += save_figure(inverse_bound_figure(pd.read_csv(directory / "inverse-bound" / "inverse_bound.csv")),
                             directory / "inverse-bound" / "inverse_bound")
    if (directory / "robustness.csv").exists():
        robustness = read_table(directory / "robustness.csv", ROBUSTNESS_COLUMNS)
        paths += save_figure(robustness_figure(robustness), directory / "robustness")
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sims.figures", description=__doc__.split("\n")[0])
    ap.add_argument("--dir", type=Path, default=Path("figures"))
    args = ap.parse_args(argv)
    if not (args.dir / "results.csv").is_file():
        print(f"error: dir={str(args.dir)!r} is invalid: must contain results.csv (run `python -m sims.canonical`)",
              file=sys.stderr)
        return 2
    try:
        paths = redraw(args.dir)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
