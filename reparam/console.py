"""Progress and summary text of the apps: through `logging` where an app configured it, else printed.

Hydra configures logging for its apps (console + the job's log file, e.g. convergence.log), so their lines
reach both; a library call or an argparse app without logging configuration still prints them.
"""
from __future__ import annotations

import logging
import sys
from typing import TextIO

#: the exit status of a run ended by Ctrl-C or SIGTERM (128 + SIGINT, the shell's convention)
INTERRUPTED_STATUS = 130
#: the line of a command interrupted before its run began (reparam.cli, reparam.app, the preflight)
NOTHING_WRITTEN = "interrupted before any result was written: nothing to resume, rerun the command to start again"


def say(logger: logging.Logger, text: str, stream: TextIO | None = None, fallback: str = "stdout") -> None:
    """Write `text` to `stream` when one is given; else log it at INFO through `logger` when a handler would
    show it; else print it to sys.stdout or sys.stderr (`fallback`)."""
    if stream is None and logger.isEnabledFor(logging.INFO) and logger.hasHandlers():
        logger.info(text)
        return
    print(text, file=stream or getattr(sys, fallback), flush=True)
