"""The Hydra entry point of every app in sims/ and experiments/ (`reparam <command>`, reparam.cli).

An app is a function `run(cfg) -> int | None` (the work, callable in-process by tests and other apps) and a
primary config `<app folder>/conf/<name>.yaml`; `hydra_main(run, "<name>", __file__)` makes its `main`:
one config folder found by file path (it works from a checkout, an editable install and a wheel), one
error convention (an InputError is one stderr line and exit status 2; a non-zero return is the exit status).
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable

import hydra

from .validation import exit_on_input_error


def hydra_main(run: Callable, config_name: str, app_file: str) -> Callable[[], None]:
    """`main()` of an app: Hydra composes `config_name` from the `conf` folder beside `app_file` and calls
    `run(cfg)`. The job (its log file, e.g. check.log) is named after run's module, as for a plain app."""
    config_dir = str(Path(app_file).resolve().parent / "conf")

    @functools.wraps(run)  # Hydra names the job after the wrapped function's module
    def task(cfg) -> None:
        code = exit_on_input_error(run)(cfg)
        if code:
            sys.exit(code)

    return hydra.main(version_base="1.3", config_path=config_dir, config_name=config_name)(task)
