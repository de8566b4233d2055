"""`python -m sims.aggregate DIR [DIR ...] [--out OUT] [--no-figures]`: merge runs into one table + figures.

Reads every results.jsonl below the given directories (a multirun directory holds one per job; corrupt
records are skipped with a warning), drops duplicate fits, and writes OUT/results.csv, OUT/summary.csv
and the figures (OUT defaults to the first DIR).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from reparam.results import ResultLog
from reparam.sweep import tidy
from sims.report import write_outputs


def collect(dirs: list[Path]) -> pd.DataFrame:
    frames = []
    for d in dirs:
        for log in sorted(d.rglob("results.jsonl")):
            rows = ResultLog(log).rows()
            if rows:
                frames.append(pd.DataFrame(rows))
    if not frames:
        raise FileNotFoundError(f"no results.jsonl with rows below {[str(d) for d in dirs]}")
    return tidy(pd.concat(frames, ignore_index=True))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sims.aggregate", description=__doc__.split("\n")[0])
    ap.add_argument("dirs", nargs="+", type=Path, help="run or multirun directories")
    ap.add_argument("--out", type=Path, default=None, help="output directory (default: the first DIR)")
    ap.add_argument("--no-figures", action="store_true")
    args = ap.parse_args(argv)
    for d in args.dirs:
        if not d.is_dir():
            print(f"error: dirs={str(d)!r} is invalid: must be an existing directory", file=sys.stderr)
            return 2
    try:
        results = collect(args.dirs)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = args.out or args.dirs[0]
    print(f"aggregated {len(results)} fits from {len(args.dirs)} director{'y' if len(args.dirs) == 1 else 'ies'}: "
          f"structures={sorted(results.structure.unique())} regimes={sorted(results.regime.unique())} "
          f"n={sorted(int(n) for n in results.n.unique())} seeds(base)={sorted(results.base_seed.unique().tolist())}")
    write_outputs(results, out, figures=not args.no_figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
