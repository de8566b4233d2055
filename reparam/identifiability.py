"""Identifiability of the prompt part (THEORY section 7): f-equivalent families, the inverse-bound curve psi(delta)
and the ratio D / ||f_hat - f*|| of fitted models.

Three objects, all in the prefix space (k, v) of reparam.study.run_cell (D = reparam.losses.voronoi_loss with
exponent 1 in single-atom cells and 2 in multi-atom cells, weights exp(b)):

1. The WITNESS (`witness_family`): split true atom j into two atoms with the SAME key,

       (k*, b* + log beta,      v_1)      (k*, b* + log(1 - beta),  v_2)      with beta v_1 + (1 - beta) v_2 = v*,

   which reproduces f_G* exactly (both atoms share exp(k*^T X + b*); their values average to v*) while the atoms
   sit at distance ~ scale from the truth. `independent`: v_1 = v* + (1 - alpha) s u, v_2 = v* - alpha s u,
   beta = alpha. A tied structure moves the latent p* along a direction z with W_K z = 0 (it exists iff
   r > rank W_K, e.g. r > d): p_1 = p* + (1 - alpha) s z, p_2 = p* - alpha s z, so k_1 = k_2 = k*; for
   `shared_linear` v_1, v_2 are exactly the independent family with u = W_V z (beta = alpha); for `shared_mlp`
   with m = 1 and a strictly increasing sigma, v* lies strictly between v_1 and v_2 and beta solves the average.
   With an injective key map (W_K of full column rank) there is no such z: `NoWitnessError`. Each structure declares
   its own z and beta (reparam.structures: `witness_direction`, `witness_weight`); one that declares none has no
   witness.

2. The INVERSE-BOUND CURVE (`inverse_bound_curve`): psi(delta) = min { ||f_G - f_G*||_{L2(mu)} : D(G, G*) = delta },
   by multi-start SLSQP (equality constraint) on a fixed sample of mu, in float64. The Voronoi assignment is
   held fixed per start (it is what makes D piecewise smooth); |.| and the exponent-1 norms are smoothed
   as sqrt(t^2 + eps^2) - eps with eps = `smoothing` * delta; every solution is then moved along the ray from its
   D = 0 base point until the EXACT D equals delta, so every reported psi is attained at a feasible G. Starts at
   every delta: the best solutions of the previous delta rescaled to the new one (continuation from delta = 1
   down), random directions around random weight splits, and the witness member with D = delta (psi = 0 where
   a witness exists); then a second sweep from the smallest delta up restarts every delta from the best
   solutions of the next smaller one, so a good shape found anywhere propagates along the whole curve.

3. The RATIO ON FITS (`add_inverse_ratio`; its slopes and verdicts: reparam.checks.summarize): D(G_hat, G*) / ||f_hat - f*|| per study row;
   its log-log slope against n is 0 where the inverse bound holds and > 0 where it fails (`inverse_ratio_prediction`,
   from the `inverse_bound` each structure declares).
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .losses import voronoi_loss
from .moe import DTYPE, mixture_output
from .rates import Prediction
from .structures import STRUCTURES, NoWitnessError
from .theory import claim
from .truth import GroundTruth, canonical_truth
from .validation import check_int, check_list, check_number, require


# --------------------------------------------------------------------------------------------------
# 1. The witness: each structure declares its own (reparam.structures: witness_direction, witness_weight)


def witness_theta(truth: GroundTruth, scale: float, atom: int = 0, alpha: float = 0.5) -> tuple[Tensor, float]:
    """Native parameters (P,) of the over-specified (L* + 1 atoms) witness member at `scale`, and the weight
    fraction beta of its first split atom. Atom `atom` is replaced by the first split atom, the second is appended."""
    s = truth.structure
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha!r} is invalid: must be in (0, 1)")
    if not 0 <= atom < truth.n_atoms:
        raise ValueError(f"atom={atom!r} is invalid: must be in [0, {truth.n_atoms})")
    z = s.witness_direction()  # NoWitnessError when the structure has none (e.g. an injective key map)
    b_true, atoms_true, globals_ = s.split(truth.theta, truth.n_atoms)
    p1 = atoms_true[atom] + (1 - alpha) * scale * z
    p2 = atoms_true[atom] - alpha * scale * z
    _, values = s.prefix_from_atoms(torch.stack([atoms_true[atom], p1, p2]), globals_)  # (3, m): v*, v_1, v_2
    beta = s.witness_weight(values, alpha, scale)
    biases = torch.cat([b_true, b_true[atom:atom + 1]]).clone()
    biases[atom] = b_true[atom] + np.log(beta)
    biases[-1] = b_true[atom] + np.log(1 - beta)
    atoms = torch.cat([atoms_true, p2.unsqueeze(0)]).clone()
    atoms[atom] = p1
    return s.join(biases, atoms, globals_), beta


def prefix_voronoi(truth: GroundTruth, theta: Tensor, n_atoms: int) -> Tensor:
    """D(G, G*) in prefix space (k, v), the convention of run_cell's `voronoi_prefix`: theta (..., P) -> (...)."""
    keys, values, biases = truth.structure.prefix(theta, n_atoms)
    t_keys, t_values, t_biases = truth.prefix()
    return voronoi_loss(torch.cat([keys, values], -1), biases.exp(), torch.cat([t_keys, t_values], -1), t_biases.exp())


