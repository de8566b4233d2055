"""`reparam robustness -m [key=value ...]` (Hydra app): the study over many random ground truths.

A Hydra multirun over `truth.seed` (sims/conf/robustness.yaml: `hydra.sweeper.params`, seeds 0..19; override with
`truth.seed=range(0,5)`), so any Hydra launcher runs it (basic, joblib, submitit, the shipped `slurm`) with no
code change. Each job is one truth (reparam.truth.random_truth: random pretrained head, tie maps, latent prompts
and biases, true atoms >= 0.5 apart; its shape from truth.d, truth.m, truth.n_atoms, truth.n_experts,
truth.latent_dim, e.g. `reparam robustness -m truth.d=8 truth.m=4`) and runs through the main job's code path
(reparam.study_config `plan_from_cfg` -> reparam.sweep.run_plan): every structure with a THEORY rate, exact- and over-specified, on a smaller grid,
with results.jsonl (resumable) and results.csv in the job folder. When the sweep ends, `RobustnessCallback`
collects every job of the sweep folder and writes there results.csv (all truths), robustness.csv (per-truth
slopes), robustness_summary.csv (their distribution per structure, regime and error), robustness.png/pdf and
provenance.json, and prints the distribution table.

    reparam robustness -m                                     # 20 truths -> multirun/robustness/<date>_<time>/
    reparam robustness -m hydra.sweep.dir=DIR                 # rerun with the same DIR to resume
    reparam robustness truth.seed=7 hydra.run.dir=DIR         # one truth (no -m): its summary in DIR
    reparam robustness summarize=DIR                          # rewrite DIR's summary from its fits, fit nothing
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

import pandas as pd
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from reparam.app import hydra_main
from reparam.checks import ALL, robustness_tables
from reparam.console import say
from reparam.plots import robustness_figure, save_figure
from reparam.provenance import write_provenance
from reparam.results import ResultLog, write_table
from reparam.study import TruthConfig
from reparam.sweep import copy_planned_rows, plan_rows, read_study_log, run_plan, set_threads, tidy, write_results
from reparam.validation import (status_on_input_error, ConfigError, DataError, InputError, PreflightCallback, check_output_file, check_unknown_keys)
from reparam.runfolder import open_run_folder, release
from reparam.study_config import StructureConf, StudyConf, plan_from_cfg
from reparam.study_config import folder_setting as config_folder_setting

logger = logging.getLogger(__name__)

DEFAULT_GRID = [300, 1000, 3000, 10000, 30000]
#: What the summary writes into the sweep (or run) folder.
SUMMARY_FILES = ("results.csv", "robustness.csv", "robustness_summary.csv", "robustness.png", "robustness.pdf",
                 "provenance.json")
#: Job settings that may differ between the jobs of one summary: the truth, the replicate streams (`seed`, pooled
#: as in `reparam aggregate`), the sample size of a job, and what does not change a fit.
POOLED_FIELDS = ("truth.seed", "seed", "n", "n_grid", "threads", "workers", "progress", "figures", "allow_large",
                 "summarize", "reuse")


@dataclass
class RobustnessConf(StudyConf):
    """The robustness study: every field of reparam.study_config.StudyConf (one job = one truth), with the robustness
    defaults (truth=random, n_grid 300..30000, 4 replicates, the structures with a THEORY rate), and:

    summarize: an existing sweep (or single-run) folder: (re)write its summary (results.csv, robustness.csv,
        robustness_summary.csv, robustness.png/pdf, provenance.json) from the fits recorded by its jobs, fitting
        nothing; the run logs into that folder (robustness.log) and leaves no .hydra folder there.
    reuse: another result log (e.g. the results.jsonl of a robustness folder of the older one-log layout) whose
        fits of a job's plan (same setting, n, seed and replicate) are copied into the job's log, not refitted.
    """

    truth: TruthConfig = field(default_factory=lambda: TruthConfig(kind="random"))
    structure: StructureConf = field(default_factory=lambda: StructureConf(names=list(ALL)))
    n_grid: List[int] = field(default_factory=lambda: list(DEFAULT_GRID))
    replicates: int = 4
    summarize: Optional[str] = None
    reuse: Optional[str] = None


ConfigStore.instance().store(name="robustness_schema", node=RobustnessConf)
# hydra.run.dir / hydra.output_subdir of conf/robustness.yaml: `summarize=DIR` runs in DIR without a .hydra folder
OmegaConf.register_new_resolver("robustness_dir", lambda summarize, default: default if summarize is None
                                else summarize, replace=True)
OmegaConf.register_new_resolver("robustness_subdir", lambda summarize: ".hydra" if summarize is None else None,
                                replace=True)

STUDY_FIELDS = [f.name for f in dataclasses.fields(StudyConf)]


def settings_help() -> str:
    """The settings of `reparam robustness --help` (conf/robustness.yaml): this study's own and defaults, then
    every field it shares with the main job (StudyConf)."""
    return f"{inspect.cleandoc(RobustnessConf.__doc__)}\n\n{inspect.cleandoc(StudyConf.__doc__)}"


def study_cfg(cfg: Any) -> DictConfig:
    """The StudyConf part of a robustness config (what plan_from_cfg reads)."""
    return OmegaConf.masked_copy(cfg, [k for k in STUDY_FIELDS if k in cfg])


def typed(cfg: Any) -> DictConfig:
    """A robustness config (a dict, a dataclass, or a job's .hydra/config.yaml) merged onto its schema."""
    return OmegaConf.merge(OmegaConf.structured(RobustnessConf), cfg)


@functools.lru_cache(maxsize=8)
def _check_log(path: str, size: int, mtime: float) -> None:
    read_study_log(Path(path))  # DataError when the file is not a log of the synthetic study


def check_log(path: Path) -> None:
    """Refuse (DataError) a results.jsonl that is not a result log of the synthetic study; each file read once."""
    if Path(path).is_file():
        stat = Path(path).stat()
        _check_log(str(path), stat.st_size, stat.st_mtime)


def validate_cfg(cfg: Any) -> None:
    """The validator of the Hydra preflight callback: no unknown key, every check of plan_from_cfg (values,
    sizes, the resource estimate unless allow_large=true), and the folder / log named by summarize or reuse."""
    check_unknown_keys(cfg, RobustnessConf)
    if cfg.summarize is None and cfg.truth.kind != "random":
        raise ConfigError(f"truth.kind={cfg.truth.kind!r} is invalid: must be 'random' (the robustness study is over "
                          f"random truths; `reparam convergence truth={cfg.truth.kind}` studies the canonical truth)")
    if cfg.summarize is not None:
        folder = Path(str(cfg.summarize))
        if not folder.is_dir():
            raise ConfigError(f"summarize={str(cfg.summarize)!r} is invalid: must be an existing folder (a robustness "
                              f"sweep or run folder)")
        for name in SUMMARY_FILES:
            check_output_file(f"summarize ({name})", folder / name)
        return
    plan_from_cfg(study_cfg(cfg))
    if cfg.reuse is not None:
        if not Path(str(cfg.reuse)).is_file():
            raise ConfigError(f"reuse={str(cfg.reuse)!r} is invalid: must be an existing results.jsonl")
        check_log(Path(str(cfg.reuse)))


# ------------------------------------------------------------------------------------------ the summary

def show_distribution(dist: pd.DataFrame) -> str:
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        show = dist[dist.prediction != ""][["structure", "regime", "error", "predicted", "n_truths", "slope_median",
                                             "slope_q25", "slope_q75", "agree", "disagree", "inconclusive",
                                             "excluded_fits", "fits"]]
        return ("slope distribution over random truths (per-truth slopes from valid fits):\n"
                + show.to_string(index=False, float_format=lambda x: f"{x:+.3f}"))


def draw(out: Path, per_truth=None):
    per_truth = per_truth if per_truth is not None else pd.read_csv(out / "robustness.csv")
    return save_figure(robustness_figure(per_truth), out / "robustness")


def write_summary(results: pd.DataFrame, out: Path, figures: bool = True, stream=None) -> pd.DataFrame:
    """results.csv, robustness.csv, robustness_summary.csv, provenance.json and (figures) robustness.png/pdf in
    `out` from the fits of one or more truths; prints the distribution table. Returns the distribution."""
    out = Path(out)
    results = tidy(results)
    write_results(results, out / "results.csv")
    per_truth, dist = robustness_tables(results)
    write_table(per_truth, out / "robustness.csv")
    write_table(dist, out / "robustness_summary.csv")
    write_provenance(out)
    text = "\n" + show_distribution(dist)
    wrote = f"\nwrote {out / 'results.csv'} ({len(results)} fits, {results['truth'].nunique()} truths), " \
            f"{out / 'robustness.csv'}, {out / 'robustness_summary.csv'}"
    if figures:
        wrote += f", {draw(out, per_truth)[0]} (+ .pdf)"
    say(logger, text + "\n" + wrote, stream)
    return dist


def _job_folders(folder: Path) -> list[Path]:
    """Every job folder of a sweep folder (or the run folder itself): a results.jsonl beside .hydra/config.yaml."""
    found = [log.parent for log in folder.rglob("results.jsonl") if (log.parent / ".hydra" / "config.yaml").is_file()]

    def key(path: Path):
        rel = path.relative_to(folder).parts
        return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in rel]
    return sorted(found, key=key)


