"""`python -m sims.aggregate DIR [DIR ...] [--out OUT] [--by-setting] [--no-figures]`: merge runs into one table.

Reads every results.jsonl below the given directories (a multirun directory holds one per job; corrupt
records are skipped with a warning), drops duplicate fits, and writes OUT/results.csv, OUT/summary.csv and
the figures. OUT defaults to DIR/aggregate (a new folder: a run's own results.csv is never overwritten).

Fits are only pooled within one setting (`setting_id`: everything but structure, regime, n and replicate).
Logs that hold several settings (e.g. a multirun over truth.noise, or two runs into one folder) are refused
unless --by-setting, which summarizes each setting apart (the summary gets a setting_id column).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from reparam.results import ResultLog
from reparam.sweep import tidy
from reparam.validation import ConfigError, DataError, InputError, check_output_dir, check_output_file
from reparam.sims.report import write_outputs

#: Columns every row of a synthetic-study log has (an LM experiment log lacks regime/setting_id).
REQUIRED_COLUMNS = ["structure", "regime", "n", "replicate", "seed", "truth", "setting_id"]
#: Row columns that tell settings apart in the message about mixed settings.
SETTING_COLUMNS = ["truth", "noise", "activation", "n_fitted_atoms", "init", "n_starts", "init_scale", "base_seed"]


def read_study_log(path: Path) -> pd.DataFrame:
    """Rows of one synthetic-study log; DataError when the file is not one (e.g. an LM experiment log)."""
    frame = pd.DataFrame(ResultLog(path).rows())
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if len(frame) and missing:
        raise DataError(f"{path} is not a result log of the synthetic study (its rows lack {missing}); LM "
                        f"experiment logs are tabulated by their own commands (python -m experiments.planted_prefix "
                        f"draw, python -m experiments.low_data stage=report)")
    return frame


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sims.aggregate", description=__doc__.split("\n")[0])
    ap.add_argument("dirs", nargs="+", type=Path, help="run or multirun directories")
    ap.add_argument("--out", type=Path, default=None, help="output directory (default: DIR/aggregate)")
    ap.add_argument("--by-setting", action="store_true",
                    help="summarize each setting (setting_id) apart instead of refusing mixed settings")
    ap.add_argument("--no-figures", action="store_true")
    args = ap.parse_args(argv)
    try:
        for d in args.dirs:
            if not d.is_dir():
                raise ConfigError(f"dirs={str(d)!r} is invalid: must be an existing directory")
        out = args.out or args.dirs[0] / "aggregate"
        check_output_dir("out", out)
        for name in ("results.csv", "summary.csv"):
            check_output_file(f"out ({name})", out / name)
        results = collect(args.dirs)
        if results["setting_id"].nunique() > 1 and not args.by_setting:
            raise DataError(f"the logs hold fits of {results['setting_id'].nunique()} different settings: "
                            f"{describe_settings(results)}; they are never pooled: pass --by-setting to summarize "
                            f"each apart, or aggregate the runs of one setting")
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"aggregated {len(results)} fits from {len(args.dirs)} director{'y' if len(args.dirs) == 1 else 'ies'}: "
          f"structures={sorted(results.structure.unique())} regimes={sorted(results.regime.unique())} "
          f"n={sorted(int(n) for n in results.n.unique())} seeds(base)={sorted(results.base_seed.unique().tolist())} "
          f"settings={sorted(results.setting_id.unique())}")
    write_outputs(results, out, figures=not args.no_figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
