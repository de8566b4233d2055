"""Benchmarks of the batched estimator: against scipy.optimize.least_squares per fit, against the machine's
memory bandwidth, the statistical against the strict stopping rule, and the paper-grade multi-start study.
Library code; `reparam bench` is the thin CLI that writes BENCHMARKS.md.

Every comparison is a ratio of numbers measured in ONE process run (the machine may be shared: absolute
timings move with its load, ratios measured together much less).
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
from .structures import with_theorem
from .study import STUDY_INIT, Setting, build_truth, data_seed, make_starts, n_fitted_atoms
from .sweep import StudyPlan, run_plan
from .truth import random_truth

# the structures a theorem covers, read from the registry at each use (Theorem 1, 2, 3: independent, shared_linear,
# shared_mlp, and any structure registered later that declares a theorem)
STRUCTURES = with_theorem()
REGIMES = ("exact", "over")
PAPER_N = tuple(int(n) for n in np.unique(np.logspace(3, 5, 10).round().astype(int)))


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _best_time(fn, repeats: int = 3) -> float:
    """Seconds of the fastest of `repeats` calls, after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - tic)
    return best


# ---- memory bandwidth -------------------------------------------------------------------------------
def stream_triad_gbs(n: int = 20_000_000, repeats: int = 5) -> float:
    """STREAM-like triad a = b + s c on float64 vectors of n elements (160 MB each, far above any cache),
    with torch's current thread count. Bytes per element: 24 (read b and c, write a; STREAM's convention,
    write-allocate traffic not counted). Best of `repeats`, in GB/s (1e9 bytes)."""
    b = torch.rand(n, dtype=DTYPE)
    c = torch.rand(n, dtype=DTYPE)
    a = torch.empty(n, dtype=DTYPE)
    best = _best_time(lambda: torch.add(b, c, alpha=3.0, out=a), repeats)
    return 24.0 * n / best / 1e9


def pass_bytes(L: int, d: int, m: int, exact: bool = True, indexed: bool = True) -> dict:
    """Bytes per fit and sample that one loss+gradient(+Hessian) pass of PrefixSpaceTerms moves.
    The fused pass moves only the compulsory bytes; the tensor pass moves `as_written`.

    compulsory: the data every implementation must read once per fit: a = [1, x] (d + 1), y (m), the
        pretrained part's mean output (m) and log-weight (1), float64.
    as_written: the traffic of the tensor program in reparam.fit as written (every operation reads its
        inputs and writes its output once per sample; matrix products read their operands once; the
        small per-fit parameters are not counted): the hand count below, operation by operation.
    """
    q, Lq, Lm = d + 1, L * (d + 1), L * m
    Pz = Lq + Lm
    ops = [  # (reads, writes) in float64 numbers per fit and sample
        ((q + 2 * m + 1), (q + 2 * m + 1)) if indexed else (0, 0),  # data rows of this fit's replicate
        (q, L), (L, 1), (2, 1), (L + 1, L), (L, L), (2, 1), (1, 1),  # scores, max, shift, exp (prompts, pretrained)
        (L, 1), (2, 1), (1, 1), (L + 1, L),  # softmax normaliser and weights
        (2, 1), (1 + m, m), (L, m), (2 * m, m), (2 * m, m),  # f and the residual r
        (m, Lm), (L + Lm, Lm),  # u = v - f, w u
        (Lm + q, Lq * m), (L, L * m * m), (Pz * m, 0),  # Jacobian rows (gate, value) and J J^T
        (Lm + m, Lm), (Lm, L), (L + q, 0),  # rho and the gate gradient
        (L + m, Lm), (Lm, 0), (m, m), (m, 0),  # S = w r, the value gradient, the loss
    ]
    if exact:
        ops += [(L + q, Lq), (L + q, Lq), (2 * Lq, 0), (Lq + q, 0), (Lq + Lm, 0), (Lm + q, 0)]  # P, Q and products
    as_written = 8.0 * sum(r + w for r, w in ops)
    return dict(compulsory=8.0 * (q + 2 * m + 1), as_written=as_written)


