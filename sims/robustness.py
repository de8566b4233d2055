"""`python -m sims.robustness [--truths 20] [--out DIR]`: the study over many random ground truths.

For truth seeds 0 .. truths-1 (reparam.truth.random_truth: random pretrained head, tie maps, latent
prompts and biases, true atoms >= 0.5 apart), fits every structure and regime on a smaller grid, then
writes per-truth slopes (robustness.csv), their distribution per structure and regime
(robustness_summary.csv) and a figure (robustness.png/pdf). Resumable: one result log in DIR.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

from reparam.checks import ALL, robustness_tables
from reparam.plots import robustness_figure, save_figure
from reparam.provenance import write_provenance
from reparam.results import write_table
from reparam.study import STUDY_INIT, Setting, TruthConfig
from reparam.sweep import StudyPlan, check_resources, run_plan, set_threads, tidy, validate_plan, write_results
from reparam.validation import InputError, check_output_dir, check_output_file
from reparam.sims.aggregate import read_study_log

DEFAULT_GRID = [300, 1000, 3000, 10000, 30000]


def draw(out: Path, per_truth=None):
    import pandas as pd
    per_truth = per_truth if per_truth is not None else pd.read_csv(out / "robustness.csv")
    return save_figure(robustness_figure(per_truth), out / "robustness")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sims.robustness", description=__doc__.split("\n")[0])
    ap.add_argument("--truths", type=int, default=20, help="number of random truths (seeds 0 .. truths-1)")
    ap.add_argument("--first-truth", type=int, default=0)
    ap.add_argument("--n-grid", type=int, nargs="+", default=DEFAULT_GRID)
    ap.add_argument("--replicates", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--structures", nargs="+", default=list(ALL))  # every structure with a THEORY rate
    ap.add_argument("--threads", type=int, default=2, help="torch threads, shared among the workers")
    ap.add_argument("--workers", type=int, default=2, help="processes running cells in parallel (rows do not depend on it)")
    ap.add_argument("--out", type=Path, default=Path("outputs/robustness"))
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--allow-large", action="store_true",
                    help="run even when the up-front estimate exceeds this machine's memory or 24 h")
    args = ap.parse_args(argv)
    if args.truths < 1:
        print(f"error: truths={args.truths!r} is invalid: must be an integer >= 1", file=sys.stderr)
        return 2
    plans = [StudyPlan(structures=args.structures, regimes=["exact", "over"], n_grid=args.n_grid,
                       replicates=args.replicates, seed=args.seed,
                       setting=Setting(truth=TruthConfig(kind="random", seed=t), init=copy.deepcopy(STUDY_INIT)))
             for t in range(args.first_truth, args.first_truth + args.truths)]
    try:  # every value, path and size is checked before the first fit
        for p in plans:
            validate_plan(p)
            check_resources(p, args.allow_large, flag="--allow-large", n_field="--n-grid")
        set_threads(args.threads)
        check_output_dir("out", args.out)
        for name in ("results.jsonl", "results.csv", "robustness.csv", "robustness_summary.csv", "robustness.png",
                     "robustness.pdf"):
            check_output_file(f"out ({name})", args.out / name)
        if (args.out / "results.jsonl").is_file():
            read_study_log(args.out / "results.jsonl")
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    tic = time.perf_counter()
    log = args.out / "results.jsonl"
    frames = []
    for i, plan in enumerate(plans):
        print(f"== truth random-{plan.setting.truth.seed} ({i + 1}/{len(plans)}), elapsed {time.perf_counter() - tic:.0f}s",
              flush=True)
        frames.append(run_plan(plan, log, progress=not args.quiet, workers=args.workers))
    import pandas as pd
    results = tidy(pd.concat(frames, ignore_index=True))
    write_results(results, args.out / "results.csv")
    per_truth, dist = robustness_tables(results)
    write_table(per_truth, args.out / "robustness.csv")
    write_table(dist, args.out / "robustness_summary.csv")
    write_provenance(args.out)
    paths = draw(args.out, per_truth)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        show = dist[dist.prediction != ""][["structure", "regime", "error", "predicted", "n_truths", "slope_median",
                                             "slope_q25", "slope_q75", "agree", "disagree", "inconclusive",
                                             "excluded_fits", "fits"]]
        print("\nslope distribution over random truths (per-truth slopes from valid fits):")
        print(show.to_string(index=False, float_format=lambda x: f"{x:+.3f}"))
    print(f"\nwrote {args.out / 'robustness.csv'}, {args.out / 'robustness_summary.csv'}, {paths[0]} (+ .pdf); "
          f"wall time {time.perf_counter() - tic:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