def witness_at_delta(truth: GroundTruth, delta: float, atom: int = 0, alpha: float = 0.5) -> Tensor | None:
    """The witness member whose prefix-space D equals delta (bisection on log scale; the family is not a straight
    ray in (b, p) for shared_mlp, so the scale itself is solved for). None when the family never reaches delta
    (shared_mlp: the values are bounded)."""
    lo, hi = -30.0, 6.0
    D = lambda log_scale: float(prefix_voronoi(truth, witness_theta(truth, float(np.exp(log_scale)), atom, alpha)[0],
                                               truth.n_atoms + 1))
    if D(hi) < delta:
        return None
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if D(mid) < delta else (lo, mid)
    return witness_theta(truth, float(np.exp(hi)), atom, alpha)[0]


@dataclass
class Witness:
    """Members of an f-equivalent family. Fields: truth, n_atoms (L* + 1), theta (K, P) native parameters,
    table (one row per member: scale, alpha, beta, voronoi_prefix, max_abs_error = max |f_G - f_G*| over the
    inputs, l2_error on the same inputs)."""

    truth: GroundTruth
    n_atoms: int
    theta: Tensor
    table: pd.DataFrame


def witness_family(truth: GroundTruth, scales, atom: int = 0, alpha: float = 0.5, n_inputs: int = 100_000,
                   input_scale: float | None = None) -> Witness:
    """The witness members at every `scale`, measured on n_inputs points drawn uniformly from
    [-input_scale, input_scale]^d (default: the truth's own support; a larger box checks the identity off mu)."""
    scales = [float(x) for x in np.atleast_1d(scales)]
    members = [witness_theta(truth, sc, atom, alpha) for sc in scales]
    theta = torch.stack([m[0] for m in members])  # (K, P)
    L = truth.n_atoms + 1
    box = truth.x_scale if input_scale is None else float(input_scale)
    rng = np.random.default_rng([len(scales), 31])
    X = torch.as_tensor(rng.uniform(-box, box, size=(int(n_inputs), truth.d)), dtype=DTYPE)
    keys, values, biases = truth.structure.prefix(theta, L)
    f = mixture_output(X, keys, values, biases, *truth.experts.collapse(X))  # (K, n, m)
    diff = f - truth.regression(X)
    table = pd.DataFrame(dict(
        structure=truth.structure.name, truth=truth.name, atom=atom, scale=scales, alpha=alpha,
        beta=[m[1] for m in members], voronoi_prefix=prefix_voronoi(truth, theta, L).numpy(),
        max_abs_error=diff.abs().amax(dim=(-1, -2)).numpy(), l2_error=diff.square().sum(-1).mean(-1).sqrt().numpy()))
    return Witness(truth=truth, n_atoms=L, theta=theta, table=table)


# --------------------------------------------------------------------------------------------------
# 2. The inverse-bound curve psi(delta)