def compute_peak_gflops(size: int = 1536, repeats: int = 5) -> float:
    """The machine's float64 compute roofline with torch's current thread count: GFLOP/s of a square matrix
    product (MKL's dgemm: FMA-bound, the highest float64 rate a program reaches on this CPU), 2 size^3 flops,
    best of `repeats`."""
    a = torch.rand(size, size, dtype=DTYPE)
    b = torch.rand(size, size, dtype=DTYPE)
    best = _best_time(lambda: a @ b, repeats)
    return 2.0 * size ** 3 / best / 1e9


EXP_FLOPS = 20  # one float64 exp counted as 20 flops (libmvec: range reduction + a degree ~11 polynomial in FMAs)


def pass_flops(L: int, d: int, m: int, exact: bool = True) -> dict:
    """Floating-point operations per fit and sample of the fused pass (reparam/kernels/prefix_pass.c), counted
    from its loops (a multiply-add is 2 flops, a compare, add, multiply or divide 1, an exp EXP_FLOPS).

    The count is also the arithmetic every implementation of these sums needs, up to how the gate-gate block is
    factorised: the kernel pays one multiply-add per unique Hessian entry and sample, which is the minimum for a
    sum over samples of per-sample products."""
    q, TL, Tq = d + 1, L * (L + 1) // 2, (d + 1) * (d + 2) // 2
    ops = {
        "softmax": 2 * L * q + 4 * L + 4 + EXP_FLOPS * (L + 1),  # scores, shift, L + 1 exps, normalisation
        "residual": 3 * m + 2 * L * m,  # f = w0 mu0 + sum_i w_i v_i, r = (f - y) mask
        "coefficients": 4 * L * m + Tq + 2 * m * TL + L * L * m,  # wu, rho, a_p a_p', wu_i . wu_j, wu_ic w_j
        "sums": 2 * m + 2 * L * q + 2 * L * m + 2 * TL * Tq + 2 * L * L * m * q + 2 * TL,  # loss, gradients, J^T J
    }
    if exact:  # the residual curvature R: its coefficients and sums
        ops["coefficients"] += 4 * TL + 3 * L * L * m
        ops["sums"] += 2 * TL * Tq + 2 * L * L * m * q
    return dict(ops, total=sum(ops.values()))


def pass_speed(n: int, replicates: int = 20, n_starts: int = 5, structure: str = "shared_mlp",
               regime: str = "over") -> dict:
    """Seconds of one loss+gradient+Hessian pass (`PrefixSpaceTerms.hessian`, the chain to native parameters
    included) over replicates x n_starts fits at sample size n, with the fused pass and with the tensor pass, and
    what each achieves: ns per fit and sample, GFLOP/s (pass_flops) and bytes/s (pass_bytes)."""
    from . import kernels

    truth, L, X, Y, starts = problem(structure, regime, n, replicates, n_starts)
    R, S, P = starts.shape
    theta, rep = starts.reshape(R * S, P), torch.arange(R).repeat_interleave(S)
    flops = pass_flops(L, truth.d, truth.m)["total"]
    counts = pass_bytes(L, truth.d, truth.m, exact=True, indexed=S > 1)
    fit_samples = R * S * n
    out = dict(n=n, fits=R * S, flops=flops, **{f"{k}_bytes": v for k, v in counts.items()})
    for name, fused in (("fused", None), ("tensor", False)):
        if fused is None and kernels.pass_kernel() is None:
            out.update({f"{name}_seconds": float("nan"), f"{name}_ns": float("nan"), f"{name}_gflops": float("nan")})
            continue
        terms = PrefixSpaceTerms(truth.structure, truth.experts, L, X, Y, SolverConfig().chunk_elements, fused=fused)
        sec = _best_time(lambda: terms.hessian(theta, rep))
        out.update({f"{name}_seconds": sec, f"{name}_ns": 1e9 * sec / fit_samples,
                    f"{name}_gflops": flops * fit_samples / sec / 1e9,
                    f"{name}_compulsory_gbs": counts["compulsory"] * fit_samples / sec / 1e9})
    out["tensor_as_written_gbs"] = counts["as_written"] * fit_samples / out["tensor_seconds"] / 1e9
    return out


