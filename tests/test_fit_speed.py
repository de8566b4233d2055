"""Solver behaviour added for speed: the statistical stopping rule, multi-start pruning, the device
option, no fixed first-call cost. Fixed seeds; every assertion can fail."""
import subprocess
import sys

import pytest
import torch

from reparam.fit import PrefixLeastSquares, SolverConfig, stopping_tolerance
from reparam.validation import check_device
from reparam.study import InitConfig, Setting, make_starts, run_cell
from reparam.truth import canonical_truth


def _problem(structure="shared_mlp", regime="exact", n=3000, seeds=(1, 2, 3, 4), init=None):
    setting = Setting(structure=structure, regime=regime, init=init or InitConfig())
    truth = canonical_truth(structure)
    L = truth.n_atoms + (1 if regime == "over" else 0)
    X, Y = truth.sample_replicates(n, list(seeds))
    starts = torch.stack([make_starts(setting, truth, L, n, sd) for sd in seeds])
    return truth, L, X, Y, starts


def test_statistical_stop_is_a_local_minimum_at_the_statistical_tolerance():
    """Statistical stop: PSD curvature, Newton decrement <= stat_tol * sigma_hat^2 / n at the end, fewer or
    equal iterations than the strict rule, and the distance to the strict fit (in the Hessian norm) far
    below the statistical error sigma^2 P / n."""
    truth, L, X, Y, starts = _problem()
    n, m = X.shape[1], Y.shape[2]
    stat = PrefixLeastSquares(truth.structure, truth.experts, L, SolverConfig(stop="statistical")).fit(X, Y, starts)
    strict = PrefixLeastSquares(truth.structure, truth.experts, L, SolverConfig(stop="strict")).fit(X, Y, starts)
    assert stat.converged_.all() and strict.converged_.all()
    assert (stat.n_iter_ <= strict.n_iter_).all() and stat.n_iter_.sum() < strict.n_iter_.sum()
    loss, grad, H, _ = stat.terms_.hessian(stat.theta_[:, 0], torch.arange(4))
    assert torch.linalg.eigvalsh(H)[:, 0].min() > 0
    decrement = 0.5 * (grad.unsqueeze(1) @ torch.linalg.solve(H, grad.unsqueeze(-1))).flatten()
    tau = SolverConfig().stat_tol
    assert (decrement <= tau * loss / (m * n) * (1 + 1e-6)).all()
    assert (decrement > SolverConfig().ftol * loss).any()  # the rule is really looser than the strict one here
    step = (stat.theta_ - strict.theta_)[:, 0]
    h_dist = 0.5 * (step.unsqueeze(1) @ H @ step.unsqueeze(-1)).flatten()
    P = truth.structure.n_params(L)
    statistical = loss / m * P / n  # sigma^2 P / n
    assert (h_dist <= 4 * tau * loss / (m * n)).all(), h_dist / statistical
    assert (h_dist / statistical).max() < 0.01
    assert ((stat.loss_ - strict.loss_) / loss[:, None]).abs().max() <= 4 * tau / (m * n)


def test_stopping_tolerance_rules():
    loss = torch.tensor([0.01, 1.0], dtype=torch.float64)
    assert torch.equal(stopping_tolerance(loss, 1000, 1, SolverConfig(stop="strict")), 1e-10 * loss)
    assert torch.allclose(stopping_tolerance(loss, 1000, 2, SolverConfig()), 0.01 * loss / 2000)
    # never stricter than the strict rule, even at huge n
    assert torch.equal(stopping_tolerance(loss, 10**12, 1, SolverConfig()), 1e-10 * loss)
    with pytest.raises(ValueError, match="stop"):
        SolverConfig(stop="loose")
    with pytest.raises(ValueError, match="prune_margin"):
        SolverConfig(prune_margin=0.0)


def test_pruning_keeps_the_eventual_best_start():
    """Mixed starts on exact shared_mlp: some random starts are slow or fall into worse local minima.
    Pruning stops some of them early; every replicate still ends at the best loss of the run without
    pruning (up to the statistical stopping tolerance: starts that reach the same minimum tie to ~1e-4
    noise units, and then either may be reported), and no pruned start ended clearly better than the best."""
    truth, L, X, Y, starts = _problem(n=3000, seeds=tuple(range(20, 28)), init=InitConfig(mode="mixed", n_starts=5))
    n = X.shape[1]
    full = PrefixLeastSquares(truth.structure, truth.experts, L, SolverConfig(prune=False)).fit(X, Y, starts)
    fast = PrefixLeastSquares(truth.structure, truth.experts, L, SolverConfig(prune=True)).fit(X, Y, starts)
    assert fast.pruned_.sum() >= 2, "the seeded case must exercise pruning"
    assert not full.pruned_.any()
    tol = SolverConfig().stat_tol * full.best_loss_ / n  # tau * sigma_hat^2 / n
    assert ((fast.best_loss_ - full.best_loss_).abs() <= tol).all()
    pruned_final = torch.where(fast.pruned_, full.loss_, torch.full_like(full.loss_, float("inf")))
    assert (pruned_final.min(1).values >= full.best_loss_ - tol).all()  # none was the unique best
    unique = (full.loss_ - full.best_loss_[:, None] > tol[:, None]).sum(1) == full.loss_.shape[1] - 1
    assert torch.equal(fast.best_start_[unique], full.best_start_[unique])
    assert fast.n_iter_.sum() < full.n_iter_.sum()
    for r in range(len(fast.status_)):
        for s, status in enumerate(fast.status_[r]):
            assert (status == "pruned") == bool(fast.pruned_[r, s])
            if status == "pruned":  # a pruned start stopped clearly above its replicate's best
                assert fast.loss_[r, s] > fast.best_loss_[r] * (1 + 100 / n)


def test_single_start_is_never_pruned():
    truth, L, X, Y, starts = _problem(regime="over", n=2000, seeds=(5, 6))
    est = PrefixLeastSquares(truth.structure, truth.experts, L, SolverConfig(prune_after=1)).fit(X, Y, starts)
    assert not est.pruned_.any()


def test_device_cpu_runs_and_cuda_without_gpu_is_a_config_error():
    rows = run_cell(Setting(device="cpu", solver=SolverConfig(max_iter=5)), 500, [0])
    assert rows[0]["device"] == "cpu"
    assert check_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="device"):
        check_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda'"):
            check_device("cuda")
        with pytest.raises(ValueError, match="device='cuda'"):
            run_cell(Setting(device="cuda"), 500, [0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fit_matches_cpu():
    truth, L, X, Y, starts = _problem(n=2000, seeds=(1, 2))
    cpu = PrefixLeastSquares(truth.structure, truth.experts, L).fit(X, Y, starts)
    gpu = PrefixLeastSquares(truth.structure, truth.experts, L, device="cuda").fit(X, Y, starts)
    assert torch.allclose(cpu.best_loss_, gpu.best_loss_, rtol=1e-10)


def test_first_fit_loads_no_compiler_stack():
    """The first fit of a process must not import torch._dynamo or sympy (they cost ~1-2 s once)."""
    code = ("import sys, torch; from reparam.study import Setting, run_cell; "
            "run_cell(Setting(solver={}), 500, [0]); "
            "print(sorted(m for m in ('torch._dynamo', 'sympy') if m in sys.modules))")
    code = code.format("__import__('reparam.fit').fit.SolverConfig(max_iter=5)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