@dataclass
class InverseBoundConfig:
    """Settings of psi(delta) (all documented in the README).

    deltas: the grid of D values (solved from the largest down, then from the smallest up: continuation).
    n_inputs: size of the fixed sample of mu (the truth's Uniform box) on which ||.||_{L2(mu)} is estimated.
    n_random: fresh random starts per delta.
    n_continued: the best solutions of the previous delta continued to this one (rescaled to D = delta).
    smoothing: eps / delta of the smoothed |.| and norms in D during the solve. Every solution is then moved
        from its D = 0 base point (`_Problem.rescale`) until the EXACT D equals delta (bisection), so every reported
        psi is ||f_G - f_G*|| at a G with D(G, G*) = delta, i.e. a feasible point: psi is an upper bound of the
        true minimum up to the optimiser's failure to find the best point, never below it.
    constraint_tol: a solution counts only if |D_exact / delta - 1| <= constraint_tol after that rescaling.
    max_iter, ftol: SLSQP settings (objective ||f_G - f*||^2 / delta^2).
    floor: psi <= floor is zero to round-off (f is O(1) and evaluated in float64).
    slope_points: the smallest deltas whose log-log slope is "the slope near 0".
    slope_tol: the bound holds when that slope is <= 1 + slope_tol (psi / delta does not go to 0).
    seed: random starts.
    """

    deltas: list[float] = field(default_factory=lambda: [float(x) for x in np.logspace(0, -3, 7)])
    n_inputs: int = 1000
    n_random: int = 3
    n_continued: int = 3
    smoothing: float = 1e-3
    constraint_tol: float = 1e-6
    max_iter: int = 100
    ftol: float = 1e-10
    floor: float = 1e-10
    slope_points: int = 3
    slope_tol: float = 0.1
    seed: int = 0

    def __post_init__(self):
        """ConfigError (a ValueError; reparam.validation) naming the field, the value and what is allowed."""
        check_int("slope_points", self.slope_points, low=2)
        check_list("deltas", self.deltas, item_check=lambda name, d: check_number(name, d, low=0, low_open=True))
        require(len(self.deltas) >= self.slope_points, "deltas", self.deltas,
                f"a list of at least slope_points={self.slope_points} values")
        for name in ("n_inputs", "max_iter", "n_continued"):
            check_int(name, getattr(self, name), low=1)
        check_int("n_random", self.n_random, low=0)


class _Problem:
    """min F(x) = ||f_x - f*||^2 on the fixed inputs  s.t.  D_smooth(x; cells) = delta, in native parameters x."""

    def __init__(self, truth: GroundTruth, n_atoms: int, X: Tensor):
        self.truth, self.L, self.s = truth, n_atoms, truth.structure
        self.X = X
        self.pre = truth.experts.collapse(X)
        self.f_true = truth.regression(X)
        k, v, b = truth.prefix()
        self.prefix_true, self.w_true = torch.cat([k, v], -1), b.exp()
        self.b_true, self.atoms_true, self.globals_ = self.s.split(truth.theta, truth.n_atoms)

    def prefix(self, x: Tensor) -> tuple[Tensor, Tensor]:
        keys, values, biases = self.s.prefix(x, self.L)
        return torch.cat([keys, values], -1), biases.exp()

    def loss(self, x: Tensor) -> Tensor:
        keys, values, biases = self.s.prefix(x, self.L)
        return (mixture_output(self.X, keys, values, biases, *self.pre) - self.f_true).square().sum(-1).mean(-1)

    def cells(self, x: Tensor) -> Tensor:
        return torch.cdist(self.prefix(x)[0], self.prefix_true).argmin(-1)

    def exact_d(self, x: Tensor) -> float:
        theta, w = self.prefix(x)
        return float(voronoi_loss(theta, w, self.prefix_true, self.w_true))

    def smooth_d(self, x: Tensor, cells: Tensor, eps: float) -> Tensor:
        theta, w = self.prefix(x)
        member = torch.nn.functional.one_hot(cells, self.truth.n_atoms).to(DTYPE)  # (L, L*)
        mass = member.T @ w - self.w_true
        dist2 = (theta - self.prefix_true[cells]).square().sum(-1)
        multi = member.sum(0)[cells] > 1
        per_atom = torch.where(multi, dist2, (dist2 + eps ** 2).sqrt() - eps)
        return ((mass.square() + eps ** 2).sqrt() - eps).sum() + (w * per_atom).sum()

    def base(self, x: Tensor) -> Tensor:
        """The D = 0 point of x's cells: every atom on its true atom, cell weights rescaled to the true weight."""
        cells = self.cells(x)
        b, _, _ = self.s.split(x, self.L)
        w = b.exp()
        cell_w = torch.zeros(self.truth.n_atoms, dtype=DTYPE).index_add(0, cells, w)
        b0 = b + (self.w_true[cells] / cell_w[cells]).log()
        return self.s.join(b0, self.atoms_true[cells], self.globals_)

    def rescale(self, x: Tensor, delta: float) -> Tensor | None:
        """x moved from its D = 0 base point so that the exact D equals delta (bisection on log scale of t):
        x0 + t * (bias step and atom steps in single-atom cells) + sqrt(t) * (atom steps in multi-atom cells),
        the scaling under which every term of D is linear in t (D weighs multi-cell distances squared)."""
        x0 = self.base(x)
        step = x - x0
        if float(step.abs().max()) == 0:
            return None
        cells = self.cells(x)
        multi = torch.bincount(cells, minlength=self.truth.n_atoms)[cells] > 1  # (L,)
        zeros = torch.zeros(self.L, dtype=DTYPE)
        _, atom_mask, _ = self.s.split(self.s.join(zeros, multi.to(DTYPE).unsqueeze(-1).expand(self.L, self.s.atom_dim),
                                                   self.globals_ * 0), self.L)
        slow = self.s.join(zeros, atom_mask, self.globals_ * 0) * step  # multi-cell atom coordinates of the step
        fast = step - slow
        at = lambda log_t: x0 + np.exp(log_t) * fast + np.exp(0.5 * log_t) * slow  # noqa: E731
        lo, hi = -30.0, 10.0
        if self.exact_d(at(hi)) < delta:
            return None
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            if self.exact_d(at(mid)) < delta:
                lo = mid
            else:
                hi = mid
        return at(hi)