# ---- scipy baseline -----------------------------------------------------------------------------------
def problem(structure: str, regime: str, n: int, replicates: int, n_starts: int = STUDY_INIT.n_starts,
            base_seed: int = 0):
    """The study's own data and logged multi-start starts (mode 'mixed': start 0 near the truth)."""
    setting = Setting(structure=structure, regime=regime, init=replace(STUDY_INIT, n_starts=n_starts))
    truth = build_truth(setting)
    L = n_fitted_atoms(setting, truth)
    seeds = [data_seed(base_seed, r) for r in range(replicates)]
    X, Y = truth.sample_replicates(n, seeds)
    starts = torch.stack([make_starts(setting, truth, L, n, sd) for sd in seeds])
    return truth, L, X, Y, starts


def scipy_fit(truth, L: int, X: torch.Tensor, Y: torch.Tensor, start: torch.Tensor, method: str = "trf") -> dict:
    """One fit as a user of scipy would write it: least_squares on the residual vector, finite-difference
    Jacobian, default tolerances; x_scale='jac' for trf (lm scales by the Jacobian columns itself)."""
    from scipy.optimize import least_squares

    s, experts = truth.structure, truth.experts

    def residuals(theta):
        keys, values, biases = s.prefix(torch.from_numpy(theta), L)
        return (prefix_moe(X, experts, keys, values, biases) - Y).reshape(-1).numpy()

    tic = time.perf_counter()
    kwargs = dict(x_scale="jac") if method == "trf" else {}
    out = least_squares(residuals, start.numpy().copy(), method=method, **kwargs)
    seconds = time.perf_counter() - tic
    return dict(seconds=seconds, loss=2.0 * out.cost / X.shape[0], nfev=int(out.nfev), status=int(out.status),
                theta=torch.from_numpy(out.x))


def scipy_vs_ours(structure: str, regime: str, n: int, replicates: int = 2, n_starts: int = STUDY_INIT.n_starts,
                  scipy_starts: int = 2, methods=("trf",), solver: SolverConfig | None = None) -> dict:
    """Same data, same logged starts. Ours: every replicate and start in one batched fit (after an untimed
    warm-up fit), seconds per fit = total / fits. scipy: one fit at a time from the first `scipy_starts`
    starts of each replicate (start 0 near the truth, then random ones), seconds per fit averaged.
    Losses compared as L_n under the same function, in noise units sigma_hat^2 / n (sigma_hat^2 = L_n / m),
    two ways: start by start (`ours_minus_scipy`; starts that our solver pruned as clearly worse than another
    start are left out, since they were stopped on purpose), and per replicate, our reported fit (best of all
    starts) against scipy's best over the starts it ran (`best_ours_minus_scipy`). <= 0 means ours is lower."""
    truth, L, X, Y, starts = problem(structure, regime, n, replicates, n_starts)
    solver = solver or SolverConfig()
    PrefixLeastSquares(truth.structure, truth.experts, L, replace(solver, max_iter=2)).fit(X[:1, :1000], Y[:1, :1000], starts[:1])
    tic = time.perf_counter()
    est = PrefixLeastSquares(truth.structure, truth.experts, L, solver).fit(X, Y, starts)
    ours = (time.perf_counter() - tic) / (replicates * n_starts)
    rows = []
    for method in methods:
        for r in range(replicates):
            for k in range(min(scipy_starts, n_starts)):
                fit = scipy_fit(truth, L, X[r], Y[r], starts[r, k], method)
                scipy_loss = float(est.empirical_loss(fit["theta"].expand(replicates, -1))[r])
                ours_loss = float(est.loss_[r, k])
                unit = ours_loss / (truth.m * n)
                rows.append(dict(method=method, replicate=r, start=k, seconds=fit["seconds"], nfev=fit["nfev"],
                                 scipy_loss=scipy_loss, ours_loss=ours_loss, ours_status=est.status_[r][k],
                                 ours_best=float(est.best_loss_[r]), pruned=bool(est.pruned_[r, k]),
                                 ours_minus_scipy=(ours_loss - scipy_loss) / unit))
    df = pd.DataFrame(rows)
    tol = solver.stat_tol  # the statistical stopping rule's own tolerance, in the same units
    out = dict(structure=structure, regime=regime, n=n, replicates=replicates, n_starts=n_starts,
               ours_seconds_per_fit=ours, per_fit=df)
    for method, g in df.groupby("method"):
        kept = g[~g.pruned]
        best = g.groupby("replicate").agg(ours=("ours_best", "first"), scipy=("scipy_loss", "min"))
        best_diff = (best.ours - best.scipy) / (best.ours / (truth.m * n))
        out[method] = dict(seconds_per_fit=g.seconds.mean(), ratio=g.seconds.mean() / ours, fits=len(g),
                           compared=len(kept), ours_not_worse=int((kept.ours_minus_scipy <= tol).sum()),
                           worst=float(kept.ours_minus_scipy.max()) if len(kept) else float("nan"),
                           best=float(kept.ours_minus_scipy.min()) if len(kept) else float("nan"),
                           replicates_not_worse=int((best_diff <= tol).sum()), replicates=len(best),
                           best_worst=float(best_diff.max()))
    return out