def _setting(cfg: DictConfig) -> dict:
    d = OmegaConf.to_container(cfg, resolve=True)
    for dotted in POOLED_FIELDS:
        head, _, rest = dotted.partition(".")
        if rest:
            d.get(head, {}).pop(rest, None)
        else:
            d.pop(head, None)
    return d


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [f"{prefix.rstrip('.')} ({a!r} vs {b!r})"]


def collect(folder: Path, stream=None) -> pd.DataFrame:
    """The fits of every finished job below `folder` (each job's plan, rebuilt from its .hydra/config.yaml, read
    from its results.jsonl). Unfinished jobs are left out with a warning; jobs of different settings (other than
    the truth, the replicate streams and the sample sizes) are refused: they are never pooled."""
    folder = Path(folder)
    jobs = _job_folders(folder)
    if not jobs:
        raise DataError(f"{folder} holds no robustness job (a results.jsonl beside .hydra/config.yaml); run "
                        f"`reparam robustness -m hydra.sweep.dir={folder}` first")
    frames, first, left_out = [], None, []
    for job in jobs:
        try:
            cfg = typed(OmegaConf.load(job / ".hydra" / "config.yaml"))
            plan, _ = plan_from_cfg(study_cfg(cfg))
        except (InputError, ValueError) as err:
            raise DataError(f"{job / '.hydra' / 'config.yaml'} is not the config of a robustness job: "
                            f"{str(err).splitlines()[0]}") from None
        if cfg.truth.kind != "random":  # e.g. a convergence run of the canonical truth: not a robustness job
            raise DataError(f"{job} is a run of the {cfg.truth.kind} truth, not a robustness job (random truths): "
                            f"summarize a folder of `reparam robustness`")
        setting = _setting(cfg)
        if first is None:
            first = (job, setting)
        elif setting != first[1]:
            raise DataError(f"the jobs {first[0]} and {job} ran different settings: "
                            f"{'; '.join(_differences(first[1], setting))}; a robustness summary pools one setting "
                            f"over truths: summarize each setting's sweep apart")
        log = job / "results.jsonl"
        check_log(log)
        try:
            frames.append(plan_rows(plan, ResultLog(log)))
        except RuntimeError:  # some planned fits are not in the log yet
            left_out.append(job)
    if left_out:
        say(logger, f"left out {len(left_out)} unfinished job(s) (rerun the sweep to finish them): "
            f"{', '.join(str(j) for j in left_out)}", stream)
    if not frames:
        raise DataError(f"no job below {folder} has finished; rerun the sweep to finish them")
    return tidy(pd.concat(frames, ignore_index=True))


