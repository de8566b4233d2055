"""Nothing a user made is overwritten, every log record is checked on read, I/O faults end in one line.

Each test drives the real command line (a fresh interpreter) on the tiny study of test_reliability and states
the exit status, the message and which files exist afterwards."""
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys

import pandas as pd
import pytest

from reparam.results import ResultLog

from .conftest import ROOT, run_cli
from .test_reliability import TINY


def one_line(proc) -> bool:
    return len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def snapshot(folder):
    """Every file below `folder` with its bytes (logs of Hydra's own job log left out: it is appended to)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.endswith(".log")}


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    """One finished convergence run of the tiny study (canonical truth)."""
    run = tmp_path_factory.mktemp("study") / "run"
    proc = run_cli(["sims.convergence", *TINY, f"hydra.run.dir={run}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run


def copy_of(run, tmp_path, name="run"):
    target = tmp_path / name
    shutil.copytree(run, target)
    return target


def test_robustness_summarize_refuses_a_convergence_run_and_leaves_its_records(study_run, tmp_path):
    run = copy_of(study_run, tmp_path)
    before = snapshot(run)
    proc = run_cli(["sims.robustness", f"summarize={run}", "figures=false"], timeout=120)
    assert proc.returncode == 2 and one_line(proc), proc.stderr
    assert f"summarize='{run}' holds the outputs of `reparam convergence`" in proc.stderr
    assert snapshot(run) == before and not list(run.glob("robustness*"))
    # a folder of the older layout (its provenance names no command): refused as a run of the canonical truth
    record = json.loads((run / "provenance.json").read_text())
    record.pop("command")
    (run / "provenance.json").write_text(json.dumps(record))
    before = snapshot(run)
    proc = run_cli(["sims.robustness", f"summarize={run}", "figures=false"], timeout=120)
    assert proc.returncode == 2 and one_line(proc) and "canonical truth, not a robustness job" in proc.stderr
    assert snapshot(run) == before


def test_aggregate_never_writes_into_a_run_folder(study_run, tmp_path):
    run = copy_of(study_run, tmp_path)
    before = snapshot(run)
    proc = run_cli(["sims.aggregate", f"dirs=[{run}]", f"out={run}", "figures=false"], timeout=120)
    assert proc.returncode == 2 and one_line(proc), proc.stderr
    assert f"out='{run}' holds the outputs of `reparam convergence`" in proc.stderr and "new folder" in proc.stderr
    assert snapshot(run) == before
    # its own folder: written, and a rerun adds a provenance record instead of replacing the first
    for _ in range(2):
        proc = run_cli(["sims.aggregate", f"dirs=[{run}]", "figures=false"], timeout=120)
        assert proc.returncode == 0, proc.stderr
    record = json.loads((run / "aggregate" / "provenance.json").read_text())
    assert record["command"] == "aggregate" and len(record["history"]) == 1
    assert record["history"][0]["status"] == "finished" and record["history"][0]["resources"]["wall_seconds"] >= 0


def test_a_run_folder_is_never_reused_for_another_setting(study_run, tmp_path):
    run = copy_of(study_run, tmp_path)
    before = snapshot(run)  # results.csv, summary.csv, provenance.json and Hydra's .hydra/config.yaml
    proc = run_cli(["sims.convergence", *TINY, "truth.noise=0.5", f"hydra.run.dir={run}"])
    assert proc.returncode == 2 and one_line(proc), proc.stderr
    assert "holds a run of `reparam convergence` with another setting (truth.noise=None there, 0.5 here)" \
        in proc.stderr and "pass a new folder" in proc.stderr
    assert snapshot(run) == before
    # the same setting resumes: nothing refitted, a second provenance record beside the first
    proc = run_cli(["sims.convergence", *TINY, f"hydra.run.dir={run}"])
    assert proc.returncode == 0, proc.stderr
    assert len(ResultLog(run / "results.jsonl").rows()) == 6
    record = json.loads((run / "provenance.json").read_text())
    assert [r["command"] for r in record["history"]] == ["convergence"] and record["status"] == "finished"


def test_two_writers_of_one_folder_the_second_is_refused(tmp_path):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "reparam.sims.convergence", *TINY, f"hydra.run.dir={run}"]
    env = dict(os.environ, HYDRA_FULL_ERROR="0")
    procs = [subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    refused = outs[[p.returncode for p in procs].index(2)][1]
    assert f"hydra.run.dir='{run}' is in use: another reparam process is writing into" in refused
    assert len(refused.strip().splitlines()) == 1
    rows = ResultLog(run / "results.jsonl").rows()
    assert len(rows) == 6 and len({(r["n"], r["replicate"]) for r in rows}) == 6  # every fit once
    record = json.loads((run / "provenance.json").read_text())
    assert "history" not in record  # the refused writer left no record


def test_a_foreign_record_in_a_log_is_reported_by_line_and_skipped(study_run, tmp_path):
    run = copy_of(study_run, tmp_path)
    log = ResultLog(run / "results.jsonl")
    log.append(dict(dataset="e2e", n=50, replicate=0, structure="shared", init="words", setting_id="abc",
                    test_nll=1.0))  # a low-data record, valid checksum
    (run / "results.csv").unlink()
    proc = run_cli(["sims.convergence", *TINY, f"hydra.run.dir={run}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "results.jsonl: skipped 1 record(s) that are not rows of this log (line 7: not a row of the synthetic " \
           "study (it lacks ['regime', 'seed', 'truth'])" in proc.stderr
    assert len(pd.read_csv(run / "results.csv")) == 6
    proc = run_cli(["sims.aggregate", f"dirs=[{run}]", "by_setting=true", "figures=false"], timeout=120)
    assert proc.returncode == 0 and "line 7" in proc.stderr, proc.stderr[-2000:]
    assert len(pd.read_csv(run / "aggregate" / "results.csv")) == 6


def test_a_full_disk_ends_in_one_line_and_the_rerun_resumes(tmp_path):
    run = tmp_path / "run"
    limit = 4500  # bytes per file: the first cell's 3 records fit in results.jsonl, the second cell's do not

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing

    args = [sys.executable, "-m", "reparam.sims.convergence", *TINY, f"hydra.run.dir={run}"]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, preexec_fn=small_files,
                          env=dict(os.environ, HYDRA_FULL_ERROR="0"))
    assert proc.returncode == 1 and one_line(proc), proc.stderr[-2000:]
    assert proc.stderr.startswith(f"error: cannot write {run / 'results.jsonl'}: File too large; the records "
                                  f"written before are kept"), proc.stderr
    assert not (run / "results.csv").exists()
    proc = run_cli(["sims.convergence", *[a for a in TINY if a != "progress=false"], f"hydra.run.dir={run}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    kept = re.search(r"(\d+) already in", proc.stdout + proc.stderr)
    assert kept and 3 <= int(kept.group(1)) < 6  # the records written before the fault were kept, not refitted
    assert len(pd.read_csv(run / "results.csv")) == 6


def test_noise_free_data_have_a_defined_gap_rule(tmp_path):
    proc = run_cli(["sims.convergence", *TINY, "truth.noise=0", f"hydra.run.dir={tmp_path}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = pd.read_csv(tmp_path / "results.csv")
    assert (results.truth_loss == 0).all() and results.valid.all() and (results.rel_gap < 1e-8).all()
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert len(summary) and summary.n_valid.min() > 0 if "n_valid" in summary else len(summary)


def test_robustness_refuses_the_canonical_truth(tmp_path):
    proc = run_cli(["sims.robustness", "truth=canonical", f"hydra.run.dir={tmp_path / 'r'}", *TINY[:4]], timeout=120)
    assert proc.returncode == 2 and one_line(proc), proc.stderr
    assert "truth.kind='canonical' is invalid: must be 'random'" in proc.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, needle", [
    (["names=[inverse-bound]", "results=RESULTS"], "results='RESULTS' is invalid with names=['inverse-bound']"),
    (["names=[nosuch]", "all=true"], "'nosuch' is not a check"),
    (["names=[nosuch]", "list=true"], "'nosuch' is not a check"),
    (["names=[shared-exact]", "all=true"], "is invalid with all=true"),
])
def test_check_refuses_what_it_would_ignore(study_run, tmp_path, args, needle):
    results = study_run / "results.csv"
    args = [a.replace("RESULTS", str(results)) for a in args]
    needle = needle.replace("RESULTS", str(results))
    proc = run_cli(["sims.check", *args, f"out={tmp_path / 'out'}"], timeout=120)
    assert proc.returncode == 2 and one_line(proc) and needle in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()


def test_figures_of_a_single_sample_size_is_an_error(study_run, tmp_path):
    run = copy_of(study_run, tmp_path)
    results = pd.read_csv(run / "results.csv")
    results[results.n == 300].to_csv(run / "results.csv", index=False)
    before = snapshot(run)
    proc = run_cli(["sims.figures", f"dir={run}"], timeout=120)
    assert proc.returncode == 2 and one_line(proc), proc.stderr
    assert "holds one sample size (n=300)" in proc.stderr and "needs at least 2" in proc.stderr
    assert snapshot(run) == before
