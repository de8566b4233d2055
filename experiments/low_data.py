"""Experiment 2: a fair low-data table-to-text comparison of the prefix structures (THEORY section 6).

The app is thin: the protocol lives in `reparam.lm.low_data` (settings: the checks of every setting, run once
before any work, and the setting fingerprint; protocol: the per-cell protocol, scoring and the recorded table;
tuned: the per-n tuned protocol; report: tables, figures and the answer paragraph). Every number is in
experiments/conf/low_data.yaml and the setting files.

Stages (`stage=`):

    reparam low-data stage=train [device=cuda] [low_data.datasets=[e2e]] [low_data.ns=[50]] ...
    reparam low-data stage=score      # E2E metrics of the saved outputs (BLEU and NIST in Python; the rest: Java)
    reparam low-data stage=report     # tables, paired differences, figures
    reparam low-data setting=smoke stage=all                           # everything on a tiny model, < 1 minute
    reparam low-data setting=cpu_all_layers stage=train max_minutes=60 # the all-layer study, one chunk (rerun)
    reparam low-data setting=cpu stage=report                          # the top-6 CPU edition (a variant)
    reparam low-data setting=gpu stage=all                             # all layers in one call on one GPU
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from reparam.app import as_dictconfig, hydra_main
from reparam.lm.low_data.protocol import budget_setting, score_stage, table, train_stage  # noqa: F401  (the stages)
from reparam.lm.low_data.report import report_stage  # noqa: F401
from reparam.lm.low_data.settings import setting_id, validate  # noqa: F401  (validate: the preflight's validator)
from reparam.lm.runner import repo_path
from reparam.runfolder import acquire, release
from reparam.validation import check_added_keys, status_on_input_error

logger = logging.getLogger(__name__)


def help_text() -> str:
    """The settings part of `--help`: the primary config, whose comments document every setting."""
    text = (CONF_DIR / "low_data.yaml").read_text()
    # Hydra fills the help template with string.Template: a literal $ (e.g. $REPARAM_DATA) must be doubled
    return "== What each setting does (experiments/conf/low_data.yaml) ==\n" + text.replace("$", "$$")


CONF_DIR = Path(__file__).resolve().parent / "conf"


@status_on_input_error
def run(cfg: Any) -> int:
    """Validate every setting (before a model or data file is touched), then run the stages `stage` names;
    returns the exit status (a user's mistake: one line on stderr, status 2). cfg: the composed config."""
    cfg = as_dictconfig(cfg)
    check_added_keys()  # `+low_data.tol=1` would otherwise be recorded and ignored
    validate(cfg)
    # one writer at a time: two chunks started together would train the same cells twice. The folder holds
    # the rows of several settings (e.g. top-K and every-layer), told apart by setting_id, so it is locked only.
    folder = acquire(repo_path(cfg.run_dir) / "low_data", field="run_dir") if cfg.stage != "report" else None
    work = budget_setting(cfg, only_checked=True) if cfg.budget_check.run else cfg
    try:
        if cfg.stage in ("train", "all"):
            train_stage(work)
        if cfg.stage in ("score", "all"):
            score_stage(work)
        if cfg.stage in ("report", "all"):
            report_stage(cfg)
    finally:
        if folder is not None:
            release(folder)
    return 0


main = hydra_main(run, "low_data", __file__)


if __name__ == "__main__":
    main()
