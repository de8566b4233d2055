"""The estimator against a known truth (issue 2 acceptance). Tolerances are stated in each test."""
import numpy as np
import pandas as pd
import pytest

from reparam.rates import fit_slopes
from reparam.study import Setting, run_cell

REPLICATES = list(range(6))


@pytest.fixture(scope="module")
def shared_mlp_exact():
    rows = []
    for n in (1_000, 100_000):
        rows += run_cell(Setting(structure="shared_mlp", regime="exact"), n, REPLICATES, base_seed=2024)
    return pd.DataFrame(rows)


def test_certified_lse_at_large_n(shared_mlp_exact):
    big = shared_mlp_exact[shared_mlp_exact.n == 100_000]
    # the truth is a feasible point, so an LSE has L_n(fit) <= L_n(truth); 1e-8 relative slack
    assert (big.rel_gap <= 1e-8).all(), big.rel_gap.tolist()
    assert big.converged.all() and big.certified.all()


def test_voronoi_loss_shrinks_at_least_4x_from_1e3_to_1e5(shared_mlp_exact):
    means = shared_mlp_exact.groupby("n").voronoi_prefix.mean()
    # theory: sqrt(log n / n) predicts ~7.6x over this range; 4x leaves room for 6-replicate noise
    assert means[1_000] / means[100_000] >= 4.0, means.to_dict()


@pytest.mark.slow
def test_slope_of_prefix_voronoi_loss_is_about_minus_half():
    rows = []
    for n in np.unique(np.logspace(3, 5, 7).round().astype(int)):
        rows += run_cell(Setting(structure="shared_mlp", regime="exact"), int(n), list(range(12)), base_seed=7)
    df = pd.DataFrame(rows)
    slope = fit_slopes(df, "voronoi_prefix", by=["structure"], n_boot=500).iloc[0]
    assert -0.7 <= slope.slope <= -0.35, slope.to_dict()
