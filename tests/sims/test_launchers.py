"""Hydra multirun: 2 jobs with the joblib launcher, the same sweep with submitit_local, then aggregation
of a multirun directory into one table + figures; and the shipped slurm launcher config composes."""
import pandas as pd
import pytest

from .conftest import run_cli

SWEEP = ["-m", "n=300,600", "structure=independent", "regime=exact", "replicates=2", "n_eval=2000", "threads=1",
         "progress=false"]


def _check_multirun(sweep_dir):
    logs = sorted(sweep_dir.rglob("results.jsonl"))
    assert len(logs) == 2, logs
    agg = run_cli(["sims.aggregate", f"dirs=[{sweep_dir}]"])
    assert agg.returncode == 0, agg.stderr[-2000:]
    out = sweep_dir / "aggregate"  # the default output folder: never a run's own files
    table = pd.read_csv(out / "results.csv")
    assert sorted(table.n.unique()) == [300, 600] and len(table) == 4
    assert (out / "summary.csv").exists()
    assert (out / "convergence_regression.png").exists() and (out / "convergence_regression.pdf").exists()


def test_joblib_two_job_multirun_and_aggregate(tmp_path):
    sweep = tmp_path / "joblib"
    proc = run_cli(["sims.convergence", *SWEEP, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                    f"hydra.sweep.dir={sweep}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Joblib" in proc.stdout + proc.stderr
    _check_multirun(sweep)


def test_submitit_local_multirun(tmp_path):
    sweep = tmp_path / "submitit"
    proc = run_cli(["sims.convergence", *SWEEP, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
                    f"hydra.sweep.dir={sweep}"], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_multirun(sweep)


@pytest.mark.parametrize("launcher, target", [("slurm", "SlurmLauncher"), ("local_parallel", "JoblibLauncher")])
def test_shipped_launcher_configs_compose(launcher, target):
    proc = run_cli(["sims.convergence", f"hydra/launcher={launcher}", "--cfg", "hydra", "--package", "hydra.launcher"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert target in proc.stdout
