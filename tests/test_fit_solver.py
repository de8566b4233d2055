"""The batched exact-Hessian solver (issue 5): derivatives against autograd, batching invariance,
honest convergence flags, over-specified behaviour. Fixed seeds; every assertion can fail."""
import dataclasses

import pytest
import torch

from reparam.fit import PrefixLeastSquares, PrefixSpaceTerms, SolverConfig
from reparam.study import Setting, make_starts, run_cell
from reparam.truth import canonical_truth, random_truth


@pytest.mark.parametrize("name", ["independent", "shared_linear", "shared_mlp", "shared_learned"])
def test_hessian_and_gauss_newton_match_autograd(name):
    truth = canonical_truth(name)
    X, Y = truth.sample_replicates(1500, [3, 4])
    theta = torch.cat([make_starts(Setting(init=dataclasses.replace(Setting().init, scale=0.3)), truth, 3, 1500, s)
                       for s in (0, 1)])
    rep = torch.tensor([1, 0])
    terms = PrefixSpaceTerms(truth.structure, truth.experts, 3, X, Y, chunk_elements=1000)  # several chunks
    loss, grad, H, gn = terms.hessian(theta, rep)
    for i in range(2):
        f = lambda t: terms.loss(t[None], rep[i:i + 1])[0]
        assert torch.allclose(grad[i], torch.autograd.functional.jacobian(f, theta[i]), rtol=1e-9, atol=1e-13)
        assert torch.allclose(H[i], torch.autograd.functional.hessian(f, theta[i]), rtol=1e-9, atol=1e-12)
    # Gauss-Newton matrix = 2/n J^T J with J the autograd Jacobian of the residuals
    s = truth.structure

    def residuals(t, r):
        from reparam.moe import prefix_moe
        k, v, b = s.prefix(t, 3)
        return (prefix_moe(X[r], truth.experts, k, v, b) - Y[r]).reshape(-1)

    J = torch.autograd.functional.jacobian(lambda t: residuals(t, 1), theta[0])
    assert torch.allclose(gn[0], 2.0 / 1500 * J.T @ J, rtol=1e-9, atol=1e-12)
    assert torch.allclose(terms.gauss_newton(theta, rep)[2], gn, rtol=1e-12, atol=1e-15)


def test_hessian_with_several_outputs_and_dimensions():
    truth = random_truth("shared_mlp", 3, d=3, m=2, r=2)
    X, Y = truth.sample_replicates(800, [5])
    theta = torch.as_tensor(torch.linspace(-0.6, 0.7, truth.structure.n_params(3)), dtype=torch.float64)[None]
    terms = PrefixSpaceTerms(truth.structure, truth.experts, 3, X, Y)
    _, _, H, _ = terms.hessian(theta, torch.tensor([0]))
    expected = torch.autograd.functional.hessian(lambda t: terms.loss(t[None], torch.tensor([0]))[0], theta[0])
    assert torch.allclose(H[0], expected, rtol=1e-9, atol=1e-12)


def test_batched_fit_equals_fitting_each_replicate_alone():
    truth = canonical_truth("shared_mlp")
    seeds = [11, 12, 13]
    X, Y = truth.sample_replicates(2000, seeds)
    starts = torch.stack([make_starts(Setting(regime="over"), truth, 3, 2000, sd) for sd in seeds])
    config = SolverConfig(max_iter=60)
    together = PrefixLeastSquares(truth.structure, truth.experts, 3, config).fit(X, Y, starts)
    for r in range(3):
        alone = PrefixLeastSquares(truth.structure, truth.experts, 3, config).fit(X[r:r + 1], Y[r:r + 1], starts[r:r + 1])
        assert together.status_[r] == alone.status_[0]
        assert int(together.n_iter_[r, 0]) == int(alone.n_iter_[0, 0])
        assert torch.allclose(together.theta_[r], alone.theta_[0], rtol=1e-8, atol=1e-10)


def test_converged_flag_means_a_local_minimum():
    """Every fit flagged converged has a tiny gradient and a positive semi-definite Hessian."""
    truth = canonical_truth("shared_mlp")
    seeds = [1, 2, 3, 4]
    X, Y = truth.sample_replicates(3000, seeds)
    starts = torch.stack([make_starts(Setting(), truth, 2, 3000, sd) for sd in seeds])
    est = PrefixLeastSquares(truth.structure, truth.experts, 2, SolverConfig(stop="strict")).fit(X, Y, starts)
    assert est.converged_.all(), est.status_
    _, grad, H, _ = est.terms_.hessian(est.theta_[:, 0], torch.arange(4))
    assert grad.norm(dim=-1).max() < 1e-6
    assert torch.linalg.eigvalsh(H)[:, 0].min() > 0
    # a budget too small to converge is never reported as converged
    short = PrefixLeastSquares(truth.structure, truth.experts, 2, SolverConfig(max_iter=1)).fit(X, Y, starts)
    assert not short.converged_.any() and all(s == ["max_iter"] for s in short.status_)


def test_gauss_newton_method_is_available_and_converges_no_more_often_over_specified():
    setting = Setting(regime="over", solver=SolverConfig(max_iter=150))
    newton = run_cell(setting, 3000, [0, 1, 2, 3], base_seed=5)
    gn = run_cell(dataclasses.replace(setting, solver=SolverConfig(max_iter=150, method="gauss_newton")), 3000,
                  [0, 1, 2, 3], base_seed=5)
    assert all(r["rel_gap"] <= 1e-8 for r in newton + gn)  # both stay below the truth's loss
    assert sum(r["converged"] for r in newton) >= sum(r["converged"] for r in gn)


def test_over_specified_shared_mlp_certified_at_moderate_n():
    rows = run_cell(Setting(regime="over"), 2000, list(range(6)), base_seed=3)
    assert sum(r["certified"] for r in rows) >= 5, [(r["status"], r["n_iter"]) for r in rows]
    assert all(r["rel_gap"] <= 1e-8 for r in rows)


def test_solver_config_checks_new_fields():
    with pytest.raises(ValueError, match="method"):
        SolverConfig(method="adam")
    with pytest.raises(ValueError, match="num_threads"):
        SolverConfig(num_threads=-1)


def test_num_threads_is_restored():
    before = torch.get_num_threads()
    truth = canonical_truth("shared_mlp")
    X, Y = truth.sample_replicates(500, [1])
    starts = make_starts(Setting(), truth, 2, 500, 1)[None]
    PrefixLeastSquares(truth.structure, truth.experts, 2, SolverConfig(num_threads=1, max_iter=3)).fit(X, Y, starts)
    assert torch.get_num_threads() == before