def summarize_folder(folder: Path, figures: bool = True, stream=None, field: str = "summarize") -> pd.DataFrame:
    """(Re)write the summary of a sweep (or run) folder from the fits of its jobs, fitting nothing. The folder is
    locked meanwhile and must be a folder of `reparam robustness` (its provenance gets one more record)."""
    results = collect(folder, stream)
    open_run_folder(folder, "robustness", None, field=field)
    try:
        return write_summary(results, folder, figures=figures, stream=stream)
    finally:
        release(folder)


def folder_setting(cfg: Any) -> dict:
    """The setting of a robustness job's folder (reparam.runfolder): the study's result-affecting fields."""
    return config_folder_setting(cfg, RobustnessConf, ignore=("summarize", "reuse"))


def check_folder(cfg: Any) -> None:
    """The run-folder hook of the preflight (conf/robustness.yaml, single runs): `summarize=DIR` must be a folder
    of this command, a job's run folder one of its setting; no other process may write into either."""
    from reparam.runfolder import acquire, check_run_folder

    if cfg.summarize is not None:
        folder, setting, field = str(cfg.summarize), None, "summarize"
    else:
        folder, setting, field = str(cfg.hydra.run.dir), folder_setting(cfg), "hydra.run.dir"
    check_run_folder(folder, "robustness", setting, field=field)
    acquire(folder, field=field)


# ------------------------------------------------------------------------------------------ one job

def truth_name(plan) -> str:
    """The name of the plan's truth as its rows record it ("random-7", or "random-7-d8-m4" off the default shape:
    the truth's shape fields pass through StudyConf's truth section unchanged, reparam.study.TruthConfig)."""
    from reparam.study import build_truth

    return build_truth(plan.settings()[0]).name


