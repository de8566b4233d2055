"""`reparam figures [dir=figures]` (Hydra app): redraw the committed figures from the committed tables only.

Reads DIR/results.csv + DIR/summary.csv (main job) and DIR/robustness.csv (robustness sweep), and writes
DIR/convergence_*.{png,pdf}, DIR/sample_complexity.{png,pdf}, DIR/robustness.{png,pdf} and, from
DIR/inverse-bound/inverse_bound.csv, DIR/inverse-bound/inverse_bound.{png,pdf}; prints the path of each file.
No fitting happens here; `reparam canonical` reruns the recorded studies that produced the tables.
`python -m reparam.sims.figures dir=DIR` is the same command; `run(cfg)` does the work in-process.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.core.config_store import ConfigStore

from reparam.app import as_dictconfig, hydra_main
from reparam.bench import scaling_figure
from reparam.runfolder import acquire, release
from reparam.plots import inverse_bound_figure, inverse_ratio_figure, robustness_figure, save_figure, study_figures
from reparam.validation import (ConfigError, DataError, check_added_keys, check_unknown_keys)


@dataclass
class FiguresConf:
    """Settings of `reparam figures`.

    dir: the folder whose tables are drawn and into which the figures are written: results.csv and summary.csv
        (a main job's tables) are required; robustness.csv and inverse-bound/inverse_bound.csv are drawn when
        present. Default: the committed figures/ folder.
    """

    dir: str = "figures"


ConfigStore.instance().store(name="figures_schema", node=FiguresConf)



#: Columns the figures read (a table without them is refused with a message, not a KeyError traceback).
RESULT_COLUMNS = ["structure", "regime", "n", "replicate", "truth", "voronoi_prefix"]
SUMMARY_COLUMNS = ["structure", "regime", "error", "slope", "slope_lo", "slope_hi", "prediction", "predicted"]
ROBUSTNESS_COLUMNS = ["structure", "regime", "error", "truth", "slope"]


def read_table(path: Path, columns: list[str], **kwargs) -> pd.DataFrame:
    """A CSV that must exist, parse and hold `columns`; DataError naming the file otherwise."""
    if not path.is_file():
        raise DataError(f"{path} is missing (run `reparam canonical`, or point dir= at a run folder)")
    try:
        table = pd.read_csv(path, **kwargs)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as err:
        raise DataError(f"{path} is not a readable CSV table ({str(err).splitlines()[0]})") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(f"{path} lacks the columns {missing} that the figures need (is it a study table?)")
    return table


def read_tables(directory: Path) -> dict[str, pd.DataFrame]:
    """Every table of `directory` that a figure is drawn from (DataError naming a file that cannot be drawn)."""
    tables = {"results": read_table(directory / "results.csv", RESULT_COLUMNS),
              "summary": read_table(directory / "summary.csv", SUMMARY_COLUMNS, keep_default_na=False,
                                    na_values=[""])}
    tables["summary"]["prediction"] = tables["summary"]["prediction"].fillna("")
    if (directory / "inverse-bound" / "inverse_bound.csv").exists():  # written by `reparam check names=[inverse-bound]`
        tables["inverse_bound"] = pd.read_csv(directory / "inverse-bound" / "inverse_bound.csv")
    if (directory / "robustness.csv").exists():
        tables["robustness"] = read_table(directory / "robustness.csv", ROBUSTNESS_COLUMNS)
    ratio = directory / "inverse-ratio"  # written by `reparam check names=[inverse-ratio]`
    if (ratio / "results.csv").exists() and (ratio / "summary.csv").exists():
        tables["inverse_ratio"] = read_table(ratio / "results.csv", RESULT_COLUMNS + ["inverse_ratio"])
        tables["inverse_ratio_summary"] = read_table(ratio / "summary.csv", SUMMARY_COLUMNS, keep_default_na=False,
                                                     na_values=[""])
        tables["inverse_ratio_summary"]["prediction"] = tables["inverse_ratio_summary"]["prediction"].fillna("")
    if (directory / "scaling.csv").exists():  # written by `reparam bench`
        tables["scaling"] = read_table(directory / "scaling.csv", ["axis", "value", "seconds"])
    return tables


def redraw(directory: Path) -> list[Path]:
    """Draw every figure of `directory` from its tables; the paths written."""
    directory = Path(directory)
    tables = read_tables(directory)
    paths = study_figures(tables["results"], tables["summary"], directory)
    if "inverse_bound" in tables:
        paths += save_figure(inverse_bound_figure(tables["inverse_bound"]),
                             directory / "inverse-bound" / "inverse_bound")
    if "robustness" in tables:
        paths += save_figure(robustness_figure(tables["robustness"]), directory / "robustness")
    if "inverse_ratio" in tables:
        paths += save_figure(inverse_ratio_figure(tables["inverse_ratio"], tables["inverse_ratio_summary"]),
                             directory / "inverse-ratio" / "inverse_ratio")
    if "scaling" in tables:
        paths += save_figure(scaling_figure(tables["scaling"]), directory / "scaling")
    return paths


def validate_cfg(cfg: Any) -> None:
    """The validator of the Hydra preflight callback (conf/figures.yaml): dir holds readable tables with the
    columns the figures draw (InputError otherwise)."""
    cfg = as_dictconfig(cfg)
    check_unknown_keys(cfg, FiguresConf)
    check_added_keys()
    directory = Path(str(cfg.dir))
    if not (directory / "results.csv").is_file():
        raise ConfigError(f"dir={str(cfg.dir)!r} is invalid: must contain results.csv (run `reparam canonical`)")
    tables = read_tables(directory)
    sizes = sorted(int(n) for n in tables["results"]["n"].unique())
    if len(sizes) < 2:
        raise DataError(f"dir={str(cfg.dir)!r} cannot be drawn: {directory / 'results.csv'} holds "
                        f"{'one sample size (n=' + str(sizes[0]) + ')' if sizes else 'no fits'}, and a convergence "
                        f"figure needs at least 2 (run more n_grid sizes, or aggregate runs of several n: reparam "
                        f"aggregate dirs=[...])")


def run(cfg: Any) -> int:
    """Redraw the figures of `cfg.dir` (a FiguresConf or its DictConfig) and print their paths; 0 when done.
    Raises InputError (before drawing anything) for a folder without the tables, or whose tables make no figure."""
    validate_cfg(cfg)
    acquire(str(cfg.dir), field="dir")  # no other process writes into the folder meanwhile
    try:
        paths = redraw(Path(str(cfg.dir)))
    finally:
        release(str(cfg.dir))
    if not paths:
        raise DataError(f"dir={str(cfg.dir)!r}: its tables make no figure")
    for p in paths:
        print(p)
    return 0


main = hydra_main(run, "figures", __file__)


if __name__ == "__main__":
    main()