def _random_start(problem: _Problem, rng: np.random.Generator, track: int) -> Tensor:
    """A random weight split (the extra atoms join cell track % L*, ...) plus a random native direction."""
    truth, L = problem.truth, problem.L
    owner = [j % truth.n_atoms for j in range(truth.n_atoms)] + [(track + j) % truth.n_atoms
                                                                  for j in range(L - truth.n_atoms)]
    share = np.ones(L)
    for j in set(owner):
        idx = [i for i, o in enumerate(owner) if o == j]
        share[idx] = rng.dirichlet(np.ones(len(idx)) * 2.0)
    b0 = problem.b_true[owner] + torch.as_tensor(np.log(share), dtype=DTYPE)
    x0 = problem.s.join(b0, problem.atoms_true[owner], problem.globals_)
    return x0 + 0.1 * torch.as_tensor(rng.standard_normal(x0.shape[-1]), dtype=DTYPE)


def _solve(problem: _Problem, x_start: Tensor, delta: float, cfg: InverseBoundConfig) -> tuple[Tensor, dict]:
    """SLSQP from x_start with the Voronoi cells of x_start held fixed."""
    from scipy.optimize import minimize

    cells = problem.cells(x_start)
    eps = cfg.smoothing * delta
    cache: dict = {}

    def evaluate(z: np.ndarray):
        key = z.tobytes()
        if key not in cache:
            cache.clear()
            x = torch.as_tensor(z, dtype=DTYPE).requires_grad_(True)
            F = problem.loss(x) / delta ** 2
            gF, = torch.autograd.grad(F, x)
            x2 = torch.as_tensor(z, dtype=DTYPE).requires_grad_(True)
            c = problem.smooth_d(x2, cells, eps) / delta - 1.0
            gc, = torch.autograd.grad(c, x2)
            cache[key] = (float(F.detach()), gF.numpy().copy(), float(c.detach()), gc.numpy().copy())
        return cache[key]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = minimize(lambda z: evaluate(z)[0], x_start.numpy(), jac=lambda z: evaluate(z)[1], method="SLSQP",
                       constraints=[{"type": "eq", "fun": lambda z: evaluate(z)[2], "jac": lambda z: evaluate(z)[3]}],
                       options={"maxiter": cfg.max_iter, "ftol": cfg.ftol})
    x = torch.as_tensor(res.x, dtype=DTYPE)
    return x, dict(success=bool(res.success), n_iter=int(res.nit))