# ---- stopping rules and the paper-grade study -------------------------------------------------------
def study_plan(n_grid, replicates: int, solver: SolverConfig | None = None, structures=STRUCTURES,
               regimes=REGIMES, n_starts: int = STUDY_INIT.n_starts, n_eval: int = 100_000,
               device: str = "cpu") -> StudyPlan:
    setting = Setting(init=replace(STUDY_INIT, n_starts=n_starts), solver=solver or SolverConfig(), n_eval=n_eval,
                      device=device)
    return StudyPlan(structures=list(structures), regimes=list(regimes), n_grid=[int(n) for n in n_grid],
                     replicates=replicates, seed=0, setting=setting)


def timed_study(plan: StudyPlan, log_path, workers: int = 2) -> tuple[pd.DataFrame, float]:
    """Run `plan` from scratch (the log is removed first) with `workers` processes; (rows, wall seconds)."""
    if os.path.exists(log_path):
        os.remove(log_path)
    tic = time.perf_counter()
    rows = run_plan(plan, log_path, progress=False, workers=workers)
    return rows, time.perf_counter() - tic


def curve_summary(rows: pd.DataFrame, errors=("voronoi_prefix", "l2_error"), n_boot: int = 1000) -> pd.DataFrame:
    """Per (structure, regime, error), over the VALID fits (column `valid`): the slope of log mean error on
    log n with its interval over replicate streams (reparam.rates.fit_slopes, as in the study's
    summary), the mean at the largest n with a 95% t-interval, and the median solver iterations."""
    from .rates import fit_slopes, mean_half_width

    good = rows[rows["valid"].astype(bool)]
    out = []
    for (s, r), g in good.groupby(["structure", "regime"]):
        for error in errors:
            slope = fit_slopes(g, error, by=[], replicate_col="seed", n_boot=n_boot).iloc[0]
            top = g[g.n == g.n.max()][error].astype(float)
            half = mean_half_width(top)
            out.append(dict(structure=s, regime=r, error=error, slope=slope["slope"], slope_lo=slope["slope_lo"],
                            slope_hi=slope["slope_hi"], mean_at_n_max=top.mean(), mean_half_width=half,
                            median_at_n_max=top.median(), valid=len(g),
                            median_iter=float(rows[(rows.structure == s) & (rows.regime == r)].n_iter.median())))
    return pd.DataFrame(out)


def compare_stopping_rules(n_grid, replicates: int, log_dir, workers: int = 2, log=print) -> dict:
    """The same study under stop='strict' and stop='statistical': wall time, iterations and the per-curve
    means and slopes with their intervals."""
    out = {}
    for stop in ("strict", "statistical"):
        plan = study_plan(n_grid, replicates, SolverConfig(stop=stop))
        rows, wall = timed_study(plan, os.path.join(log_dir, f"stop_{stop}.jsonl"), workers)
        out[stop] = dict(rows=rows, wall=wall, summary=curve_summary(rows))
        log(f"  stop={stop}: {wall:.0f} s, {len(rows)} fits, median iterations {rows.n_iter.median():.0f}")
    return out


# ---- scaling --------------------------------------------------------------------------------------
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
    """figures/scaling.png from the scaling table, also written beside it as CSV (scaling.csv), from which
    `reparam figures` redraws it."""
    from .plots import plt, scaling_figure

    df.to_csv(os.path.splitext(path)[0] + ".csv", index=False)
    fig = scaling_figure(df)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


