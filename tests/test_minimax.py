"""The local minimax lower bound (reparam.minimax, THEORY section 8 (docs/theory.md)): the two-point bound's behaviour on
synthetic psi curves, the separation lemmas on random estimates, and the figure drawn from the tables only."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reparam.losses import voronoi_loss
from reparam.minimax import (MinimaxConfig, curve_lower_bound, psi_on_grid, samples_to_reach,
                             tv_upper_bound, two_point_lower_bound)

SIGMA = 0.1
KL_PER_PSI2 = 1 / (2 * SIGMA ** 2)  # the synthetic model's n = 1 KL per unit psi^2
DELTAS = np.logspace(-3, 0, 7)  # the committed curves' grid


def test_tv_bound_is_pinsker_for_small_kl_and_bretagnolle_huber_for_large():
    assert tv_upper_bound(0.02) == pytest.approx(np.sqrt(0.01), rel=1e-12)
    assert tv_upper_bound(4.0) == pytest.approx(np.sqrt(1 - np.exp(-4.0)), rel=1e-12)
    assert tv_upper_bound(4.0) < 1 and tv_upper_bound(1e6) == 1.0 and tv_upper_bound(0.0) == 0.0


def test_bound_is_zero_where_psi_is_large_against_sqrt_n():
    # psi = 1 at every delta: n psi^2 / (2 sigma^2) = 5e5 at n = 1e4, the two models are told apart surely
    lb = curve_lower_bound(DELTAS, np.ones_like(DELTAS), [1e4, 1e6], KL_PER_PSI2, MinimaxConfig())
    assert (lb["lower_bound"] == 0).all()


def test_bound_does_not_vanish_where_psi_is_zero_on_a_range():
    # psi at round-off on the whole grid (the witness): the bound stays at delta_max / 2 at every n
    lb = curve_lower_bound(DELTAS, np.full_like(DELTAS, 1e-17), [1e2, 1e6, 1e10], KL_PER_PSI2, MinimaxConfig())
    np.testing.assert_allclose(lb["lower_bound"], 0.5, rtol=1e-6)
    assert (lb["delta_at_sup"] == 1.0).all()


def test_bound_falls_at_rate_one_half_where_psi_is_linear():
    c = 0.005  # psi = c delta: the inverse bound holds
    ns = np.logspace(6, 10, 9)
    lb = curve_lower_bound(DELTAS, c * DELTAS, ns, KL_PER_PSI2, MinimaxConfig())
    slope = np.polyfit(np.log(ns), np.log(lb["lower_bound"]), 1)[0]
    assert slope == pytest.approx(-0.5, abs=2e-3)  # tolerance: the delta grid's resolution (40 per decade)
    # Pinsker alone gives sup_delta delta/2 (1 - c delta sqrt(n) / (2 sigma)) = sigma / (4 c sqrt(n)); the bound
    # uses the smaller of Pinsker and Bretagnolle-Huber, so it is at least that (up to the grid: 1%)
    pinsker = SIGMA / (4 * c * np.sqrt(ns))
    assert (lb["lower_bound"] >= 0.99 * pinsker).all() and (lb["lower_bound"] <= 1.5 * pinsker).all()
    # the optimum delta = sigma / (c sqrt(n)) leaves the grid (1e-3) for n > 4e8: flagged as extrapolated there
    np.testing.assert_array_equal(lb["extrapolated"], ns > 4e8)


def test_no_extrapolation_where_psi_does_not_shrink_like_delta():
    # psi tending to a positive value as delta -> 0 (the planted over-specified curves): nothing below the grid
    psi, below = psi_on_grid(DELTAS, 0.1 + 0 * DELTAS, [1e-5, 1e-3])
    assert np.isnan(psi[0]) and below[0] and psi[1] == pytest.approx(0.1)


def test_interpolation_never_invents_small_psi_next_to_round_off():
    psi, _ = psi_on_grid([0.1, 1.0], [1e-17, 1e-3], [0.3])
    assert psi[0] == pytest.approx(1e-3)  # the larger neighbour, not a log-log line through 1e-17


def test_two_point_bound_divides_by_the_separation_constant():
    one = two_point_lower_bound([0.2], [0.0], [10], KL_PER_PSI2, 1.0)["lower_bound"].iloc[0]
    eight = two_point_lower_bound([0.2], [0.0], [10], KL_PER_PSI2, 8.0)["lower_bound"].iloc[0]
    assert one == pytest.approx(0.1) and eight == pytest.approx(0.1 / 8)


def test_samples_to_reach():
    ns, values = np.array([1.0, 10, 100]), np.array([1.0, 0.1, 0.01])
    assert samples_to_reach(ns, values, 0.1) == pytest.approx(10)
    assert samples_to_reach(ns, values, np.sqrt(0.1)) == pytest.approx(np.sqrt(10))  # log-log interpolation
    assert samples_to_reach(ns, values, 1e-3) == np.inf
    assert samples_to_reach(ns, values, 2.0, 0.0) == 0.0


# ---------------------------------------------------------------------------------------- separation lemmas

def _pair_sum(est, est_w, a, a_w, b, b_w):
    return float(voronoi_loss(est, est_w, a, a_w) + voronoi_loss(est, est_w, b, b_w))


def _split_pair(R: float, beta: float, barycentric: bool):
    """G* (two atoms, rho = 1) and a split of its first atom into weights beta w, (1 - beta) w: on a line through the
    true atom with the barycentre on it (the witness's shape), or in two unrelated directions; the farther split
    atom at distance R."""
    true = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    w = np.array([1.5, 1.2])
    u = np.array([0.0, 0.6, 0.8])
    if barycentric:
        h_a, h_b = (1 - beta) * u, -beta * u
    else:
        h_a, h_b = u, 0.4 * np.array([0.6, -0.8, 0.0])
    scale = R / max(np.linalg.norm(h_a), np.linalg.norm(h_b))
    split = np.array([true[0] + scale * h_a, true[0] + scale * h_b, true[1]])
    split_w = np.array([beta * w[0], (1 - beta) * w[0], w[1]])
    return true, w, split, split_w


@pytest.mark.parametrize("R,beta,barycentric", [(0.5, 0.5, True), (0.1, 0.3, True), (0.02, 0.8, True),
                                                (0.5, 0.5, False), (0.05, 0.2, False)])
def test_split_pairs_are_separated_by_delta_over_8(R, beta, barycentric):
    true, w, split, split_w = _split_pair(R, beta, barycentric)  # rho = 1: R <= min(rho / 2, 2 sqrt(min(beta, 1-beta)))
    delta = float(voronoi_loss(split, split_w, true, w))
    h = np.linalg.norm(split[:2] - true[0], axis=1)
    assert delta == pytest.approx(w[0] * (beta * h[0] ** 2 + (1 - beta) * h[1] ** 2))
    rng = np.random.default_rng(7)
    worst = np.inf
    for _ in range(3000):
        k = int(rng.integers(1, 5))
        centres = np.concatenate([true, split])[rng.integers(0, 5, size=k)]
        est = centres + rng.normal(size=(k, 3)) * R * rng.choice([0.01, 0.3, 1.0, 3.0])
        est_w = rng.uniform(0.05, 1.6, size=k)
        worst = min(worst, _pair_sum(est, est_w, true, w, split, split_w) / delta)
    for t in np.linspace(0, 1, 21):  # the segment between G* and the split
        path = split.copy()
        path[:2] = true[0] + t * (split[:2] - true[0])
        worst = min(worst, _pair_sum(path, split_w, true, w, split, split_w) / delta)
    print(f"R={R} beta={beta} barycentric={barycentric}: smallest [D(G_hat, G*) + D(G_hat, G_delta)] / delta = "
          f"{worst:.3f}")
    assert 1 / 8 <= worst <= 1.0 + 1e-9  # Lemma 3; the estimate G_delta itself gives exactly 1


def test_exact_pairs_are_separated_by_delta_over_2():
    true = np.array([[0.0, 0.0], [2.0, 0.0]])  # rho = 1
    w = np.array([1.5, 1.2])
    g1 = true + np.array([[0.05, -0.02], [0.0, 0.04]])
    g1_w = w + np.array([0.03, -0.02])
    delta = float(voronoi_loss(g1, g1_w, true, w))
    rng = np.random.default_rng(11)
    worst = np.inf
    for _ in range(3000):  # estimates with L* = 2 atoms (the exact-specified estimator's class)
        est = np.concatenate([true, g1])[rng.integers(0, 4, size=2)] + rng.normal(size=(2, 2)) * rng.choice(
            [0.001, 0.03, 0.3])
        est_w = np.concatenate([w, g1_w])[rng.integers(0, 4, size=2)] + rng.normal(size=2) * 0.02
        worst = min(worst, _pair_sum(est, np.abs(est_w), true, w, g1, g1_w) / delta)
    print(f"smallest [D(G_hat, G*) + D(G_hat, G_1)] / delta = {worst:.3f}")
    assert worst >= 0.5  # Lemma 2


def test_no_uniform_weak_triangle_inequality_with_more_atoms():
    """An estimate with one atom more than G_1 doubles an atom: D(G_hat, .) then weighs that cell's distances
    squared, so D(G_1, G*) / [D(G_hat, G*) + D(G_hat, G_1)] = 1 / eps grows without bound (THEORY section 8 (docs/theory.md))."""
    true, w = np.array([[0.0, 0.0], [10.0, 0.0]]), np.array([1.0, 1.0])
    ratios = []
    for eps in (1e-1, 1e-2, 1e-3):
        g1 = np.array([[eps, 0.0], [10.0, 0.0]])
        est, est_w = np.array([[eps, 0.0], [eps, 0.0], [10.0, 0.0]]), np.array([0.5, 0.5, 1.0])
        ratios.append(float(voronoi_loss(g1, w, true, w)) / _pair_sum(est, est_w, true, w, g1, w))
    np.testing.assert_allclose(ratios, [1e1, 1e2, 1e3], rtol=1e-9)


# ---------------------------------------------------------------------------------------- the figure

def test_figure_is_drawn_from_the_tables_only(tmp_path):
    from reparam.plots_minimax import minimax_figure

    cfg = MinimaxConfig()
    rows = []
    for structure, regime, psi in (("shared_mlp", "exact", 0.005 * DELTAS), ("independent", "over", 0 * DELTAS)):
        lb = curve_lower_bound(DELTAS, psi, [1e2, 1e3, 1e4], KL_PER_PSI2, cfg)
        rows.append(lb.assign(study="synthetic", base="", structure=structure, regime=regime, latent_dim=2,
                              replicate=0, lower_bound_proven=np.nan, separation_constant=np.nan))
    pd.concat(rows).to_csv(tmp_path / "minimax.csv", index=False)
    measured = pd.DataFrame(dict(study="synthetic", structure="shared_mlp", regime="exact", latent_dim=2,
                                 n=[1e2, 1e3], mean=[0.5, 0.2], lo=[0.4, 0.1], hi=[0.6, 0.3]))
    measured.to_csv(tmp_path / "measured.csv", index=False)
    bounds = pd.read_csv(tmp_path / "minimax.csv")  # base: empty in the csv, NaN once read
    fig = minimax_figure(bounds, pd.read_csv(tmp_path / "measured.csv"), "synthetic", "n", "D")
    axes = fig.axes
    assert len(axes) == 4  # 2 columns (structure) x 2 rows (regime)
    exact_mlp = axes[0]  # row exact, column shared_mlp
    drawn = exact_mlp.get_lines()[0].get_ydata()
    table = bounds[(bounds.structure == "shared_mlp") & (bounds.regime == "exact")].sort_values("n")
    np.testing.assert_allclose(drawn, table["lower_bound"])
    over_indep = axes[3]
    np.testing.assert_allclose(over_indep.get_lines()[0].get_ydata(), 0.5, rtol=1e-6)


@pytest.mark.slow
def test_command_writes_every_output_from_the_committed_tables(tmp_path):
    """`reparam minimax` on the committed figures/ (about a minute: the witness pairs): every output, and the
    report's verdicts are the table's."""
    from pathlib import Path

    from reparam.sims.minimax import MinimaxConf, run

    figures = Path(__file__).resolve().parents[1] / "figures"
    assert run(MinimaxConf(figures=str(figures), out=str(tmp_path))) == 0
    for name in ("minimax.csv", "minimax_measured.csv", "minimax_targets.csv", "minimax_verdicts.csv", "minimax.png",
                 "minimax.pdf", "minimax_planted.png", "minimax_planted.pdf", "report.md", "provenance.json"):
        assert (tmp_path / name).is_file(), name
    verdicts = pd.read_csv(tmp_path / "minimax_verdicts.csv")
    witness = verdicts[(verdicts.study == "synthetic") & (verdicts.structure == "independent")
                       & (verdicts.regime == "over")].iloc[0]
    assert witness.verdict == "does not vanish" and witness.lower_bound_proven_at_n_max > 0
    shared = verdicts[(verdicts.study == "synthetic") & (verdicts.structure == "shared_mlp")
                      & (verdicts.regime == "exact")].iloc[0]
    assert shared.verdict == "falls like n^-1/2" and shared.verdict_proven == "falls like n^-1/2"
    over = verdicts[(verdicts.study == "synthetic") & (verdicts.structure == "shared_mlp") & (verdicts.regime == "over")
                    & (verdicts.latent_dim == 2)].iloc[0]
    assert over.verdict_proven == "falls like n^-1/2"  # split pairs along searched directions (psi > 0)
    report = (tmp_path / "report.md").read_text()
    assert f"| {witness.verdict} (" in report and f"| {witness.verdict_proven} (" in report
