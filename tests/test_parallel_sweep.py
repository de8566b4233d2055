"""run_plan with worker processes gives the serial rows (all but wall time), and resumes the same way."""
import pandas as pd
import pytest
import torch

from reparam.fit import SolverConfig
from reparam.results import ResultLog
from reparam.study import InitConfig, Setting
from reparam.sweep import PlanError, StudyPlan, run_plan


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
    with pytest.raises(PlanError, match="workers"):
        run_plan(_plan(), tmp_path / "x.jsonl", progress=False, workers=0)
