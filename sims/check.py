"""Citable theory checks, one per row of THEORY section 5 (Hydra app: `reparam check key=value ...`).

    reparam check list=true                          the checks, their configuration and prediction
    reparam check names=[shared-exact]               run one (resumable) and print predicted vs measured slope
    reparam check all=true                           run every check; writes OUT/report.md
    reparam check names=[inverse-ratio] results=figures/results.csv    summarise recorded fits, no fitting
    reparam check names=[inverse-bound] out=figures  psi(delta) of THEORY section 7 (no data, no fits)

Every check runs a documented configuration (reparam.checks.CHECKS) through the same code path as the
main job. Checks share one result log (OUT/results.jsonl), so fits common to several checks, or to a
main-job log passed with log=, are computed once. The printed lines are also kept, timed, in OUT/check.log.
`python -m reparam.sims.check ...` is the same command; `run(cfg)` does the work in-process.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

import pandas as pd
from hydra.core.config_store import ConfigStore

from reparam.app import as_dictconfig, hydra_main
from reparam.checks import CHECKS, Check, check_lines, check_report, summarize
from reparam.console import say
from reparam.rates import interval_label
from reparam.identifiability import (InverseBoundConfig, add_inverse_ratio, inverse_bound_lines, inverse_bound_overall,
                                     inverse_bound_report, inverse_bound_study)
from reparam.plots import inverse_bound_figure, inverse_ratio_figure, save_figure
from reparam.sweep import check_resources, read_study_log, run_plan, set_threads, write_results
from reparam.provenance import write_provenance
from reparam.validation import (ConfigError, DataError, check_added_keys, check_int, check_list, check_output_dir,
                                check_output_file, check_unknown_keys, read_csv_table)
from reparam.results import write_table, write_text
from reparam.runfolder import open_run_folder, release

logger = logging.getLogger(__name__)  # Hydra sends it to the console and to OUT/check.log


@dataclass
class CheckConf:
    """Settings of `reparam check`.

    names: the checks to run, e.g. [shared-exact,regression] (list=true shows them); not with all=true.
    all: run every check and write OUT/report.md, the citable record of all verdicts.
    list: print the checks, their configuration and prediction, and exit (nothing is run or written).
    out: the output folder: OUT/<check>/ (results.csv, summary.csv, report.md, figures), OUT/report.md (all=true or
        several names), OUT/results.jsonl (the shared result log, unless log=), provenance.json and check.log.
    log: the result log to reuse and extend instead of OUT/results.jsonl (e.g. a main job's results.jsonl: its
        fits are not refitted); its folder must exist, and a log of something else (an LM experiment) is refused.
    replicates: replicates per cell instead of each check's documented number (null: the documented number).
    threads: torch threads of this process.
    quiet: no per-cell progress lines.
    results: summarise this results.csv (e.g. figures/results.csv) instead of fitting the study checks (refused
        with names=[inverse-bound], which reads no table; with all=true, inverse-bound is computed as always).
    allow_large: run even when the up-front estimate exceeds this machine's memory or 24 h.
    """

    names: List[str] = field(default_factory=lambda: [])
    all: bool = False
    list: bool = False
    out: str = "outputs/checks"
    log: Optional[str] = None
    replicates: Optional[int] = None
    threads: int = 2
    quiet: bool = False
    results: Optional[str] = None
    allow_large: bool = False


ConfigStore.instance().store(name="check_schema", node=CheckConf)


@dataclass
class Prepared:
    """What a validated config runs: the checks (documented, or with the replicates override), folder and log."""

    names: List[str]
    checks: dict[str, Check]
    out: Path
    log: Path


def prepare(cfg: Any) -> Optional[Prepared]:
    """Every check of `cfg` before any fit or file (InputError naming the field, as typed on the command line):
    known checks, replicates and threads, the paths, a foreign log, and the size of each study check (unless
    allow_large=true). None for list=true."""
    cfg = as_dictconfig(cfg)
    check_unknown_keys(cfg, CheckConf)
    check_added_keys()
    given = [str(n) for n in check_list("names", cfg.names, non_empty=False)]
    unknown = [n for n in given if n not in CHECKS]  # checked whatever else is asked (all=true, list=true)
    if unknown:
        raise ConfigError(f"names={given} is invalid: {unknown[0]!r} is not a check; must be among {list(CHECKS)}")
    if cfg.list:
        return None
    if cfg.all and given:
        raise ConfigError(f"names={given} is invalid with all=true: all=true runs every check; pass names= or "
                          f"all=true, not both")
    names = list(CHECKS) if cfg.all else given
    if not names:
        raise ConfigError("names=[] is invalid: name the checks to run, e.g. names=[shared-exact] (list=true shows "
                          "them), or pass all=true")
    if cfg.results is not None:
        fitless = [n for n in names if CHECKS[n].kind != "study"]
        if fitless and not cfg.all:  # all=true: the fit-free checks run as always, the study checks read the table
            raise ConfigError(f"results={str(cfg.results)!r} is invalid with names={names}: {fitless[0]} fits nothing "
                              f"and reads no table (results= summarises recorded fits of study checks only); drop "
                              f"results= or name study checks only")
    if cfg.replicates is not None:
        check_int("replicates", cfg.replicates, low=1)
    check_int("threads", cfg.threads, low=1)
    if cfg.log is not None and not Path(str(cfg.log)).parent.is_dir():
        raise ConfigError(f"log={str(cfg.log)!r} is invalid: its directory must exist")
    if cfg.results is not None and not Path(str(cfg.results)).is_file():
        raise ConfigError(f"results={str(cfg.results)!r} is invalid: must be a results.csv file")
    if cfg.results is not None:  # read in full now: a damaged or foreign table is refused before any folder
        numbers = sorted({"n", "seed"} | {c for n in names if CHECKS[n].kind == "study"
                                          for c in _table_errors(CHECKS[n])})
        table = read_csv_table(str(cfg.results), ["structure", "regime"] + numbers, "the checks' summaries",
                               numeric=numbers)
        if "valid" not in table.columns and "rel_gap" not in table.columns:  # validity: recorded, or the gap rule
            raise DataError(f"{cfg.results} has neither a valid nor a rel_gap column: the checks' summaries cannot "
                            f"tell valid fits (is it the right table?)")
    out = Path(str(cfg.out))
    log = Path(str(cfg.log)) if cfg.log is not None else out / "results.jsonl"
    check_output_dir("out", out)
    check_output_file("log", log)
    if log.is_file():
        read_study_log(log)  # a foreign file (e.g. an LM experiment log) is refused, not extended
    checks = {}
    for name in names:
        check = CHECKS[name]
        if cfg.replicates is not None:  # a copy: the documented configuration stays as it is
            check = dataclasses.replace(check, replicates=int(cfg.replicates))
        check_output_dir("out", out / name)
        if check.kind == "study" and cfg.results is None:
            check_resources(check.plan(), bool(cfg.allow_large))
        checks[name] = check
    return Prepared(names=names, checks=checks, out=out, log=log)


def _table_errors(check: Check) -> list[str]:
    """The columns of a results table that `check`'s errors are read from (inverse_ratio is derived from two)."""
    return [c for e in check.errors for c in (["voronoi_prefix", "l2_error"] if e == "inverse_ratio" else [e])]


