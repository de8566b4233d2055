import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_cli(args, cwd=None, timeout=300, env=None):
    """Run `python -m ...` from the repository root; returns CompletedProcess (text).

    `sims.X` and `experiments.X` run as the installed `reparam.sims.X` / `reparam.experiments.X`."""
    if args and args[0].split(".")[0] in ("sims", "experiments"):
        args = ["reparam." + args[0], *args[1:]]
    e = dict(os.environ, PYTHONWARNINGS="default", HYDRA_FULL_ERROR="0", **(env or {}))
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd or ROOT, capture_output=True, text=True,
                          timeout=timeout, env=e)


@pytest.fixture
def cli():
    return run_cli
