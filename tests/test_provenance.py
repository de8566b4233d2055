"""Every run records what produced it (provenance.json), and result tables are created like any other file."""
import json
import os
import stat
import subprocess

import pandas as pd
import pytest

import reparam
from reparam.provenance import LIBRARIES, git_commit, provenance, write_provenance
from reparam.results import write_table


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_tables_respect_the_umask(tmp_path, umask, mode):
    """write_table writes through a temporary file (mkstemp: always 0600); the result must follow the umask."""
    old = os.umask(umask)
    try:
        path = write_table(pd.DataFrame({"a": [1, 2]}), tmp_path / "t.csv")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert pd.read_csv(path)["a"].tolist() == [1, 2]


def test_provenance_records_version_commit_and_libraries(tmp_path):
    record = json.loads(write_provenance(tmp_path / "run").read_text())
    assert record["version"] == reparam.__version__ and record["version"]
    assert set(record["libraries"]) == set(LIBRARIES)
    assert record["libraries"]["torch"] and record["libraries"]["numpy"]
    in_git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=os.path.dirname(reparam.__file__),
                            capture_output=True, text=True)
    if in_git.returncode == 0:  # the commit (git describe) starts with the abbreviated HEAD hash
        assert record["git_commit"].startswith(in_git.stdout.strip()[:7])
    assert provenance()["python"].count(".") == 2


def test_provenance_records_the_cost_of_the_run(tmp_path):
    import time

    started = time.perf_counter()
    sum(i * i for i in range(2_000_000))  # some CPU work (about 0.1 s)
    cost = json.loads(write_provenance(tmp_path, started=started).read_text())["resources"]
    assert cost["wall_clock_from"] == "run start"
    assert 0 < cost["wall_seconds"] < 30 and cost["cpu_seconds"] > 0
    assert cost["cpu_count"] == os.cpu_count()
    since_start = json.loads(write_provenance(tmp_path).read_text())["resources"]
    assert since_start["wall_clock_from"] == "process start"
    assert since_start["wall_seconds"] >= cost["wall_seconds"]  # the process began before this test


def test_no_commit_outside_a_git_checkout(tmp_path):
    assert git_commit(tmp_path) is None


def test_the_study_output_step_writes_provenance(tmp_path):
    from reparam.study import Setting
    from reparam.sweep import StudyPlan, run_plan
    from reparam.outputs import write_outputs

    plan = StudyPlan(structures=["shared_linear"], regimes=["exact"], n_grid=[300], replicates=1,
                     setting=Setting(n_eval=500))
    write_outputs(run_plan(plan, tmp_path / "results.jsonl", progress=False), tmp_path, figures=False)
    assert json.loads((tmp_path / "provenance.json").read_text())["package"] == "reparam"
