"""The code is pyflakes-clean (ruff's F rules, configured in pyproject.toml): no unused imports or variables,
no undefined names. Skipped where ruff is not installed (it is in the `test` extra)."""
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_check_is_clean():
    ruff = pytest.importorskip("ruff", reason="ruff is not installed (pip install -e '.[test]')")
    proc = subprocess.run([ruff.find_ruff_bin(), "check", "reparam", "sims", "experiments", "tests"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
