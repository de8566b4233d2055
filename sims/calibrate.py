"""`reparam calibrate [pool=1000] [replicates=[4,5,10,20]] [out=figures/calibration]` (Hydra app): how often the
theory checks' verdicts are wrong.

Runs (resumably: fits already in `log` are kept) the main job's plan with `pool` independent replicates, cuts the
pool into K = pool // R studies of R replicates for every R of `replicates`, summarises each study as a check
does with every interval method of `methods`, and writes to OUT

    calibration.csv   one row per (check, case, curve or overall, R, method): coverage of the slope interval at the
                      predicted and at the reference slope, false-alarm and miss rates, with Monte Carlo errors
                      (reparam.calibration.COLUMNS)
    calibration.md    the coverage per method and R, and the verdict error rates per case
    provenance.json

The procedure and what each number means: reparam.calibration and docs/reference/calibration.md. `run(cfg)` does
the work in-process.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore

from reparam.app import as_dictconfig, hydra_main
from reparam.calibration import (PACKAGE_REPLICATES, calibrate, calibration_markdown, chunk_plans, fit_pool,
                                 pool_plan)
from reparam.rates import INTERVAL_METHODS, MIN_REPLICATES
from reparam.validation import (ConfigError, check_added_keys, check_choice, check_int, check_list, check_output_dir,
                                check_output_file, check_unknown_keys, status_on_input_error)


@dataclass
class CalibrateConf:
    """Settings of `reparam calibrate`.

    pool: independent replicates of the main job's plan to fit (the pool); study k at R replicates is replicates
        [k R, (k + 1) R), so K = pool // R studies per R (pool=1000: K = 100 at the main job's R = 10).
    replicates: the replicate counts R to calibrate at (default: those of the package's studies).
    methods: the interval methods to compare (reparam.rates.INTERVAL_METHODS).
    n_grid: sample sizes of the pool (null: the main job's grid).
    seed: base seed of the pool's data streams (seed 0: its first 10 replicates are the main job's).
    out: the folder calibration.csv, calibration.md and provenance.json are written to.
    log: the result log of the pool's fits (resumable: fits in it are not refitted).
    chunk: replicates fitted per cell and pass (the result log records a cell when all its replicates are fitted:
        passes of `chunk` replicates bound what an interrupt loses to one pass's cell; the preflight sizes one
        pass).
    workers: processes that fit cells in parallel.
    threads: torch threads of this process (shared among the workers).
    n_boot: bootstrap resamples of the percentile-bootstrap interval.
    allow_large: run even when the up-front estimate of the pool exceeds this machine's memory or 24 h.
    quiet: no per-cell progress lines.
    """

    pool: int = 1000
    replicates: List[int] = field(default_factory=lambda: sorted(PACKAGE_REPLICATES))
    methods: List[str] = field(default_factory=lambda: list(INTERVAL_METHODS))
    n_grid: Optional[List[int]] = None
    seed: int = 0
    out: str = "figures/calibration"
    log: str = "outputs/calibration/results.jsonl"
    chunk: int = 50
    workers: int = 2
    threads: int = 2
    n_boot: int = 2000
    allow_large: bool = False
    quiet: bool = False


ConfigStore.instance().store(name="calibrate_schema", node=CalibrateConf)


def validate_cfg(cfg: Any) -> None:
    """The preflight (conf/calibrate.yaml): known keys, the pool against the replicate counts, the methods, the
    paths, and the pool's size (reparam.sweep.check_resources, unless allow_large=true); ConfigError naming the
    field, before any fit or file."""
    from reparam.sweep import check_resources, read_study_log

    cfg = as_dictconfig(cfg)
    check_unknown_keys(cfg, CalibrateConf)
    check_added_keys()
    pool = check_int("pool", cfg.pool, low=MIN_REPLICATES)
    counts = check_list("replicates", cfg.replicates, item_check=lambda f, v: check_int(f, v, low=MIN_REPLICATES),
                        unique=True)
    if max(counts) > pool:
        raise ConfigError(f"replicates={list(counts)} is invalid with pool={pool}: R = {max(counts)} needs a pool of "
                          f"at least {max(counts)} replicates (K = pool // R studies each)")
    check_list("methods", cfg.methods, item_check=lambda f, v: check_choice(f, v, list(INTERVAL_METHODS)), unique=True)
    for name in ("workers", "threads", "chunk"):
        check_int(name, cfg[name], low=1)
    check_int("n_boot", cfg.n_boot, low=10)
    check_output_dir("out", str(cfg.out))
    check_output_file("log", str(cfg.log))
    if Path(str(cfg.log)).is_file():
        read_study_log(str(cfg.log))  # a foreign file is refused, not extended
    try:  # one pass is what runs at once: its replicates are this command's chunk
        check_resources(chunk_plans(_plan(cfg), int(cfg.chunk))[0], bool(cfg.allow_large))
    except ConfigError as err:
        message = str(err)
        raise ConfigError(message.replace("replicates=", "chunk=", 1) if message.startswith("replicates=")
                          else message) from None


def _plan(cfg: Any):
    return pool_plan(int(cfg.pool), None if cfg.n_grid is None else list(cfg.n_grid), int(cfg.seed))


def _given(cfg: Any) -> list[tuple[str, str]]:
    """The settings that shape the table and differ from their defaults, as typed on the command line."""
    from omegaconf import OmegaConf

    defaults, given = CalibrateConf(), []
    for key in ("pool", "replicates", "methods", "n_grid", "seed", "n_boot"):
        value = OmegaConf.to_container(cfg[key]) if OmegaConf.is_config(cfg[key]) else cfg[key]
        if value != getattr(defaults, key):
            given.append((key, "[" + ",".join(map(str, value)) + "]" if isinstance(value, list) else str(value)))
    return given


@status_on_input_error
def run(cfg: Any) -> int:
    """Fit the pool (resumable), calibrate, write every output (module docstring); returns the exit status."""
    from reparam.provenance import write_provenance
    from reparam.results import write_table, write_text
    from reparam.sweep import set_threads

    started = time.perf_counter()
    validate_cfg(cfg)
    cfg = as_dictconfig(cfg)
    set_threads(int(cfg.threads))
    plan = _plan(cfg)
    counts = [int(r) for r in cfg.replicates]
    print(f"[calibrate] pool of {plan.replicates} replicates x {len(plan.cells())} cells; studies per R: "
          + ", ".join(f"R={r}: K={plan.replicates // r}" for r in counts), flush=True)
    Path(str(cfg.log)).parent.mkdir(parents=True, exist_ok=True)
    results = fit_pool(plan, str(cfg.log), int(cfg.chunk), int(cfg.workers), progress=not cfg.quiet, stream=sys.stdout)
    print(f"[calibrate] pool complete ({len(results)} fits); computing intervals and verdicts", flush=True)
    table = calibrate(results, counts, [str(m) for m in cfg.methods], n_boot=int(cfg.n_boot))
    out = Path(str(cfg.out))
    out.mkdir(parents=True, exist_ok=True)
    command = "reparam calibrate" + "".join(f" {key}={value}" for key, value in _given(cfg))
    paths = [write_table(table, out / "calibration.csv"),
             write_text(out / "calibration.md", calibration_markdown(table, command, plan.replicates, plan.n_grid)
                        + "\n"),
             write_provenance(out, started)]
    for p in paths:
        print(p)
    return 0


main = hydra_main(run, "calibrate", __file__)


if __name__ == "__main__":
    main()