# ---- replicate scaling: what a study of many replicates costs per fit ---------------------------------
def l2_error_direct(X_eval: torch.Tensor, experts, fitted_prefix, true_prefix) -> torch.Tensor:
    """The regression L2 error evaluated directly: prefix_moe on all n_eval points for all fits at once (a
    (fits, n_eval, L + 1) softmax), the implementation reparam.losses.l2_error replaced. Kept as the baseline of
    l2_speed and the reference of tests/test_l2_speed.py."""
    f_hat = prefix_moe(X_eval, experts, *fitted_prefix)
    f_true = prefix_moe(X_eval, experts, *true_prefix)
    return (f_hat - f_true).square().sum(dim=-1).mean(dim=-1).sqrt()


def l2_speed(replicates=(10, 100), structures=STRUCTURES, regimes=REGIMES, n_eval: int = 100_000,
             log=print) -> pd.DataFrame:
    """reparam.losses.l2_error against l2_error_direct on the canonical truth, per structure x regime and number of
    fitted prefixes (random prefixes near the truth's scale; the cost does not depend on where they are): seconds
    per fit of each (best of 3 after a warm-up, measured in turn in this process), their ratio, and the largest
    relative difference of the two results."""
    from .losses import l2_error

    rows = []
    for structure in structures:
        for regime in regimes:
            setting = Setting(structure=structure, regime=regime)
            truth = build_truth(setting)
            L = n_fitted_atoms(setting, truth)
            X_eval = truth.eval_inputs(n_eval)
            for R in replicates:
                theta = torch.as_tensor(np.random.default_rng(R).normal(0.0, 1.0, size=(R, truth.structure.n_params(L))),
                                        dtype=DTYPE)
                fitted, true = truth.structure.prefix(theta, L), truth.prefix()
                new = l2_error(X_eval, truth.experts, fitted, true)
                old = l2_error_direct(X_eval, truth.experts, fitted, true)
                t_old = _best_time(lambda: l2_error_direct(X_eval, truth.experts, fitted, true))
                t_new = _best_time(lambda: l2_error(X_eval, truth.experts, fitted, true))
                rows.append(dict(structure=structure, regime=regime, replicates=R, direct_ms=1e3 * t_old / R,
                                 chunked_ms=1e3 * t_new / R, ratio=t_old / t_new,
                                 max_rel_diff=float(((new - old).abs() / old.abs()).max())))
                log(f"  l2_error {structure} {regime} R={R}: direct {rows[-1]['direct_ms']:.2f} ms/fit, chunked "
                    f"{rows[-1]['chunked_ms']:.2f} ms/fit ({rows[-1]['ratio']:.1f}x)")
    return pd.DataFrame(rows)


def replicate_scaling(replicates=(10, 100), n_grid=None, log=print) -> pd.DataFrame:
    """Seconds per fit (one replicate: its 5 starts, data, errors) of every cell of the main job's plan (canonical
    truth, the checks' structures x regimes, STUDY_INIT) with each number of replicates, run in turn in this process
    with run_cell (replicates 0 .. R-1; a cell of many replicates runs in groups of
    reparam.study.cell_group_size). The per-fit time at the largest R, times the replicates of a calibration
    run, is that run's cell time (plan_seconds)."""
    from .study import DEFAULT_N_GRID, cell_group_size, run_cell

    plan = study_plan(n_grid or DEFAULT_N_GRID, max(replicates))
    rows = []
    for setting, n in plan.cells():
        truth = build_truth(setting)
        for R in replicates:
            tic = time.perf_counter()
            run_cell(setting, n, list(range(R)), plan.seed, truth=truth)
            seconds = time.perf_counter() - tic
            group = cell_group_size(setting, truth, n)
            rows.append(dict(structure=setting.structure, regime=setting.regime, n=n, replicates=R,
                             group=min(R, group), seconds_per_fit=seconds / R))
            log(f"  replicates {setting.structure} {setting.regime} n={n} R={R}: {seconds / R * 1e3:.1f} ms per fit")
    return pd.DataFrame(rows)


def plan_seconds(scaling_rows: pd.DataFrame, replicates: int, workers: int) -> float:
    """Wall time of the main job's plan with `replicates` replicates and `workers` worker processes, from
    replicate_scaling's per-fit times at its largest replicate count: the sum of the cells' times divided by the
    workers (perfect packing: a lower estimate when one cell outlasts the others' share)."""
    largest = scaling_rows[scaling_rows.replicates == scaling_rows.replicates.max()]
    return float(largest.seconds_per_fit.sum()) * replicates / workers
