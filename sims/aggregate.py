"""`reparam aggregate dirs=[DIR,...] [out=OUT] [by_setting=true] [figures=false]` (Hydra app): merge runs.

Reads every results.jsonl below the given directories (a multirun directory holds one per job; corrupt
records are skipped with a warning), drops duplicate fits, and writes OUT/results.csv, OUT/summary.csv,
the figures and aggregate.log (the printed lines, timed). OUT defaults to DIR/aggregate for the first DIR (a new
folder: a run's own results.csv is never overwritten).

Fits are only pooled within one setting (`setting_id`: everything but structure, regime, n and replicate).
Logs that hold several settings (e.g. a multirun over truth.noise, or two runs into one folder) are refused
unless by_setting=true, which summarizes each setting apart (the summary gets a setting_id column).
OUT is locked while the command writes, and never another command's folder (`out=RUN` of a convergence run is
refused: its provenance.json and tables stay); rerunning into OUT with other dirs is refused too.
`python -m reparam.sims.aggregate dirs=[DIR]` is the same command; `run(cfg)` does the work in-process.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

import pandas as pd
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from reparam.app import as_dictconfig, hydra_main
from reparam.console import say
from reparam.runfolder import open_run_folder, release
from reparam.sweep import read_study_log, tidy
from reparam.validation import (ConfigError, DataError, check_added_keys, check_list, check_output_dir,
                                check_output_file, check_unknown_keys)
from reparam.outputs import write_outputs

logger = logging.getLogger(__name__)  # Hydra sends it to the console and to OUT/aggregate.log


@dataclass
class AggregateConf:
    """Settings of `reparam aggregate`.

    dirs: run or multirun folders (at least one); every results.jsonl below them is read.
    out: the output folder of results.csv, summary.csv, the figures, provenance.json and aggregate.log; null (the
        default) is the first of dirs + /aggregate, a new folder, so a run's own results.csv is never overwritten.
    by_setting: summarize each setting (setting_id) apart, instead of refusing logs that hold several settings.
    figures: draw the figures (false: the tables only).
    """

    dirs: List[str] = field(default_factory=list)
    out: Optional[str] = None
    by_setting: bool = False
    figures: bool = True


ConfigStore.instance().store(name="aggregate_schema", node=AggregateConf)


def default_out(out: Any, dirs: Any) -> Optional[str]:
    """The output folder: `out`, else the first of `dirs` + /aggregate (None without dirs). Also the resolver
    `reparam.aggregate_out` of conf/aggregate.yaml (hydra.run.dir)."""
    if out is not None:
        return str(out)
    dirs = list(dirs or [])
    return str(Path(str(dirs[0])) / "aggregate") if dirs else None


OmegaConf.register_new_resolver("reparam.aggregate_out", default_out, replace=True)

#: Row columns that tell settings apart in the message about mixed settings.
SETTING_COLUMNS = ["truth", "noise", "activation", "n_fitted_atoms", "init", "n_starts", "init_scale", "base_seed"]


def collect(dirs: list[Path]) -> pd.DataFrame:
    frames = []
    for d in dirs:
        for log in sorted(d.rglob("results.jsonl")):
            frame = read_study_log(log)
            if len(frame):
                frames.append(frame)
    if not frames:
        raise DataError(f"no results.jsonl with rows below {[str(d) for d in dirs]}")
    return tidy(pd.concat(frames, ignore_index=True))


def describe_settings(results: pd.DataFrame) -> str:
    """'abc123 (noise=0.1), def456 (noise=0.5)': each setting_id with the row columns that differ."""
    per = results.groupby("setting_id")[[c for c in SETTING_COLUMNS if c in results.columns]].first()
    varying = [c for c in per.columns if per[c].nunique(dropna=False) > 1]
    return ", ".join(f"{sid} ({', '.join(f'{c}={per.loc[sid, c]}' for c in varying) or 'solver/init settings'})"
                     for sid in per.index)


def prepare(cfg: Any) -> tuple[Path, pd.DataFrame]:
    """Every check of `cfg` before anything is written (InputError naming the field or file), and what the run
    needs: the output folder and the merged rows."""
    cfg = as_dictconfig(cfg)
    check_unknown_keys(cfg, AggregateConf)
    check_added_keys()
    dirs = [Path(str(d)) for d in check_list("dirs", cfg.dirs, non_empty=False)]
    if not dirs:
        raise ConfigError("dirs=[] is invalid: must name the run or multirun folders to merge, e.g. dirs=[DIR1,DIR2]")
    for d in dirs:
        if not d.is_dir():
            raise ConfigError(f"dirs={str(d)!r} is invalid: must be an existing directory")
    out = Path(default_out(cfg.out, cfg.dirs))
    check_output_dir("out", out)
    for name in ("results.csv", "summary.csv"):
        check_output_file(f"out ({name})", out / name)
    results = collect(dirs)
    if results["setting_id"].nunique() > 1 and not cfg.by_setting:
        raise DataError(f"the logs hold fits of {results['setting_id'].nunique()} different settings: "
                        f"{describe_settings(results)}; they are never pooled: pass by_setting=true to summarize "
                        f"each apart, or aggregate the runs of one setting")
    return out, results


def validate_cfg(cfg: Any) -> None:
    """The validator of the Hydra preflight callback (conf/aggregate.yaml): every check of `prepare`."""
    prepare(cfg)


def folder_setting(cfg: Any) -> dict:
    """What an aggregate folder holds (reparam.runfolder): the merged folders and by_setting."""
    return {"dirs": [str(Path(str(d)).resolve()) for d in cfg.dirs], "by_setting": bool(cfg.by_setting)}


def check_folder(cfg: Any) -> None:
    """The run-folder hook of the preflight (conf/aggregate.yaml): OUT is no other command's folder (a run's own
    provenance.json and tables are never replaced) and no other process writes into it."""
    from reparam.runfolder import acquire, check_run_folder

    out = default_out(cfg.out, cfg.dirs)
    check_run_folder(out, "aggregate", folder_setting(cfg), field="out")
    acquire(out, field="out")


def run(cfg: Any) -> int:
    """Merge the logs below `cfg.dirs` (an AggregateConf or its DictConfig) into cfg.out; 0 when done. Raises
    InputError (before writing anything) for a bad setting, path or log."""
    cfg = as_dictconfig(cfg)
    out, results = prepare(cfg)
    n_dirs = len(cfg.dirs)
    say(logger, f"aggregated {len(results)} fits from {n_dirs} director{'y' if n_dirs == 1 else 'ies'}: "
        f"structures={sorted(results.structure.unique())} regimes={sorted(results.regime.unique())} "
        f"n={sorted(int(n) for n in results.n.unique())} seeds(base)={sorted(results.base_seed.unique().tolist())} "
        f"settings={sorted(results.setting_id.unique())}")
    open_run_folder(out, "aggregate", folder_setting(cfg), field="out")
    try:
        write_outputs(results, out, figures=cfg.figures)
    finally:
        release(out)
    return 0


main = hydra_main(run, "aggregate", __file__)


if __name__ == "__main__":
    main()
