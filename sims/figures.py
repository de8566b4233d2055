"""`python -m sims.figures [--dir figures]`: redraw the committed figures from the committed tables only.

Reads DIR/results.csv + DIR/summary.csv (main job) and DIR/robustness.csv (robustness sweep), and writes
DIR/convergence_*.{png,pdf}, DIR/sample_complexity.{png,pdf} and DIR/robustness.{png,pdf}.
No fitting happens here; `python -m sims.canonical` reruns the recorded studies that produced the tables.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from reparam.plots import robustness_figure, save_figure, study_figures


def redraw(directory: Path) -> list[Path]:
    paths = []
    results = pd.read_csv(directory / "results.csv")
    summary = pd.read_csv(directory / "summary.csv", keep_default_na=False, na_values=[""])
    summary["prediction"] = summary["prediction"].fillna("")
    paths += study_figures(results, summary, directory)
    if (directory / "robustness.csv").exists():
        paths += save_figure(robustness_figure(pd.read_csv(directory / "robustness.csv")), directory / "robustness")
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sims.figures", description=__doc__.split("\n")[0])
    ap.add_argument("--dir", type=Path, default=Path("figures"))
    args = ap.parse_args(argv)
    if not (args.dir / "results.csv").is_file():
        print(f"error: dir={str(args.dir)!r} is invalid: must contain results.csv (run `python -m sims.canonical`)",
              file=sys.stderr)
        return 2
    for p in redraw(args.dir):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
