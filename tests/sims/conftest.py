import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_cli(args, cwd=None, timeout=300, env=None):
    """Run `python -m ...` from the repository root; returns CompletedProcess (text)."""
    e = dict(os.environ, PYTHONWARNINGS="default", HYDRA_FULL_ERROR="0", **(env or {}))
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd or ROOT, capture_output=True, text=True,
                          timeout=timeout, env=e)


@pytest.fixture
def cli():
    return run_cli