def inverse_bound_inputs(truth: GroundTruth, n_atoms: int, config: InverseBoundConfig | None = None) -> Tensor:
    """The fixed sample of mu (n_inputs, d) on which inverse_bound_curve estimates ||.||_{L2(mu)}."""
    cfg = config or InverseBoundConfig()
    rng = np.random.default_rng([cfg.seed, n_atoms, 23])
    return torch.as_tensor(rng.uniform(-truth.x_scale, truth.x_scale, size=(cfg.n_inputs, truth.d)), dtype=DTYPE)


def inverse_bound_curve(truth: GroundTruth, n_atoms: int, config: InverseBoundConfig | None = None) -> pd.DataFrame:
    """psi(delta) for a truth and L' = n_atoms fitted atoms: one row per delta with psi, psi / delta, the exact D
    reached, the start that won ('witness', 'continued', 'random'), how many starts met the constraint, and the
    witness's own value (psi's upper bound, NaN when the structure has no witness at this n_atoms or the family
    does not reach delta). best_start: 'random', 'witness', 'continued' (from the next larger delta) or
    'continued up' (from the next smaller delta, second sweep)."""
    cfg = config or InverseBoundConfig()
    if n_atoms < truth.n_atoms:
        raise ValueError(f"n_atoms={n_atoms} is fewer than the {truth.n_atoms} true atoms")
    rng = np.random.default_rng([cfg.seed, n_atoms, 17])
    problem = _Problem(truth, n_atoms, inverse_bound_inputs(truth, n_atoms, cfg))
    has_witness = n_atoms == truth.n_atoms + 1
    if has_witness:
        try:
            witness_theta(truth, 1.0)
        except NoWitnessError:
            has_witness = False
    def solve_all(starts: list[tuple[str, Tensor]], delta: float) -> list[tuple[str, Tensor, float, float]]:
        out = []
        for kind, x in starts:
            x = problem.rescale(x, delta)
            if x is None:
                continue
            x_opt, _ = _solve(problem, x, delta, cfg)
            x_opt = problem.rescale(x_opt, delta) if bool(torch.isfinite(x_opt).all()) else None
            if x_opt is None:
                continue
            d_exact = problem.exact_d(x_opt)
            if abs(d_exact / delta - 1) <= cfg.constraint_tol:
                out.append((kind, x_opt, float(problem.loss(x_opt).sqrt()), d_exact))
        return sorted(out, key=lambda r: r[2])

    deltas = sorted(cfg.deltas, reverse=True)
    solutions, n_starts, witness_psi, seconds = {}, {}, {}, {}
    previous: list[Tensor] = []
    for delta in deltas:  # downward: continued + random + witness starts
        tic = time.perf_counter()
        starts: list[tuple[str, Tensor]] = [("continued", x) for x in previous]
        starts += [("random", _random_start(problem, rng, k)) for k in range(cfg.n_random)]
        witness_psi[delta] = np.nan
        if has_witness:
            x_w = witness_at_delta(truth, delta)
            if x_w is not None:
                witness_psi[delta] = float(problem.loss(x_w).sqrt())
                starts.append(("witness", x_w))
        solutions[delta] = solve_all(starts, delta)
        n_starts[delta] = len(starts)
        previous = [r[1] for r in solutions[delta][: cfg.n_continued]]
        seconds[delta] = time.perf_counter() - tic
    for smaller, delta in zip(deltas[::-1], deltas[::-1][1:]):  # upward: carry the best small-delta shapes back up
        tic = time.perf_counter()
        starts = [("continued up", r[1]) for r in solutions[smaller][: cfg.n_continued]]
        solutions[delta] = sorted(solutions[delta] + solve_all(starts, delta), key=lambda r: r[2])
        n_starts[delta] += len(starts)
        seconds[delta] += time.perf_counter() - tic
    rows = []
    for delta in deltas:
        results = solutions[delta]
        best = results[0] if results else None
        rows.append(dict(
            structure=truth.structure.name, truth=truth.name, latent_dim=getattr(truth.structure, "r", np.nan),
            regime="exact" if n_atoms == truth.n_atoms else "over", n_true_atoms=truth.n_atoms, n_fitted_atoms=n_atoms,
            delta=delta, psi=best[2] if best else np.nan, psi_over_delta=best[2] / delta if best else np.nan,
            d_reached=best[3] if best else np.nan, best_start=best[0] if best else "", n_starts=n_starts[delta],
            n_feasible=len(results), witness_psi=witness_psi[delta], n_inputs=cfg.n_inputs, seconds=seconds[delta]))
    return pd.DataFrame(rows).sort_values("delta").reset_index(drop=True)


