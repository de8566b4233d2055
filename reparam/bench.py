"""Benchmarks of the batched estimator (issue 5): baseline vs ours, paper-grade study, closeness to the
machine's peak, scaling. Library code; `python -m sims.bench` is the thin CLI that writes BENCHMARKS.md.

Every number is measured in ONE process run, and comparisons are ratios within that run (the machine
is shared, absolute timings are noisy).
"""
from __future__ import annotations

import os
import resource
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import torch

from .fit import PrefixLeastSquares, PrefixSpaceTerms, SolverConfig
from .moe import DTYPE, prefix_moe
from .study import Setting, build_truth, data_seed, make_starts, n_fitted_atoms, run_cell
from .truth import random_truth

STRUCTURES = ("independent", "shared_linear", "shared_mlp")  # the three theorem structures
REGIMES = ("exact", "over")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def matmul_peak_gflops(size: int = 1536, repeats: int = 5) -> float:
    """The machine's own float64 peak, measured: best of `repeats` square matrix products."""
    a = torch.randn(size, size, dtype=DTYPE)
    b = torch.randn(size, size, dtype=DTYPE)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        tic = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - tic)
    return 2.0 * size**3 / best / 1e9


def _problem(structure: str, regime: str, n: int, replicates: int, base_seed: int = 0):
    setting = Setting(structure=structure, regime=regime)
    truth = build_truth(setting)
    L = n_fitted_atoms(setting, truth)
    seeds = [data_seed(base_seed, r) for r in range(replicates)]
    X, Y = truth.sample_replicates(n, seeds)
    starts = torch.stack([make_starts(setting, truth, L, n, sd) for sd in seeds])
    return truth, L, X, Y, starts


def adam_baseline_fit(truth, L: int, X, Y, start, target_loss: float, lr: float = 0.01, max_steps: int = 5000):
    """The peer-study way: one replicate, full-batch PyTorch Adam with autograd, stopped as soon as the
    loss is within the target (= our final loss + tolerance). Returns (seconds, steps, final loss, reached)."""
    s, experts = truth.structure, truth.experts
    theta = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=lr)
    tic = time.perf_counter()
    loss_value = float("inf")
    for step in range(1, max_steps + 1):
        opt.zero_grad()
        keys, values, biases = s.prefix(theta, L)
        loss = (Y - prefix_moe(X, experts, keys, values, biases)).square().sum(-1).mean()
        loss_value = float(loss)
        if loss_value <= target_loss:
            return time.perf_counter() - tic, step, loss_value, True
        loss.backward()
        opt.step()
    return time.perf_counter() - tic, max_steps, loss_value, False


def baseline_vs_ours(structure: str = "shared_mlp", regime: str = "exact", n: int = 10_000, replicates: int = 5,
                     rel_tol: float = 1e-8, max_steps: int = 5000) -> dict:
    """Same model, data, starts; Adam stops when its loss <= our final loss * (1 + rel_tol) (rel_tol defaults
    to the certificate's gap_tol). Both are warmed up once untimed (library initialisation)."""
    truth, L, X, Y, starts = _problem(structure, regime, n, replicates)
    PrefixLeastSquares(truth.structure, truth.experts, L, SolverConfig(max_iter=2)).fit(X, Y, starts)
    adam_baseline_fit(truth, L, X[0], Y[0], starts[0, 0], 0.0, max_steps=3)
    tic = time.perf_counter()
    est = PrefixLeastSquares(truth.structure, truth.experts, L, SolverConfig()).fit(X, Y, starts)
    ours = time.perf_counter() - tic
    rows = []
    for r in range(replicates):
        target = float(est.loss_[r, 0]) * (1.0 + rel_tol)
        sec, steps, final, reached = adam_baseline_fit(truth, L, X[r], Y[r], starts[r, 0], target, max_steps=max_steps)
        rows.append(dict(replicate=r, seconds=sec, steps=steps, loss=final, target=target, reached=reached,
                         ours_loss=float(est.loss_[r, 0]), ours_iter=int(est.n_iter_[r, 0]), ours_status=est.status_[r][0]))
    df = pd.DataFrame(rows)
    base = df.seconds.sum()
    return dict(structure=structure, regime=regime, n=n, replicates=replicates, rel_tol=rel_tol,
                baseline_seconds=base, ours_seconds=ours, max_steps=max_steps, speedup=base / ours, all_reached=bool(df.reached.all()),
                per_fit=df)


def paper_study(replicates: int = 20, n_values=None, structures=STRUCTURES, regimes=REGIMES,
                solver: SolverConfig | None = None, log=print) -> tuple[pd.DataFrame, pd.DataFrame]:
    """10 log-spaced n in [1e3, 1e5] x replicates x structures x regimes through reparam.study.run_cell.
    Returns (rows, per-cell timings)."""
    n_values = n_values if n_values is not None else np.unique(np.logspace(3, 5, 10).round().astype(int))
    rows, cells = [], []
    for structure in structures:
        for regime in regimes:
            setting = Setting(structure=structure, regime=regime, solver=solver or SolverConfig())
            truth = build_truth(setting)
            for n in n_values:
                tic = time.perf_counter()
                out = run_cell(setting, int(n), list(range(replicates)), base_seed=0, truth=truth)
                sec = time.perf_counter() - tic
                rows += out
                df = pd.DataFrame(out)
                cells.append(dict(structure=structure, regime=regime, n=int(n), seconds=sec,
                                  certified=df.certified.mean(), max_iter=int(df.n_iter.max())))
                log(f"  {structure:14s} {regime:5s} n={int(n):6d} {sec:7.2f}s certified={df.certified.mean():.2f} "
                    f"iters<= {int(df.n_iter.max())}")
    return pd.DataFrame(rows), pd.DataFrame(cells)


