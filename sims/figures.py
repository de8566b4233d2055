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

from hydra.core.config_store import ConfigStore

from reparam.app import as_dictconfig, hydra_main
from reparam.runfolder import acquire, release
from reparam.plots import read_tables, redraw
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
