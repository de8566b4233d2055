"""`reparam sensitivity [key=value ...]` (Hydra app): how much of each over-specified number is the optimiser.

Runs the over-specified cells of the main job three ways (reparam.checks.SENSITIVITY_VARIANTS): the default
multi-start (near-truth + 4 random starts), the near-truth start only, and the default starts with a 10x larger
iteration budget; everything else is the main job's configuration (same data streams). Writes OUT/sensitivity.csv
(one row per variant, structure, error: valid and converged fits, mean and median at the largest n, slope with
its 95% interval) and prints it. Resumable (OUT/results.jsonl); pass the main job's results.jsonl as `reuse=` to
copy its fits instead of refitting them:

    reparam sensitivity out=outputs/sensitivity reuse=outputs/convergence/<run>/results.jsonl quiet=true
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

import pandas as pd
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from reparam.app import as_dictconfig, hydra_main
from reparam.checks import ALL, SENSITIVITY_VARIANTS, sensitivity_plan, sensitivity_table
from reparam.console import say
from reparam.provenance import write_provenance
from reparam.runfolder import open_run_folder, release
from reparam.results import ResultLog, write_table
from reparam.sweep import (StudyPlan, check_resources, copy_planned_rows, read_study_log, run_plan, set_threads,
                           validate_plan)
from reparam.validation import (status_on_input_error, ConfigError, check_int, check_output_dir,
                                check_output_file, check_unknown_keys)

logger = logging.getLogger(__name__)

DEFAULT_GRID = [300, 1000, 3000, 10000, 30000, 100000]


@dataclass
class SensitivityConf:
    """The sensitivity study.

    out: output folder: results.jsonl (every fit; rerun to resume), sensitivity.csv, provenance.json and the
        job log sensitivity.log.
    reuse: another result log (e.g. the main job's results.jsonl) whose matching fits are copied, not refitted.
    n_grid: sample sizes (sorted, unique, >= 1); replicates: replicate streams per cell (>= 1).
    regimes: 'exact' and/or 'over'; structures: the structures compared (default: every one with a THEORY rate).
    threads: torch threads, shared among the workers; workers: processes running cells in parallel (rows do not
        depend on it).
    quiet: no per-cell progress lines.
    allow_large: run even when the up-front estimate exceeds this machine's memory or 24 h.
    """

    out: str = "outputs/sensitivity"
    reuse: Optional[str] = None
    n_grid: List[int] = field(default_factory=lambda: list(DEFAULT_GRID))
    replicates: int = 10
    regimes: List[str] = field(default_factory=lambda: ["over"])
    structures: List[str] = field(default_factory=lambda: list(ALL))
    threads: int = 2
    workers: int = 2
    quiet: bool = False
    allow_large: bool = False


ConfigStore.instance().store(name="sensitivity_schema", node=SensitivityConf)

OUTPUT_FILES = ("results.jsonl", "sensitivity.csv", "provenance.json")


def plans_of(cfg: Any) -> dict[str, StudyPlan]:
    return {v.name: sensitivity_plan(v, list(cfg.structures), list(cfg.regimes), list(cfg.n_grid), cfg.replicates)
            for v in SENSITIVITY_VARIANTS}


def validate_cfg(cfg: Any) -> dict[str, StudyPlan]:
    """Every check before any work (raises InputError naming the field): no unknown key, the plans of the three
    variants (values and the resource estimate unless allow_large=true), threads and workers, the output folder
    and its files, and the logs in `out` and `reuse` (results of the synthetic study). Returns the plans."""
    check_unknown_keys(cfg, SensitivityConf)
    for name in ("n_grid", "regimes", "structures"):
        if not OmegaConf.is_list(cfg[name]) and not isinstance(cfg[name], (list, tuple)):
            raise ConfigError(f"{name}={cfg[name]!r} is invalid: must be a list")
    plans = plans_of(cfg)
    for plan in plans.values():
        validate_plan(plan, bool(cfg.allow_large))  # sizes the truth's shape before building it
        check_resources(plan, bool(cfg.allow_large))
    check_int("threads", cfg.threads, low=1)
    check_int("workers", cfg.workers, low=1)
    out = check_output_dir("out", str(cfg.out))
    for name in OUTPUT_FILES:
        check_output_file(f"out ({name})", out / name)
    if (out / "results.jsonl").is_file():
        read_study_log(out / "results.jsonl")
    if cfg.reuse is not None:
        if not Path(str(cfg.reuse)).is_file():
            raise ConfigError(f"reuse={str(cfg.reuse)!r} is invalid: must be an existing results.jsonl")
        read_study_log(Path(str(cfg.reuse)))
    return plans


def folder_setting(cfg: Any) -> dict:
    """The setting an output folder of the study records (reparam.runfolder): what changes its fits."""
    keys = ["structures", "regimes", "n_grid", "replicates"]
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in keys if k in cfg]), resolve=True)


def check_folder(cfg: Any) -> None:
    """The run-folder hook of the preflight (conf/sensitivity.yaml)."""
    from reparam.runfolder import acquire, check_run_folder

    check_run_folder(str(cfg.out), "sensitivity", folder_setting(cfg), field="out")
    acquire(str(cfg.out), field="out")


@status_on_input_error
def run(cfg: Any) -> int:
    """The study from a config (a DictConfig or a SensitivityConf); returns the exit status (a user's mistake:
    one line on stderr, status 2)."""
    cfg = as_dictconfig(cfg)
    plans = validate_cfg(cfg)
    set_threads(int(cfg.threads))
    tic = time.perf_counter()
    out = Path(str(cfg.out))
    log = out / "results.jsonl"
    open_run_folder(out, "sensitivity", folder_setting(cfg), field="out")  # locked; one setting per folder
    try:
        if cfg.reuse is not None:
            copied = copy_planned_rows(list(plans.values()), ResultLog(str(cfg.reuse)), ResultLog(log))
            say(logger, f"reused {copied} fits from {cfg.reuse}")
        results = {}
        for name, plan in plans.items():
            say(logger, f"== {name}")
            results[name] = run_plan(plan, log, progress=not cfg.quiet, workers=int(cfg.workers))
        table = sensitivity_table(results)
        path = write_table(table, out / "sensitivity.csv")
        write_provenance(out)
    finally:
        release(out)
    with pd.option_context("display.width", 220, "display.max_columns", 20, "display.max_rows", 100):
        say(logger, table.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    say(logger, f"\nwrote {path}; wall time {time.perf_counter() - tic:.0f} s")
    return 0


main = hydra_main(run, "sensitivity", __file__)


if __name__ == "__main__":
    main()