@status_on_input_error
def run(cfg: Any, out: str | Path, summary: bool = True) -> int:
    """One job (one truth) in `out` from a robustness config (a DictConfig or a RobustnessConf): fit what its
    results.jsonl lacks, write results.csv, and with `summary` (a run that is not a job of a sweep) also the
    summary files. With cfg.summarize: only (re)write that folder's summary. Returns the exit status (a user's
    mistake: one line on stderr, status 2)."""
    cfg = typed(cfg) if dataclasses.is_dataclass(cfg) else cfg
    out = Path(out)
    validate_cfg(cfg)
    if cfg.summarize is not None:
        summarize_folder(Path(str(cfg.summarize)), figures=bool(cfg.figures))
        return 0
    tic = time.perf_counter()
    plan, threads = plan_from_cfg(study_cfg(cfg))
    set_threads(threads)
    names = ("results.jsonl",) + (SUMMARY_FILES if summary else ("results.csv",))
    for name in names:  # checked before any fit: a bad output path must not cost the work
        check_output_file(f"output file {name} in the job folder", out / name)
    log = out / "results.jsonl"
    check_log(log)
    fits = len(plan.cells()) * plan.replicates
    say(logger, f"robustness job: truth {truth_name(plan)}, structures={plan.structures} "
        f"regimes={plan.regimes} n_grid={plan.n_grid} replicates={plan.replicates} seed={plan.seed} -> {fits} fits, "
        f"{threads} torch threads, {cfg.workers} worker process(es); output {out}")
    open_run_folder(out, "robustness", folder_setting(cfg))  # locked; refused if it holds another setting
    try:
        if cfg.reuse is not None:
            copied = copy_planned_rows([plan], ResultLog(str(cfg.reuse)), ResultLog(log))
            say(logger, f"reused {copied} fits from {cfg.reuse}")
        results = run_plan(plan, log, progress=bool(cfg.progress), workers=int(cfg.workers))
        write_results(results, out / "results.csv")
        if summary:
            write_summary(results, out, figures=bool(cfg.figures))
        else:
            write_provenance(out)
    finally:
        release(out)
    say(logger, f"wall time {time.perf_counter() - tic:.0f} s")
    return 0


# ------------------------------------------------------------------------------------------ Hydra

class RobustnessCallback(PreflightCallback):
    """The preflight of conf/robustness.yaml, and the summary of a sweep.

    on_run_start: PreflightCallback's checks. on_multirun_start: PreflightCallback's checks on every job of the
    sweep (the truths of the config's own sweep included), and check_sweep: refuses a sweep without jobs,
    `summarize` with -m, a folder that holds foreign result logs and summary paths that cannot be written.
    on_multirun_end: collects every job of the sweep folder and writes the summary there (summarize_folder)."""

    def check_sweep(self, config: DictConfig, parsed: list, jobs: list[list[str]]) -> None:
        for override in parsed:
            if override.is_sweep_override() and override.is_discrete_sweep() \
                    and not list(override.sweep_string_iterator()):
                raise ConfigError(f"{override.input_line} is invalid: the sweep has no job (must give at least "
                                  f"one value, e.g. {override.get_key_element()}=range(0,20))")
        if any(o.split("=", 1)[0].lstrip("+~") == "summarize" for job in jobs for o in job) or \
                config.get("summarize") is not None:
            raise ConfigError("summarize is invalid with -m: summarize a folder without -m "
                              "(reparam robustness summarize=DIR)")
        sweep = Path(str(config.hydra.sweep.dir))
        for name in SUMMARY_FILES:
            check_output_file(f"hydra.sweep.dir ({name})", sweep / name)
        if sweep.is_dir():
            for log in sweep.rglob("results.jsonl"):
                check_log(log)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        try:
            summarize_folder(Path(str(config.hydra.sweep.dir)), figures=bool(config.figures), stream=sys.stdout,
                             field="hydra.sweep.dir")
        except InputError as err:
            self._fail(err)


def run_job(cfg: DictConfig) -> int:
    """One job of the Hydra app: a truth's fits into its run folder (a multirun job), or with `summarize=DIR`
    (no -m) that folder's summary."""
    from hydra.types import RunMode

    hc = HydraConfig.get()
    return run(cfg, hc.runtime.output_dir, summary=hc.mode != RunMode.MULTIRUN)


main = hydra_main(run_job, "robustness", __file__)


if __name__ == "__main__":
    main()