def validate_cfg(cfg: Any) -> None:
    """The validator of the Hydra preflight callback (conf/check.yaml): every check of `prepare`."""
    prepare(cfg)


def check_folder(cfg: Any) -> None:
    """The run-folder hook of the preflight (conf/check.yaml): OUT is no other command's folder and no other
    process writes into it (list=true writes nothing)."""
    from reparam.runfolder import acquire, check_run_folder

    if not cfg.list:
        check_run_folder(str(cfg.out), "check", None, field="out")
        acquire(str(cfg.out), field="out")


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
    write_text(out_dir / "report.md", md + "\n")
    for line in inverse_bound_lines(summary):
        say(logger, "  " + line)
    return md, inverse_bound_overall(summary)


def list_checks() -> None:
    for c in CHECKS.values():
        detail = (f"n_grid={c.n_grid} replicates={c.replicates} truth={c.truth}" if c.kind == "study" else
                  f"no fits; deltas={[round(d, 4) for d in InverseBoundConfig().deltas]} truth=canonical (r = 2, 3)")
        print(f"{c.name:<18} {c.theory_row}\n{'':<18} structures={c.structures} regimes={c.regimes} "
              f"errors={c.errors} {detail}")


def run(cfg: Any) -> int:
    """Run the checks of `cfg` (a CheckConf or its DictConfig): per-check folders and reports, the printed
    verdicts, and OUT/report.md for several; 0 when done. Raises InputError before any fit for a bad config."""
    cfg = as_dictconfig(cfg)
    prepared = prepare(cfg)
    if prepared is None:  # list=true
        list_checks()
        return 0
    set_threads(int(cfg.threads))
    names, out, log = prepared.names, prepared.out, prepared.log
    results_csv = Path(str(cfg.results)) if cfg.results is not None else None
    open_run_folder(out, "check", None, field="out")  # locked; never another command's folder
    try:
        return _run_checks(cfg, prepared, names, out, log, results_csv)
    finally:
        release(out)


