"""`python -m sims.sensitivity [--out DIR] [--log LOG]`: how much of each over-specified number is the optimiser.

Runs the over-specified cells of the main job three ways (reparam.checks.SENSITIVITY_VARIANTS): the default
multi-start (near-truth + 4 random starts), the near-truth start only, and the default starts with a 10x larger
iteration budget; everything else is the main job's configuration (same data streams). Writes DIR/sensitivity.csv
(one row per variant, structure, error: valid and converged fits, mean and median at the largest n, slope with
its 95% interval) and prints it. Resumable; pass the main job's results.jsonl as --reuse to copy its fits instead of refitting them.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from reparam.checks import ALL, SENSITIVITY_VARIANTS, sensitivity_plan, sensitivity_table
from reparam.provenance import write_provenance
from reparam.results import ResultLog, write_table
from reparam.sweep import PlanError, copy_planned_rows, run_plan, set_threads, validate_plan

DEFAULT_GRID = [300, 1000, 3000, 10000, 30000, 100000]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sims.sensitivity", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("outputs/sensitivity"))
    ap.add_argument("--reuse", type=Path, default=None,
                    help="another result log (e.g. the main job's results.jsonl) whose matching fits are copied, not refitted")
    ap.add_argument("--n-grid", type=int, nargs="+", default=DEFAULT_GRID)
    ap.add_argument("--replicates", type=int, default=10)
    ap.add_argument("--regimes", nargs="+", default=["over"])
    ap.add_argument("--structures", nargs="+", default=list(ALL))  # every structure with a THEORY rate
    ap.add_argument("--threads", type=int, default=2, help="torch threads, shared among the workers")
    ap.add_argument("--workers", type=int, default=2, help="processes running cells in parallel (rows do not depend on it)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    plans = {v.name: sensitivity_plan(v, args.structures, args.regimes, args.n_grid, args.replicates)
             for v in SENSITIVITY_VARIANTS}
    try:
        for plan in plans.values():
            validate_plan(plan)
        set_threads(args.threads)
    except PlanError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    tic = time.perf_counter()
    log = args.out / "results.jsonl"
    if args.reuse is not None:
        if not args.reuse.is_file():
            print(f"error: reuse={str(args.reuse)!r} is invalid: must be an existing results.jsonl", file=sys.stderr)
            return 2
        copied = copy_planned_rows(list(plans.values()), ResultLog(args.reuse), ResultLog(log))
        print(f"reused {copied} fits from {args.reuse}", flush=True)
    results = {}
    for name, plan in plans.items():
        print(f"== {name}", flush=True)
        results[name] = run_plan(plan, log, progress=not args.quiet, workers=args.workers)
    table = sensitivity_table(results)
    path = write_table(table, args.out / "sensitivity.csv")
    write_provenance(args.out)
    with pd.option_context("display.width", 220, "display.max_columns", 20, "display.max_rows", 100):
        print(table.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    print(f"\nwrote {path}; wall time {time.perf_counter() - tic:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
