"""`reparam canonical [work=outputs/canonical] [figures=figures] [skip_robustness=true]` (Hydra app): rerun the
recorded studies behind figures/ and refresh it.

1. the main job, default configuration      -> WORK/main         (resumable)
2. the theory checks, reusing that log       -> WORK/checks       (no extra fits: same cells;
   inverse-bound is a fit-free computation, inverse-ratio reads the main job's fits)
3. the start / iteration-budget sensitivity  -> WORK/sensitivity  (reuses the main job's fits)
4. the robustness sweep over 20 random truths -> WORK/robustness  (a multirun, one job folder per truth; resumable;
   fits recorded by the older one-log layout, WORK/robustness/results.jsonl, are reused)
5. copy the tables into FIGURES, draw every figure from them (reparam figures) and refresh the
   generated blocks of README.md and docs/ (reparam readme-tables). WORK/wall_times.csv (copied to FIGURES) records each step's
   command, wall time, the fits it ran and the machine's CPU count and load: the wall-time table of docs/how-to/regenerate.md.
Steps 1, 3 and 4 skip fits already in their logs, so a killed run picks up where it stopped. Each step runs as
its own command (printed before it runs, as `reparam <command> ...`), in a fresh interpreter.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.core.config_store import ConfigStore

from reparam.app import as_dictconfig, hydra_main
from reparam.console import say
from reparam.results import write_table
from reparam.plots import redraw
from reparam.validation import (status_on_input_error, ConfigError, check_output_dir, check_unknown_keys)

logger = logging.getLogger(__name__)


@dataclass
class CanonicalConf:
    """Settings of `reparam canonical`.

    work: folder of the studies' own outputs and logs (main/, checks/, sensitivity/, robustness/ and this
        command's canonical.log); rerun with the same folder to resume.
    figures: folder that receives the tables, the figures drawn from them and whose generated blocks are refreshed
        (the committed figures/).
    skip_robustness: do not run the robustness sweep (its tables in WORK/robustness are still copied if there).
    """

    work: str = "outputs/canonical"
    figures: str = "figures"
    skip_robustness: bool = False


ConfigStore.instance().store(name="canonical_schema", node=CanonicalConf)


def validate_cfg(cfg: Any) -> None:
    """The validator of the preflight callback: known keys only, and both folders can be written."""
    check_unknown_keys(cfg, CanonicalConf)
    check_output_dir("work", str(cfg.work))
    check_output_dir("figures", str(cfg.figures))
    if not isinstance(cfg.skip_robustness, bool):
        raise ConfigError(f"skip_robustness={cfg.skip_robustness!r} is invalid: must be true or false")


def quote(value: Any) -> str:
    """A path as the value of a Hydra override: quoted unless plain (a comma would make it a sweep)."""
    text = str(value)
    if re.fullmatch(r"[\w./~+-]+", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def steps(cfg: Any) -> list[tuple[str, list[str]]]:
    """The commands of steps 1-4, as (command, overrides): `reparam <command> <overrides>`."""
    work = Path(str(cfg.work))
    main_log = work / "main" / "results.jsonl"
    robust = work / "robustness"
    out = [("convergence", [f"hydra.run.dir={quote(work / 'main')}", "figures=false"]),
           ("check", ["all=true", f"out={quote(work / 'checks')}", f"log={quote(main_log)}", "quiet=true"]),
           ("sensitivity", [f"out={quote(work / 'sensitivity')}", f"reuse={quote(main_log)}", "quiet=true"])]
    if not cfg.skip_robustness:
        old = robust / "results.jsonl"  # the one log of the older layout: its fits are copied, not refitted
        out.append(("robustness", ["-m", f"hydra.sweep.dir={quote(robust)}", "progress=false"]
                    + ([f"reuse={quote(old)}"] if old.is_file() else [])))
    return out


def _run(command: str, overrides: list[str]) -> None:
    from reparam.cli import COMMANDS

    say(logger, f"$ reparam {command} {' '.join(overrides)}")
    sys.stdout.flush()
    subprocess.run([sys.executable, "-m", COMMANDS[command][0], *overrides], check=True)


def _fits_recorded(folder: Path) -> int:
    """Fit records in the result logs below `folder` (one line each)."""
    total = 0
    for log in folder.rglob("results.jsonl") if folder.is_dir() else []:
        with open(log, "rb") as fh:
            total += sum(1 for line in fh if line.strip())
    return total


def _timed_step(command: str, overrides: list[str], folder: Path) -> dict:
    """Run one step and return its row of wall_times.csv: the command, its wall time, the fit records it added
    to the logs under `folder` (fitted, or copied from another log with `reuse=`; 0 when every fit was already
    there: the time is then not a fitting time), the CPU count and the 1-minute load average when it ended
    (what else ran on the machine)."""
    from reparam.provenance import git_commit

    before = _fits_recorded(folder)
    tic = time.perf_counter()
    _run(command, overrides)
    wall = time.perf_counter() - tic
    try:
        load = round(os.getloadavg()[0], 2)
    except OSError:
        load = float("nan")
    after = _fits_recorded(folder)
    return {"command": f"reparam {command} " + " ".join(overrides), "wall_seconds": round(wall, 1),
            "fits_run": after - before, "fits_recorded": after,
            "cpu_count": os.cpu_count(), "load_1min_at_end": load,
            "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "git_commit": git_commit()}


@status_on_input_error
def run(cfg: Any) -> int:
    """Every step from a config (a DictConfig or a CanonicalConf); returns the exit status."""
    cfg = as_dictconfig(cfg)
    validate_cfg(cfg)
    work, figures = Path(str(cfg.work)), Path(str(cfg.figures))
    main_dir, checks_dir, robust_dir = work / "main", work / "checks", work / "robustness"
    sens_dir = work / "sensitivity"
    folders = {"convergence": main_dir, "check": checks_dir, "sensitivity": sens_dir, "robustness": robust_dir}
    timings = []
    try:
        for command, overrides in steps(cfg):
            timings.append(_timed_step(command, overrides, folders[command]))
    except subprocess.CalledProcessError as err:
        say(logger, f"canonical: step failed with exit status {err.returncode}; rerun to resume")
        return err.returncode if err.returncode > 0 else 1
    write_table(pd.DataFrame(timings), work / "wall_times.csv")
    figures.mkdir(parents=True, exist_ok=True)
    for src, dst in [(main_dir / "results.csv", "results.csv"), (main_dir / "summary.csv", "summary.csv"),
                     (checks_dir / "report.md", "checks_report.md"),
                     (sens_dir / "sensitivity.csv", "sensitivity.csv"),
                     (robust_dir / "robustness.csv", "robustness.csv"),
                     (robust_dir / "robustness_summary.csv", "robustness_summary.csv"),
                     (robust_dir / "results.csv", "robustness_results.csv"),
                     (work / "wall_times.csv", "wall_times.csv")]:
        if src.exists():
            shutil.copyfile(src, figures / dst)
    for check in ("inverse-ratio", "inverse-bound"):  # their tables, reports and figures keep their own folders
        if (checks_dir / check).is_dir():
            shutil.copytree(checks_dir / check, figures / check, dirs_exist_ok=True)
    for p in redraw(figures):
        say(logger, str(p))
    try:
        _run("readme-tables", [f"figures={quote(figures)}"])
    except subprocess.CalledProcessError as err:
        return err.returncode if err.returncode > 0 else 1
    return 0


main = hydra_main(run, "canonical", __file__)


if __name__ == "__main__":
    main()
