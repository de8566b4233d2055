"""The fused sample-space pass (reparam/kernels/prefix_pass.c) against the tensor pass of reparam.fit, which the
autograd tests of test_fit_solver.py check against autograd: same sums to rounding, for every shape the kernel
loops over, partial sample blocks, fits in any replicate order, threads; NaN propagation; the build fallback."""
import shutil

import pytest
import torch

from reparam import kernels
from reparam.fit import PrefixLeastSquares, PrefixSpaceTerms, SolverConfig
from reparam.study import Setting, make_starts
from reparam.truth import canonical_truth, random_truth
from reparam.validation import ConfigError

needs_kernel = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler: the fused pass cannot be built")


@pytest.fixture
def fresh_kernel(monkeypatch, tmp_path):
    """Each test builds (or fails to build) the kernel under its own environment, then the default is restored."""
    kernels.reset()
    yield monkeypatch
    kernels.reset()


def _terms(d, m, L, n, reps, fused, seed=3):
    truth = random_truth("shared_mlp", seed, d=d, m=m, r=2)
    X, Y = truth.sample_replicates(n, list(range(reps)))
    return truth, PrefixSpaceTerms(truth.structure, truth.experts, L, X, Y, chunk_elements=1000, fused=fused)


@needs_kernel
@pytest.mark.parametrize("d,m,L,n", [(2, 1, 2, 1500), (2, 1, 3, 1001), (3, 2, 3, 803), (8, 4, 3, 97), (2, 1, 1, 7), (2, 1, 2, 63)])
def test_fused_sums_equal_the_tensor_pass(d, m, L, n):
    truth, fused = _terms(d, m, L, n, 3, None)
    _, tensor = _terms(d, m, L, n, 3, False)
    P = truth.structure.n_params(L)
    g = torch.Generator().manual_seed(d * 100 + L)
    theta = (torch.rand(5, P, generator=g, dtype=torch.float64) - 0.5) * 1.6
    rep = torch.tensor([2, 0, 1, 2, 0])  # fits in any replicate order, replicates used twice
    for exact in (True, False):
        ours, ref = fused._prefix_terms(theta, rep, exact), tensor._prefix_terms(theta, rep, exact)
        for name, a, b in zip(("loss", "gradient", "J^T J", "R"), ours, ref):
            if b is None:
                assert a is None
                continue
            scale = b.abs().amax().clamp_min(1e-300)
            assert (a - b).abs().amax() <= 1e-12 * scale, (name, exact)
    assert torch.allclose(fused.loss(theta, rep), tensor.loss(theta, rep), rtol=1e-12, atol=0)


@needs_kernel
def test_threads_split_the_fits_without_changing_a_bit():
    truth, terms = _terms(2, 1, 3, 2000, 4, None)
    theta = torch.linspace(-0.5, 0.5, 7 * truth.structure.n_params(3), dtype=torch.float64).reshape(7, -1)
    rep = torch.tensor([0, 1, 2, 3, 0, 1, 2])
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = terms.hessian(theta, rep)
        torch.set_num_threads(2)
        two = terms.hessian(theta, rep)
    finally:
        torch.set_num_threads(old)
    for a, b in zip(one, two):
        assert torch.equal(a, b)


@needs_kernel
def test_nonfinite_parameters_give_nan_like_the_tensor_pass():
    truth, terms = _terms(2, 1, 3, 500, 1, None)
    theta = torch.zeros(2, truth.structure.n_params(3), dtype=torch.float64)
    theta[0, 0] = float("nan")
    theta[1, 1] = float("inf")
    loss, grad, H, _ = terms.hessian(theta, torch.tensor([0, 0]))
    assert torch.isnan(loss).all() and torch.isnan(grad).any(-1).all() and torch.isnan(H).flatten(1).any(-1).all()


@needs_kernel
def test_solver_reaches_the_same_fits_with_either_pass(fresh_kernel):
    truth = canonical_truth("shared_mlp")
    X, Y = truth.sample_replicates(3000, [0, 1, 2])
    setting = Setting(structure="shared_mlp", regime="over")
    starts = torch.stack([make_starts(setting, truth, 3, 3000, s) for s in (0, 1, 2)])
    losses = {}
    for choice in ("tensor", "fused"):
        fresh_kernel.setenv("REPARAM_PASS", choice)
        kernels.reset()
        assert kernels.kernel_status()["pass"] == choice
        est = PrefixLeastSquares(truth.structure, truth.experts, 3, SolverConfig()).fit(X, Y, starts)
        losses[choice] = est.best_loss_
    # both stop inside the statistical rule's tolerance of the same minimum: 0.01 noise units sigma^2 / n
    unit = losses["tensor"] / 3000
    assert ((losses["fused"] - losses["tensor"]).abs() <= 0.01 * unit).all()


def test_without_a_compiler_the_tensor_pass_runs(fresh_kernel, tmp_path):
    fresh_kernel.setenv("CC", "no-such-compiler-xyz")
    fresh_kernel.setenv("REPARAM_KERNELS", str(tmp_path))
    status = kernels.kernel_status()
    assert status["pass"] == "tensor" and "no C compiler" in status["why"]
    truth = canonical_truth("independent")
    X, Y = truth.sample_replicates(300, [0])
    terms = PrefixSpaceTerms(truth.structure, truth.experts, 2, X, Y)
    assert torch.isfinite(terms.loss(truth.theta[None], torch.tensor([0]))).all()
    fresh_kernel.setenv("REPARAM_PASS", "fused")
    kernels.reset()
    with pytest.raises(ConfigError, match="REPARAM_PASS=fused"):
        kernels.pass_kernel()
    fresh_kernel.setenv("REPARAM_PASS", "fast")
    kernels.reset()
    with pytest.raises(ConfigError, match="REPARAM_PASS"):
        kernels.pass_kernel()


@needs_kernel
def test_kernel_is_built_once_into_the_cache_folder(fresh_kernel, tmp_path):
    fresh_kernel.setenv("REPARAM_KERNELS", str(tmp_path))
    assert kernels.kernel_status()["pass"] == "fused"
    built = list(tmp_path.glob("prefix_pass-*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    kernels.reset()
    assert kernels.kernel_status()["path"] == str(built[0]) and built[0].stat().st_mtime_ns == stamp