def _best_time(fn, repeats: int = 3) -> float:
    """Seconds of the fastest of `repeats` calls, after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - tic)
    return best


def _matmul_flops(fn) -> tuple[float, float]:
    """(seconds of the best of 3 runs, matrix-product flops counted by the PyTorch profiler)."""
    best = _best_time(fn)
    with torch.profiler.profile(with_flops=True) as prof:
        fn()
    flops = sum(e.flops for e in prof.key_averages() if e.flops)
    return best, float(flops)


def _elementwise_flops(B: int, n: int, L: int, d: int, m: int, exact: bool) -> float:
    """Hand count of the elementwise work per evaluation (exp counted as 1): forward softmax and output,
    Jacobian rows, residual weights. Documented so the throughput can be re-derived."""
    q = d + 1
    forward = L * q * 2 + 4 * L + 6 + 2 * L * m + 2 * m  # scores, softmax, f, r
    grad = L * m * 3 + L * q + 2 * L * m + 2 * m  # u, w u, J_gate, rho, S
    per = forward + grad + L * q * m + (2 * L * q if exact else 0)
    return float(B * n * per)


def throughput(n: int, replicates: int = 20, structure: str = "shared_mlp", regime: str = "over") -> dict:
    """Achieved GFLOP/s of one loss+gradient(+curvature) evaluation of our solver at sample size n."""
    truth, L, X, Y, starts = _problem(structure, regime, n, replicates)
    terms = PrefixSpaceTerms(truth.structure, truth.experts, L, X, Y, SolverConfig().chunk_elements)
    theta, rep = starts[:, 0], torch.arange(replicates)
    out = {}
    for name, fn, exact in (("loss+gradient+Hessian", lambda: terms.hessian(theta, rep), True),
                            ("loss+gradient+GN", lambda: terms.gauss_newton(theta, rep), False)):
        sec, mm = _matmul_flops(fn)
        ew = _elementwise_flops(replicates, n, L, truth.d, truth.m, exact)
        out[name] = dict(seconds=sec, matmul_gflops=mm / sec / 1e9, total_gflops=(mm + ew) / sec / 1e9)
    return out


def scaling(replicates: int = 20, log=print) -> pd.DataFrame:
    """Seconds per solver iteration (exact-Hessian evaluation + trial loss) against n, fitted atoms L and d."""
    rows = []

    def one(axis, value, truth, L, n):
        seeds = [data_seed(0, r) for r in range(replicates)]
        X, Y = truth.sample_replicates(n, seeds)
        P = truth.structure.n_params(L)
        theta = torch.as_tensor(np.random.default_rng(0).uniform(-0.5, 0.5, size=(replicates, P)), dtype=DTYPE)
        terms = PrefixSpaceTerms(truth.structure, truth.experts, L, X, Y, SolverConfig().chunk_elements)
        rep = torch.arange(replicates)
        best = _best_time(lambda: (terms.hessian(theta, rep), terms.loss(theta, rep)))
        rows.append(dict(axis=axis, value=value, n=n, L=L, d=truth.d, seconds=best))
        log(f"  scaling {axis}={value}: {best * 1e3:.1f} ms per iteration ({replicates} fits)")

    base = build_truth(Setting(structure="shared_mlp"))
    for n in np.unique(np.logspace(3, 5, 5).round().astype(int)):
        one("n", int(n), base, 3, int(n))
    for L in (2, 3, 4, 6, 8):
        one("L", L, base, L, 10_000)
    for d in (2, 4, 8, 16, 32):
        one("d", d, random_truth("shared_mlp", seed=1, d=d, m=1, r=2), 3, 10_000)
    return pd.DataFrame(rows)


def plot_scaling(df: pd.DataFrame, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.3))
    labels = {"n": "sample size n (L'=3, d=2)", "L": "fitted atoms L' (n=1e4, d=2)", "d": "input dimension d (n=1e4, L'=3)"}
    for ax, axis in zip(axes, ("n", "L", "d")):
        sub = df[df.axis == axis].sort_values("value")
        ax.loglog(sub.value, sub.seconds * 1e3, "o-", color="C0")
        x = sub.value.to_numpy(float)
        ax.loglog(x, sub.seconds.iloc[-1] * 1e3 * x / x[-1], ":", color="grey", label="linear")
        ax.set_xlabel(labels[axis])
        ax.set_ylabel("ms per iteration (20 fits)")
        ax.legend(frameon=False)
    fig.suptitle("Batched exact-Hessian solver: time per iteration")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
