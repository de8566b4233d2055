"""run_plan with worker processes gives the serial rows (all but wall time), and resumes the same way."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from reparam.fit import SolverConfig
from reparam.results import ResultLog
from reparam.study import InitConfig, Setting
from reparam.sweep import StudyPlan, run_plan
from reparam.validation import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _plan():
    setting = Setting(init=InitConfig(mode="mixed", n_starts=2), solver=SolverConfig(max_iter=25), n_eval=2000)
    return StudyPlan(structures=["shared_mlp", "independent"], regimes=["exact", "over"], n_grid=[300, 600],
                     replicates=2, seed=3, setting=setting)


def test_parallel_rows_equal_serial_rows_and_resume(tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        serial = run_plan(_plan(), tmp_path / "serial.jsonl", progress=False)
        parallel = run_plan(_plan(), tmp_path / "parallel.jsonl", progress=False, workers=2)
    finally:
        torch.set_num_threads(before)
    assert len(serial) == 16
    pd.testing.assert_frame_equal(serial.drop(columns="seconds"), parallel.drop(columns="seconds"))
    # resume: a log missing one cell gets exactly that cell back, with the same rows
    rows = [r for r in ResultLog(tmp_path / "parallel.jsonl").rows() if not (r["n"] == 600 and r["structure"] == "independent")]
    partial = ResultLog(tmp_path / "partial.jsonl")
    partial.extend(rows)
    resumed = run_plan(_plan(), tmp_path / "partial.jsonl", progress=False, workers=2)
    pd.testing.assert_frame_equal(serial.drop(columns="seconds"), resumed.drop(columns="seconds"))


def test_workers_must_be_a_positive_integer(tmp_path):
    with pytest.raises(ConfigError, match="workers"):
        run_plan(_plan(), tmp_path / "x.jsonl", progress=False, workers=0)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and uses pgrep")
def test_workers_exit_when_the_study_is_killed(tmp_path):
    """SIGKILL of a parallel study (what a preempted job gets) must not leave its workers running."""
    code = ("import torch; torch.set_num_threads(2)\n"
            "from reparam.study import Setting\nfrom reparam.sweep import StudyPlan, run_plan\n"
            "plan = StudyPlan(structures=['independent'], regimes=['over'], n_grid=[20000, 40000], replicates=4,"
            " setting=Setting(n_eval=1000))\n"
            f"run_plan(plan, {str(tmp_path / 'log.jsonl')!r}, progress=False, workers=2)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    deadline = time.time() + 120
    workers = []
    while time.time() < deadline and len(workers) < 2:
        workers = [p for p in _children(proc.pid) if "spawn_main" in open(f"/proc/{p}/cmdline").read()
                   and "resource_tracker" not in open(f"/proc/{p}/cmdline").read()]
        time.sleep(0.5)
    assert len(workers) >= 2, "the study never started its workers"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 120  # a worker still importing torch notices its parent is gone when it starts
    while time.time() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.5)
    left = [p for p in workers if _alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert not left, f"workers {left} outlived their killed parent"
