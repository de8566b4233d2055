"""No result lost or silently mixed, and every synthetic entry point validates its input before any work.

Each test drives the real command line (a fresh interpreter) on a tiny study and states what must happen:
the exit status, a message naming the field / file, and which files may exist afterwards."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from reparam.results import ResultLog
from reparam.study import Setting, TruthConfig
from reparam.sweep import StudyPlan, run_plan

from .conftest import run_cli

# one small, fast study: 1 structure, 1 regime, 2 sizes, 3 replicates, near-truth starts
TINY = ["structure=shared_linear", "regime=exact", "n_grid=[300,1000]", "replicates=3", "init=near_truth",
        "n_eval=2000", "progress=false", "figures=false", "threads=1"]


def tiny_plan(noise=None) -> StudyPlan:
    return StudyPlan(structures=["shared_linear"], regimes=["exact"], n_grid=[300, 1000], replicates=3,
                     setting=Setting(truth=TruthConfig(noise=noise), n_eval=2000))


def test_resume_after_a_torn_last_record_recovers_every_fit(tmp_path):
    """The torn last record used to swallow the first new record: '1 planned fits are missing', exit 1."""
    first = run_cli(["sims.convergence", *TINY, f"hydra.run.dir={tmp_path}"])
    assert first.returncode == 0, first.stderr[-2000:]
    log = tmp_path / "results.jsonl"
    log.write_bytes(log.read_bytes()[:-200])  # the last record loses its end (and its newline)
    (tmp_path / "results.csv").unlink()
    second = run_cli(["sims.convergence", *TINY, f"hydra.run.dir={tmp_path}"])
    assert second.returncode == 0, second.stderr[-2000:]
    assert len(pd.read_csv(tmp_path / "results.csv")) == 2 * 3


def test_aggregate_never_pools_settings_and_never_overwrites_the_run(tmp_path):
    for noise in (0.1, 0.5):  # two runs of different settings into one folder
        run_plan(tiny_plan(noise), tmp_path / "results.jsonl", progress=False)
    (tmp_path / "results.csv").write_text("the run's own table\n")
    proc = run_cli(["sims.aggregate", f"dirs=[{tmp_path}]", "figures=false"])
    assert proc.returncode == 2 and "2 different settings" in proc.stderr and "noise=0.5" in proc.stderr
    assert "pass by_setting=true" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr and not (tmp_path / "aggregate").exists()
    proc = run_cli(["sims.aggregate", f"dirs=[{tmp_path}]", "figures=false", "by_setting=true"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("aggregated 12 fits from 1 directory: structures=['shared_linear']")
    summary = pd.read_csv(tmp_path / "aggregate" / "summary.csv")
    assert summary["setting_id"].nunique() == 2  # one summary row set per setting, not pooled
    assert (tmp_path / "results.csv").read_text() == "the run's own table\n"  # default OUT is DIR/aggregate


def test_too_few_replicates_say_insufficient_on_the_command_line(tmp_path):
    proc = run_cli(["sims.convergence", *[a for a in TINY if not a.startswith("replicates")], "replicates=1",
                    f"hydra.run.dir={tmp_path}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = pd.read_csv(tmp_path / "summary.csv", keep_default_na=False)
    predicted = summary[summary.prediction != ""]
    assert len(predicted) and (predicted.verdict == "insufficient").all()
    assert predicted.slope_lo.replace("", np.nan).astype(float).isna().all()  # no zero-width interval
    assert "insufficient" in proc.stdout


# (override, text that must appear in the message); every one must stop before any work with status 2
BAD_STUDY_INPUTS = [
    ("optimiser.ftol=inf", "optimiser.ftol=inf"),
    ("optimiser.gap_tol=inf", "gap_tol=inf"),
    ("optimiser.psd_tol=inf", "psd_tol=inf"),
    ("optimiser.damping_max=1e-4", "damping_max"),
    ("+optimiser.tol=1e-3", "optimiser.tol is not a known setting"),
    ("init.random_scale=inf", "init.random_scale=inf"),
    ("n=1000000000000", "n=1000000000000 is too large"),
    ("n_eval=1000000000000", "n_eval=1000000000000 is too large"),
    ("replicates=100000", "replicates=100000 is too large"),
    ("regime.extra_atoms=1000", "regime.extra_atoms=1000 is too large"),
]


def test_bad_study_values_stop_before_any_work(tmp_path):
    def one(case):
        override, _ = case
        out = tmp_path / f"case{BAD_STUDY_INPUTS.index(case)}"
        return out, run_cli(["sims.convergence", override, f"hydra.run.dir={out}", "progress=false"], timeout=120)

    with ThreadPoolExecutor(max_workers=3) as pool:
        outcomes = list(pool.map(one, BAD_STUDY_INPUTS))
    problems = []
    for (override, needle), (out, proc) in zip(BAD_STUDY_INPUTS, outcomes):
        if proc.returncode != 2:
            problems.append(f"{override}: exit {proc.returncode}")
        if needle not in proc.stderr or "Traceback" in proc.stderr:
            problems.append(f"{override}: message {proc.stderr[-300:]!r}")
        if out.exists():
            problems.append(f"{override}: created {out}")
    assert not problems, "\n".join(problems)


def test_bad_output_paths_stop_before_any_fit(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for run_dir, needle in (("/proc/x", "hydra.run.dir='/proc/x'"), (str(a_file), "existing file")):
        proc = run_cli(["sims.convergence", *TINY, f"hydra.run.dir={run_dir}"])
        assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    run_dir = tmp_path / "run"
    (run_dir / "results.csv").mkdir(parents=True)
    proc = run_cli(["sims.convergence", *TINY, f"hydra.run.dir={run_dir}"])
    assert proc.returncode == 2 and "results.csv" in proc.stderr and "existing folder" in proc.stderr
    assert not (run_dir / "results.jsonl").exists()  # refused before the first fit, not after all of them


def test_a_multirun_validates_every_job_before_the_first_starts(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(["sims.convergence", "-m", *[a for a in TINY if not a.startswith("n_grid")], "n=300,0,1000",
                    f"hydra.sweep.dir={sweep}"])
    assert proc.returncode == 2 and "job 1" in proc.stderr and "n=0 is invalid" in proc.stderr, proc.stderr
    assert not sweep.exists()  # job 0 (valid) did not run either


def lm_like_log(path):
    ResultLog(path).extend([dict(truth="shared", structure="independent", n=4, replicate=0, voronoi=0.1)])


def test_foreign_files_and_paths_are_refused_with_one_line(tmp_path):
    lm = tmp_path / "lm"
    lm_like_log(lm / "results.jsonl")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    study = tmp_path / "study"
    run_plan(tiny_plan(), study / "results.jsonl", progress=False)
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "results.csv").write_text("a,b\n1,2\n")
    (wrong / "summary.csv").write_text("a,b\n1,2\n")
    cases = [
        (["sims.aggregate", f"dirs=[{study}]", f"out={a_file}"], "out="),
        (["sims.aggregate", f"dirs=[{lm}]"], "not a result log of the synthetic study"),
        (["sims.check", "names=[shared-exact]", f"log={lm / 'results.jsonl'}", f"out={tmp_path / 'c1'}"],
         "not a result log of the synthetic study"),
        (["sims.check", "names=[shared-exact]", f"log={tmp_path}", f"out={tmp_path / 'c2'}"], "existing folder"),
        (["sims.robustness", "-m", "truth.seed=0", f"hydra.sweep.dir={a_file}"], "existing file"),
        (["sims.figures", f"dir={wrong}"], "lacks the columns"),
    ]
    with ThreadPoolExecutor(max_workers=3) as pool:
        procs = list(pool.map(lambda c: run_cli(c[0], timeout=120), cases))
    problems = [f"{args}: exit {p.returncode}, {p.stderr[-300:]!r}" for (args, needle), p in zip(cases, procs)
                if p.returncode != 2 or needle not in p.stderr or "Traceback" in p.stderr]
    assert not problems, "\n".join(problems)
    assert not (tmp_path / "c1").exists() and not (tmp_path / "c2").exists() and a_file.read_text() == "x"
    assert not (lm / "aggregate").exists() and sorted(p.name for p in wrong.iterdir()) == ["results.csv", "summary.csv"]
