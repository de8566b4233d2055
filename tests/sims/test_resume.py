"""Resume without loss: a sweep killed with SIGKILL mid-way and rerun in the same directory recomputes
none of the finished cells and loses none; corrupt or partial records are detected and redone."""
import json
import os
import signal
import subprocess
import sys
import time
import warnings

import pandas as pd
import pytest

from reparam.results import ResultLog
from reparam.study import Setting
from reparam.sweep import StudyPlan, run_plan, without_timing, write_results

from .conftest import ROOT, run_cli

# Two cheap cells, then a slow one: the kill lands while the slow cell is being fitted.
ARGS = ["structure=independent", "regime=over", "n_grid=[200,400,20000]", "replicates=3", "figures=false",
        "threads=1"]


def _lines(path):
    return path.read_text().splitlines() if path.exists() else []


def test_sigkill_mid_sweep_then_resume(tmp_path):
    out = tmp_path / "run"
    log = out / "results.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "sims.convergence", *ARGS, f"hydra.run.dir={out}"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while len(_lines(log)) < 6 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # now inside the slow third cell
    assert proc.poll() is None, "the sweep finished before it could be killed: make the last cell slower"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    before = _lines(log)
    assert len(before) == 6, f"expected the two finished cells (6 records), found {len(before)}"
    assert not (out / "results.csv").exists()

    rerun = run_cli(["sims.convergence", *ARGS, f"hydra.run.dir={out}"], timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    text = rerun.stdout + rerun.stderr
    assert "6 already in" in text and "3 to run" in text, text[-2000:]
    cells_run = [line for line in text.splitlines() if line.startswith("[sweep] cell")]
    assert len(cells_run) == 1 and "n=20000" in cells_run[0], cells_run  # finished cells were not recomputed
    after = _lines(log)
    assert after[:6] == before  # nothing finished was lost or rewritten
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 9 and sorted(table.n.unique()) == [200, 400, 20000]
    assert table.groupby("n").replicate.apply(lambda r: sorted(r) == [0, 1, 2]).all()


def _tiny_plan():
    return StudyPlan(structures=["shared_mlp", "independent"], regimes=["exact"], n_grid=[200, 400], replicates=2,
                     seed=3, setting=Setting(n_eval=2000))


def test_corrupt_and_partial_records_are_redone_with_a_warning(tmp_path):
    plan = _tiny_plan()
    log = tmp_path / "results.jsonl"
    first = run_plan(plan, log, progress=False)
    write_results(first, tmp_path / "a.csv")
    lines = log.read_text().splitlines()
    record = json.loads(lines[1])
    record["row"]["voronoi_prefix"] = 123.0  # silently corrupted value: checksum no longer matches
    lines[1] = json.dumps(record)
    truncated = lines[-1][: len(lines[-1]) // 2]  # a partial last line, as after a crash mid-write
    log.write_text("\n".join(lines[:-1] + [truncated]) + "\n")
    with pytest.warns(RuntimeWarning, match="corrupt or partial"):
        second = run_plan(plan, log, progress=False)
    write_results(second, tmp_path / "b.csv")
    assert len(second) == len(first)
    assert 123.0 not in second["voronoi_prefix"].tolist()
    assert without_timing(tmp_path / "a.csv") == without_timing(tmp_path / "b.csv")


def test_rerun_of_finished_study_fits_nothing(tmp_path, capsys):
    plan = _tiny_plan()
    log = tmp_path / "results.jsonl"
    run_plan(plan, log, progress=False)
    n_lines = len(_lines(log))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_plan(plan, log, progress=True)
    assert len(_lines(log)) == n_lines
    assert "0 to run" in capsys.readouterr().err


def test_copy_planned_rows_reuses_fits_without_refitting(tmp_path):
    """reparam sensitivity reuse=LOG: the fits of a plan are copied from another log, others are left behind."""
    from reparam.study import Setting
    from reparam.sweep import StudyPlan, copy_planned_rows, plan_rows, run_plan

    plan = StudyPlan(structures=["shared_mlp"], regimes=["exact"], n_grid=[200], replicates=2, seed=1,
                     setting=Setting(n_eval=500))
    other = StudyPlan(structures=["shared_mlp"], regimes=["exact"], n_grid=[300], replicates=1, seed=1,
                      setting=Setting(n_eval=500))
    source = tmp_path / "source.jsonl"
    first = run_plan(plan, source, progress=False)
    run_plan(other, source, progress=False)
    target = ResultLog(tmp_path / "target.jsonl")
    assert copy_planned_rows([plan], ResultLog(source), target) == 2
    assert copy_planned_rows([plan], ResultLog(source), target) == 0  # already there
    assert len(target.rows()) == 2
    pd.testing.assert_frame_equal(plan_rows(plan, target), first)