def _run_checks(cfg: Any, prepared: Prepared, names: list[str], out: Path, log: Path, results_csv: Path | None) -> int:
    sections, verdicts = [], {}
    for name in names:
        check = prepared.checks[name]
        tic = time.perf_counter()
        say(logger, f"== check {name}: {check.theory_row}")
        if check.kind == "inverse_bound":
            md, overall = _inverse_bound(out / name, f"reparam check names=[{name}] out={out}")
            sections.append(md)
            verdicts[name] = overall
            say(logger, f"  => {name}: {overall.upper()} ({time.perf_counter() - tic:.0f} s)\n")
            continue
        if results_csv is not None:  # an existing table: the check's structures and regimes, no fitting
            results = pd.read_csv(results_csv)
            results = results[results.structure.isin(check.structures) & results.regime.isin(check.regimes)]
        else:
            results = run_plan(check.plan(), log, progress=not cfg.quiet)
        if "inverse_ratio" in check.errors:
            results = add_inverse_ratio(results)
        summary = summarize(results, errors=check.errors)
        write_results(results, out / name / "results.csv")
        write_table(summary, out / name / "summary.csv")
        if "inverse_ratio" in check.errors:
            save_figure(inverse_ratio_figure(results, summary), out / name / "inverse_ratio")
        command = f"reparam check names=[{name}]" + (f" replicates={cfg.replicates}" if cfg.replicates else "") \
            + (f" results={results_csv}" if results_csv is not None else "")
        md = check_report(check, summary, command, time.perf_counter() - tic)
        if results_csv is not None:  # the fits were not made from the check's plan: describe what was read
            recorded = (f"- Configuration: fits read from `{results_csv}` (not refitted), as recorded in its rows: "
                        + ", ".join(f"{col}={sorted(set(results[col].tolist()))}" for col in
                                    ("truth", "init", "n_starts", "n") if col in results.columns)
                        + "; every valid fit enters: rel. optimality gap <= gap_tol, converged or not.")
            md = "\n".join(recorded if line.startswith("- Configuration:") else line for line in md.split("\n"))
        write_text(out / name / "report.md", md + "\n")
        lines, overall = check_lines(check, summary)
        for o in lines:
            say(logger, f"  {o['structure']:<14} {o['regime']:<5} {o['error']:<18} {o['line']}"
                + (f"  (invalid fits excluded: {o['n_excluded']}/{o['n_fits']})" if "n_fits" in o else ""))
        say(logger, f"  => {name}: {overall.upper()}\n")
        sections.append(md)
        verdicts[name] = overall
    if len(names) > 1 or cfg.all:
        generated_by = "reparam check all=true" if cfg.all else f"reparam check names=[{','.join(names)}]"
        generated_by += f" results={results_csv}" if results_csv is not None else ""
        head = ["# Theory checks (THEORY section 5)", "",
                f"Generated by `{generated_by}`; slopes are least-squares slopes of log(mean error of "
                f"valid fits) on log(n), with {interval_label()}s over replicates; each check's verdict comes "
                "with its measured false-alarm and miss rates (`reparam calibrate`, "
                "docs/reference/calibration.md).", "",
                "| check | verdict |", "|---|---|"] + [f"| `{k}` | **{v}** |" for k, v in verdicts.items()] + [""]
        write_text(out / "report.md", "\n".join(head + sections) + "\n")
        say(logger, f"report: {out / 'report.md'}")
    else:
        say(logger, f"report: {out / names[0] / 'report.md'}")
    write_provenance(out)  # at the end: the record says 'running' until every check has written its outputs
    return 0


main = hydra_main(run, "check", __file__)


if __name__ == "__main__":
    main()