def psi_verdict(curve: pd.DataFrame, config: InverseBoundConfig | None = None) -> dict:
    """The verdict rule of one psi curve (rows of one structure x regime, any order), read on the WINDOW of the
    `slope_points` smallest deltas (the prediction is about delta -> 0):

    - 'fails: psi = 0' when psi <= floor at every delta of the window (an exact f-equivalent family arbitrarily
      close to the truth);
    - 'holds' when psi > floor on the window and the least-squares slope of log psi on log delta there is
      <= 1 + slope_tol (psi / delta stays bounded away from 0 as delta -> 0);
    - 'fails: psi = o(delta)' when psi > floor on the window but that slope exceeds 1 + slope_tol;
    - 'mixed' when the window has psi at round-off at some deltas only; 'no solution' when a delta of the window
      had no feasible start.
    `n_zero` counts the deltas of the whole grid with psi <= floor.
    """
    cfg = config or InverseBoundConfig()
    c = curve.sort_values("delta")
    psi, delta = c["psi"].to_numpy(float), c["delta"].to_numpy(float)
    k = cfg.slope_points
    window = psi[:k]
    out = dict(psi_min_delta=float(psi[0]), delta_min=float(delta[0]), psi_over_delta_min=float(psi[0] / delta[0]),
               psi_max=float(np.nanmax(psi)) if np.isfinite(psi).any() else np.nan, slope_near_0=np.nan,
               n_zero=int((psi <= cfg.floor).sum()), n_deltas=len(psi))
    if not np.isfinite(window).all():
        return {**out, "verdict": "no solution"}
    if (window <= cfg.floor).all():
        return {**out, "verdict": "fails: psi = 0"}
    if (window <= cfg.floor).any():
        return {**out, "verdict": "mixed"}
    out["slope_near_0"] = float(np.polyfit(np.log(delta[:k]), np.log(window), 1)[0])
    return {**out, "verdict": "holds" if out["slope_near_0"] <= 1 + cfg.slope_tol else "fails: psi = o(delta)"}


#: The cases of the inverse-bound study, (structure, regime, latent_dim) on the canonical truth (d = 2): latent_dim 2
#: has an injective key map, 3 (r > d) not. Each case's prediction is its structure's own declaration
#: (`Structure.predicted_inverse_bound`), read at run time.
INVERSE_BOUND_CASES: list[tuple[str, str, int]] = [
    ("shared_linear", "exact", 2), ("shared_linear", "over", 2),
    ("shared_mlp", "exact", 2), ("shared_mlp", "over", 2),
    ("independent", "exact", 2), ("independent", "over", 2),
    ("shared_linear", "exact", 3), ("shared_linear", "over", 3),
    ("shared_mlp", "exact", 3), ("shared_mlp", "over", 3),
]


