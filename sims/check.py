"""Citable theory checks, one per row of THEORY section 5.

    python -m sims.check --list                 the checks, their configuration and prediction
    python -m sims.check shared-exact           run one (resumable) and print predicted vs measured slope
    python -m sims.check --all                  run every check; writes OUT/report.md
    python -m sims.check inverse-ratio --results figures/results.csv    summarise recorded fits, no fitting
    python -m sims.check inverse-bound --out figures    psi(delta) of THEORY section 7 (no data, no fits)

Every check runs a documented configuration (reparam.checks.CHECKS) through the same code path as the
main job. Checks share one result log (OUT/results.jsonl), so fits common to several checks, or to a
main-job log passed with --log, are computed once.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from reparam.checks import CHECKS, check_lines, check_report, summarize
from reparam.identifiability import (InverseBoundConfig, add_inverse_ratio, inverse_bound_lines, inverse_bound_overall,
                                     inverse_bound_report, inverse_bound_study)
from reparam.plots import inverse_bound_figure, inverse_ratio_figure, save_figure
from reparam.sweep import check_resources, run_plan, set_threads, write_results
from reparam.provenance import write_provenance
from reparam.validation import InputError, check_output_dir, check_output_file
from reparam.sims.aggregate import read_study_log
from reparam.results import write_table


def _inverse_bound(out_dir: Path, command: str) -> tuple[str, str]:
    """The deterministic check: psi(delta) curves and verdicts, OUT_DIR/inverse_bound.csv (curves),
    inverse_bound_summary.csv (one row per case), inverse_bound.{png,pdf} (drawn from the curve table) and report.md."""
    config = InverseBoundConfig()
    tic = time.perf_counter()
    curve, summary = inverse_bound_study(config)
    write_table(curve, out_dir / "inverse_bound.csv")
    write_table(summary, out_dir / "inverse_bound_summary.csv")
    save_figure(inverse_bound_figure(curve, config.floor), out_dir / "inverse_bound")
    md = inverse_bound_report(summary, config, command, time.perf_counter() - tic)
    (out_dir / "report.md").write_text(md + "\n")
    for line in inverse_bound_lines(summary):
        print("  " + line)
    return md, inverse_bound_overall(summary)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sims.check", description="THEORY section 5 checks")
    ap.add_argument("names", nargs="*", help=f"checks to run: {', '.join(CHECKS)}")
    ap.add_argument("--list", action="store_true", help="list the checks and exit")
    ap.add_argument("--all", action="store_true", help="run every check")
    ap.add_argument("--out", type=Path, default=Path("outputs/checks"), help="output directory")
    ap.add_argument("--log", type=Path, default=None, help="result log to reuse/extend (default OUT/results.jsonl)")
    ap.add_argument("--replicates", type=int, default=None, help="override the documented replicates")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quiet", action="store_true", help="no per-cell progress")
    ap.add_argument("--results", type=Path, default=None,
                    help="summarise this results.csv (e.g. figures/results.csv) instead of fitting; study checks only")
    ap.add_argument("--allow-large", action="store_true",
                    help="run even when the up-front estimate exceeds this machine's memory or 24 h")
    args = ap.parse_args(argv)
    if args.list:
        for c in CHECKS.values():
            detail = (f"n_grid={c.n_grid} replicates={c.replicates} truth={c.truth}" if c.kind == "study" else
                      f"no fits; deltas={[round(d, 4) for d in InverseBoundConfig().deltas]} truth=canonical (r = 2, 3)")
            print(f"{c.name:<18} {c.theory_row}\n{'':<18} structures={c.structures} regimes={c.regimes} "
                  f"errors={c.errors} {detail}")
        return 0
    names = list(CHECKS) if args.all else args.names
    if not names:
        ap.print_usage(sys.stderr)
        print("error: name a check (see --list) or pass --all", file=sys.stderr)
        return 2
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        print(f"error: check={unknown[0]!r} is invalid: must be one of {list(CHECKS)}", file=sys.stderr)
        return 2
    if args.replicates is not None and args.replicates < 1:
        print(f"error: replicates={args.replicates!r} is invalid: must be an integer >= 1", file=sys.stderr)
        return 2
    if args.log is not None and not args.log.parent.is_dir():
        print(f"error: log={str(args.log)!r} is invalid: its directory must exist", file=sys.stderr)
        return 2
    if args.results is not None and not args.results.is_file():
        print(f"error: results={str(args.results)!r} is invalid: must be a results.csv file", file=sys.stderr)
        return 2
    log = args.log or args.out / "results.jsonl"
    try:  # every path and size is checked before the first fit
        set_threads(args.threads)
        check_output_dir("out", args.out)
        check_output_file("log", log)
        if log.is_file():
            read_study_log(log)  # a foreign file (e.g. an LM experiment log) is refused, not extended
        for name in names:
            check = CHECKS[name]
            if args.replicates is not None:
                check.replicates = args.replicates
            check_output_dir("out", args.out / name)
            if check.kind == "study" and args.results is None:
                check_resources(check.plan(), args.allow_large, flag="--allow-large")
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    sections, verdicts = [], {}
    write_provenance(args.out)  # every check writes its outputs under OUT
    for name in names:
        check = CHECKS[name]
        tic = time.perf_counter()
        print(f"== check {name}: {check.theory_row}", flush=True)
        if check.kind == "inverse_bound":
            md, overall = _inverse_bound(args.out / name, f"python -m sims.check {name} --out {args.out}")
            sections.append(md)
            verdicts[name] = overall
            print(f"  => {name}: {overall.upper()} ({time.perf_counter() - tic:.0f} s)\n", flush=True)
            continue
        if args.results is not None:  # an existing table: the check's structures and regimes, no fitting
            results = pd.read_csv(args.results)
            results = results[results.structure.isin(check.structures) & results.regime.isin(check.regimes)]
        else:
            results = run_plan(check.plan(), log, progress=not args.quiet)
        if "inverse_ratio" in check.errors:
            results = add_inverse_ratio(results)
        summary = summarize(results, errors=check.errors)
        write_results(results, args.out / name / "results.csv")
        write_table(summary, args.out / name / "summary.csv")
        if "inverse_ratio" in check.errors:
            save_figure(inverse_ratio_figure(results, summary), args.out / name / "inverse_ratio")
        command = f"python -m sims.check {name}" + (f" --replicates {args.replicates}" if args.replicates else "") \
            + (f" --results {args.results}" if args.results is not None else "")
        md = check_report(check, summary, command, time.perf_counter() - tic)
        if args.results is not None:  # the fits were not made from the check's plan: describe what was read
            recorded = (f"- Configuration: fits read from `{args.results}` (not refitted), as recorded in its rows: "
                        + ", ".join(f"{col}={sorted(set(results[col].tolist()))}" for col in
                                    ("truth", "init", "n_starts", "n") if col in results.columns)
                        + "; every valid fit enters: rel. optimality gap <= gap_tol, converged or not.")
            md = "\n".join(recorded if line.startswith("- Configuration:") else line for line in md.split("\n"))
        (args.out / name / "report.md").write_text(md + "\n")
        lines, overall = check_lines(check, summary)
        for o in lines:
            print(f"  {o['structure']:<14} {o['regime']:<5} {o['error']:<18} {o['line']}"
                  + (f"  (invalid fits excluded: {o['n_excluded']}/{o['n_fits']})" if "n_fits" in o else ""))
        print(f"  => {name}: {overall.upper()}\n", flush=True)
        sections.append(md)
        verdicts[name] = overall
    if len(names) > 1 or args.all:
        head = ["# Theory checks (THEORY section 5)", "",
                "Generated by `python -m sims.check --all`; slopes are least-squares slopes of log(mean error of "
                "valid fits) on log(n), with 95% percentile-bootstrap intervals over replicates.", "",
                "| check | verdict |", "|---|---|"] + [f"| `{k}` | **{v}** |" for k, v in verdicts.items()] + [""]
        (args.out / "report.md").write_text("\n".join(head + sections) + "\n")
        print(f"report: {args.out / 'report.md'}")
    else:
        print(f"report: {args.out / names[0] / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
