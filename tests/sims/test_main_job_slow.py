"""The default main job end to end (slow: ~3-4 minutes on 2 cores) and one full theory check.

Acceptance is read from results.csv independently of the library: plain numpy slopes of the mean of
certified fits. These tests report the measurement; they are not tuned to pass."""
import time

import numpy as np
import pandas as pd
import pytest

from .conftest import run_cli

pytestmark = pytest.mark.slow


def _slope(df, structure, regime, col):
    g = df[(df.structure == structure) & (df.regime == regime) & df.certified]
    means = g.groupby("n")[col].mean()
    return np.polyfit(np.log(means.index.to_numpy(float)), np.log(means.to_numpy()), 1)[0], means


def test_default_main_job(tmp_path):
    tic = time.perf_counter()
    proc = run_cli(["sims.convergence", f"hydra.run.dir={tmp_path}"], timeout=900)
    wall = time.perf_counter() - tic
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = pd.read_csv(tmp_path / "results.csv")
    for col in ["structure", "regime", "n", "replicate", "seed", "truth", "voronoi_prefix", "voronoi_native",
                "l2_error", "gap", "converged", "seconds"]:
        assert col in df.columns
    assert df.n.nunique() >= 6 and df.n.max() == 100_000 and df.replicate.nunique() >= 10
    slope, _ = _slope(df, "shared_mlp", "exact", "voronoi_prefix")
    _, ind = _slope(df, "independent", "over", "voronoi_prefix")
    _, mlp = _slope(df, "shared_mlp", "over", "voronoi_prefix")
    ratio = ind.iloc[-1] / mlp.iloc[-1]
    print(f"wall {wall:.0f}s, shared_mlp exact slope {slope:+.3f}, independent/shared_mlp over at n_max {ratio:.1f}x")
    assert -0.7 <= slope <= -0.35
    assert ratio >= 3
    for stem in ["convergence_voronoi", "convergence_regression", "sample_complexity"]:
        assert (tmp_path / f"{stem}.png").exists() and (tmp_path / f"{stem}.pdf").exists()


def test_shared_exact_check_cli(tmp_path):
    proc = run_cli(["sims.check", "names=[shared-exact]", f"out={tmp_path}", "replicates=4"], timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "predicted -0.50" in proc.stdout and "=> shared-exact:" in proc.stdout
    assert (tmp_path / "shared-exact" / "report.md").exists()
