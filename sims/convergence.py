"""The main job: `reparam convergence [overrides]` (Hydra app; schema reparam.study_config.StudyConf).

Runs every (structure, regime, n) cell of the study, persisting each finished cell to results.jsonl in
the Hydra run directory (rerun with `hydra.run.dir=THAT_DIR` to resume), then writes results.csv,
summary.csv and the figures there and prints the summary table. The run folder is locked while the study runs
and holds one setting: another setting into it is refused (reparam.runfolder).

    reparam convergence                                   # the default study -> outputs/convergence/<date>_<time>/
    reparam convergence hydra.run.dir=DIR                 # rerun with the same DIR to resume
    reparam convergence regime=over replicates=20 n_grid=[1000,10000]
    reparam convergence -m n=1000,10000                   # one job per n; merge with `reparam aggregate dirs=[...]`
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from reparam.app import hydra_main
from reparam.console import say
from reparam.sweep import run_plan, set_threads
from reparam.validation import check_output_file, status_on_input_error
from reparam.study import DEFAULT_N_GRID
from reparam.runfolder import open_run_folder, release
from reparam.outputs import write_outputs
from reparam.study_config import StudyConf  # noqa: F401 - the schema (study_schema) that --help documents
from reparam.study_config import folder_setting, plan_from_cfg

logger = logging.getLogger(__name__)  # Hydra sends it to the console and to the run's convergence.log


def validate_cfg(cfg: Any) -> None:
    """The validator of the Hydra preflight callback (conf/convergence.yaml): every check of plan_from_cfg."""
    plan_from_cfg(cfg)


def check_folder(cfg: Any) -> None:
    """The run-folder hook of the preflight (conf/convergence.yaml): hydra.run.dir holds no other command's or
    setting's outputs, and no other process writes into it (then this one holds it)."""
    from reparam.runfolder import acquire, check_run_folder

    folder = str(cfg.hydra.run.dir)
    check_run_folder(folder, "convergence", folder_setting(cfg))
    acquire(folder)


@status_on_input_error
def run(cfg: DictConfig) -> int:
    """The study of `cfg` (a StudyConf) into the Hydra run directory; 0 when done, 2 for a bad config."""
    tic = time.perf_counter()
    plan, threads = plan_from_cfg(cfg)
    set_threads(threads)
    out = Path(HydraConfig.get().runtime.output_dir)
    for name in ("results.jsonl", "results.csv", "summary.csv"):  # before any fit: a bad path must not cost the work
        check_output_file(f"output file {name} in hydra.run.dir", out / name)
    fits = len(plan.cells()) * plan.replicates
    say(logger, f"study: structures={plan.structures} regimes={plan.regimes} n_grid={plan.n_grid} "
        f"replicates={plan.replicates} seed={plan.seed} truth={plan.setting.truth.kind} -> {fits} fits, "
        f"{threads} torch threads, {cfg.workers} worker process(es), device {cfg.device}; output {out}")
    if list(cfg.n_grid) == list(DEFAULT_N_GRID) and cfg.replicates == 10 and cfg.n is None:
        say(logger, "default size: 6 sample sizes log-spaced 300..1e5 and 10 replicates per cell, sized to run in a "
            "few minutes on 2 CPU cores (over-specified fits at n=1e5 dominate the cost); raise `replicates=` or "
            "extend `n_grid=` for tighter intervals")
    open_run_folder(out, "convergence", folder_setting(cfg))  # locked; refused if it holds another setting
    try:
        results = run_plan(plan, out / "results.jsonl", progress=cfg.progress, workers=int(cfg.workers))
        write_outputs(results, out, figures=cfg.figures, started=tic)
    finally:
        release(out)
    say(logger, f"\nwall time: {time.perf_counter() - tic:.1f} s")
    return 0


main = hydra_main(run, "convergence", __file__)


if __name__ == "__main__":
    main()