def inverse_bound_study(config: InverseBoundConfig | None = None, cases=None,
                        extra_atoms: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """psi(delta) on the canonical truth (latent_dim 2, and 3 for r > d) for every case; returns the curve table
    (one row per case and delta) and the summary table (one row per case: slope near 0, psi / delta at the
    smallest delta, verdict, THEORY prediction, agreement)."""
    cfg = config or InverseBoundConfig()
    curves, summary = [], []
    for structure, regime, latent_dim in cases or INVERSE_BOUND_CASES:
        truth = canonical_truth(structure, latent_dim=latent_dim, noise=0.0)
        predicted = truth.structure.predicted_inverse_bound(regime)
        tic = time.perf_counter()
        curve = inverse_bound_curve(truth, truth.n_atoms + (extra_atoms if regime == "over" else 0), cfg)
        curve["latent_dim"] = latent_dim
        curves.append(curve)
        v = psi_verdict(curve, cfg)
        measured = "holds" if v["verdict"] == "holds" else ("fails" if v["verdict"].startswith("fails") else v["verdict"])
        summary.append(dict(structure=structure, regime=regime, latent_dim=latent_dim, truth=truth.name,
                            key_map=truth.structure.key_map(),
                            **v, predicted=predicted,
                            agreement=("no prediction" if predicted == "open" else
                                       ("agree" if measured == predicted else "disagree")),
                            seconds=time.perf_counter() - tic))
    return pd.concat(curves, ignore_index=True), pd.DataFrame(summary)


# --------------------------------------------------------------------------------------------------
# 3. The ratio D / ||f_hat - f*|| on fitted models


def add_inverse_ratio(results: pd.DataFrame) -> pd.DataFrame:
    """A copy of a study table with the column `inverse_ratio` = voronoi_prefix / l2_error (NaN where l2_error <= 0)."""
    out = results.copy()
    l2 = out["l2_error"].astype(float)
    out["inverse_ratio"] = np.where(l2 > 0, out["voronoi_prefix"].astype(float) / l2.where(l2 > 0, np.nan), np.nan)
    return out


def inverse_ratio_prediction(structure: str, regime: str) -> Prediction | None:
    """THEORY section 7 on fits: the predicted slope of D / ||f_hat - f*|| against n, the rate of the theory table
    (reparam.theory, claim `inverse-ratio`) that the structure's declared `inverse_bound` for `regime` selects
    (reparam.structures). None where the structure declares nothing for the regime (shared_learned) or is not
    registered."""
    cls = STRUCTURES.get(structure)
    if cls is None:
        return None
    for rate in claim("inverse-ratio").rates:
        if rate.applies(cls, regime):
            return rate.prediction
    return None


# --------------------------------------------------------------------------------------------------
# The citable check `inverse-bound`


def inverse_bound_overall(summary: pd.DataFrame) -> str:
    """'agree' when every case with a THEORY prediction agrees, 'disagree' when one disagrees, else 'inconclusive'."""
    judged = summary[summary["agreement"] != "no prediction"]["agreement"]
    if (judged == "disagree").any():
        return "disagree"
    return "agree" if len(judged) and (judged == "agree").all() else "inconclusive"


def inverse_bound_lines(summary: pd.DataFrame) -> list[str]:
    """One printable line per case."""
    out = []
    for r in summary.itertuples():
        slope = "" if not np.isfinite(r.slope_near_0) else f"{r.slope_near_0:.3f}"
        out.append(f"{r.structure:<14} {r.regime:<5} r={r.latent_dim} ({r.key_map:<13}) slope near 0 {slope:>6}  "
                   f"psi/delta at delta={r.delta_min:g}: {r.psi_over_delta_min:.3g}  -> {r.verdict} "
                   f"(THEORY: {r.predicted}; {r.agreement})")
    return out


def inverse_bound_report(summary: pd.DataFrame, config: InverseBoundConfig, command: str,
                         wall_seconds: float | None = None) -> str:
    """The markdown section of the check `inverse-bound`."""
    overall = inverse_bound_overall(summary)
    md = [f"## Check `inverse-bound`: {overall.upper()}", "",
          "- THEORY: section 7 (inverse bound ||f_G - f_G*|| >= c D(G, G*); psi(delta) = min of the left side at D = delta)",
          f"- Configuration: canonical truth, noise-free; deltas {', '.join(f'{d:g}' for d in sorted(config.deltas))}; "
          f"||.||_L2(mu) on {config.n_inputs} fixed points of mu; per delta {config.n_random} random + "
          f"{config.n_continued} continued starts (+ the witness where one exists), SLSQP max_iter {config.max_iter}; "
          f"floor {config.floor:g}; slope over the {config.slope_points} smallest deltas, bound holds when it is "
          f"<= 1 + {config.slope_tol:g}.",
          f"- Command: `{command}`"]
    if wall_seconds is not None:
        md.append(f"- Wall time: {wall_seconds:.0f} s")
    md += ["", "| structure | regime | r | key map | slope of log psi near 0 | psi/delta at smallest delta | "
           "deltas with psi <= floor | verdict | THEORY | agreement |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary.itertuples():
        slope = "" if not np.isfinite(r.slope_near_0) else f"{r.slope_near_0:.3f}"
        md.append(f"| {r.structure} | {r.regime} | {r.latent_dim} | {r.key_map} | {slope} | {r.psi_over_delta_min:.3g} "
                  f"| {r.n_zero}/{r.n_deltas} | {r.verdict} | {r.predicted} | **{r.agreement}** |")
    md.append("")
    return "\n".join(md)
