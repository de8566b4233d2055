"""The local minimax lower bound (Le Cam's two-point method) computed from the inverse-bound curve psi(delta).

For a pair (G*, G_delta) with loss D(G_delta, G*) = delta and regression distance psi(delta), no estimator G_hat
has max over the pair of E D(G_hat, G) below

    (delta / (2 C)) * (1 - TV(P_{G*}^n, P_{G_delta}^n)),      TV <= min(sqrt(KL / 2), sqrt(1 - exp(-KL))),

where C = delta / inf_{G_hat} [D(G_hat, G*) + D(G_hat, G_delta)] >= 1 is the pair's separation constant (the
Voronoi loss is not symmetric and has no uniform weak triangle inequality; THEORY section 8 (docs/theory.md)) and KL is the
n-sample Kullback-Leibler divergence:

* synthetic model (Y = f_G(X) + N(0, sigma^2 I_m), X ~ mu under both): KL = n psi^2 / (2 sigma^2), psi the
  L2(mu) norm of reparam.identifiability (sum over the m outputs, mean over mu);
* planted attention study (targets sampled from the teacher's next-token distribution at every position of fixed
  input sequences): KL = tokens(n) psi^2, psi^2 the per-token KL(teacher || student) of its inverse mode
  (reparam.lm.planted.inverse.kl_on) and tokens(n) = sequences x draws x seq_len of the study's fits.

LB(n) = sup over delta of the bound. psi is known on a grid of delta; between grid points it is interpolated
linearly in log-log, below the smallest delta extrapolated with slope 1 where the curve's own slope near 0 is 1
(`psi_on_grid`), never above the largest; `extrapolated` marks the n whose sup lies below the grid. Two versions
per cell:

* `lower_bound`: C = 1 over every delta: the largest value the two-point method can give, i.e. the bound up to
  the pair's constant C (which is >= 1 always);
* `lower_bound_proven`: from attained pairs only, with the constant that THEORY section 8 (docs/theory.md) proves: C = 8 for
  split pairs (one true atom's weight shared by two atoms within R <= min(rho / 2, 2 sqrt(min(beta, 1 - beta)))
  of it, rho half the smallest distance between true atoms in prefix space; the witness is one, with psi at
  round-off) against any estimator, C = 2 for exact-specified pairs whose every atom stays in its own cell against
  estimators with L* atoms. NaN for the planted study (no constant is established for its relative distance).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .validation import DataError, check_list, check_number, require

#: Separation constants that THEORY section 8 (docs/theory.md) proves (Lemma 2 and Lemma 3).
SPLIT_SEPARATION = 8.0
EXACT_SEPARATION = 2.0

#: Columns of the lower-bound table (one row per cell and n).
LB_COLUMNS = ["study", "base", "structure", "regime", "latent_dim", "replicate", "n", "kl_per_psi2", "lower_bound",
              "delta_at_sup", "psi_at_sup", "kl_at_sup", "tv_bound", "extrapolated", "separation_constant",
              "proven_delta_max", "lower_bound_proven", "delta_at_sup_proven"]


@dataclass
class MinimaxConfig:
    """Settings of the minimax tables (`reparam minimax`).

    n_synthetic: sample sizes of the synthetic bound (> 0); the measured sizes are added.
    n_planted: draws per input position of the planted bound (the asymptotic study's n); measured sizes added.
    delta_points_per_decade: resolution of the sup over delta between the smallest and largest grid delta.
    delta_decades_below: how far below the smallest measured delta the sup extends (slope-1 extrapolation).
    targets_synthetic, targets_planted: target errors for the samples each structure needs.
    reference_synthetic, reference_planted: the structure the sample ratios are taken against.
    witness_inputs: points of mu on which the split pairs' psi is evaluated (as the committed curves: 1000).
    split_points_per_decade: deltas per decade of the split pairs of the proven over-specified bound.
    level: confidence level of the measured errors' intervals (t interval over replicate streams).
    """

    n_synthetic: list[float] = field(default_factory=lambda: [float(x) for x in np.logspace(1, 12, 45)])
    n_planted: list[float] = field(default_factory=lambda: [float(x) for x in np.logspace(0, 5, 21)])
    delta_points_per_decade: int = 40
    delta_decades_below: float = 6.0
    targets_synthetic: list[float] = field(default_factory=lambda: [0.3, 0.1, 0.03, 0.01])
    targets_planted: list[float] = field(default_factory=lambda: [0.3, 0.1, 0.03])
    reference_synthetic: str = "shared_mlp"
    reference_planted: str = "shared"
    witness_inputs: int = 1000
    split_points_per_decade: int = 4
    level: float = 0.95

    def __post_init__(self):
        for name in ("n_synthetic", "n_planted", "targets_synthetic", "targets_planted"):
            check_list(name, getattr(self, name), item_check=lambda f, x: check_number(f, x, low=0, low_open=True))
        require(int(self.delta_points_per_decade) >= 2, "delta_points_per_decade", self.delta_points_per_decade,
                "an integer >= 2")
        check_number("delta_decades_below", self.delta_decades_below, low=0)
        check_number("level", self.level, low=0, high=1, low_open=True, high_open=True)
        require(int(self.witness_inputs) >= 10, "witness_inputs", self.witness_inputs, "an integer >= 10")
        require(int(self.split_points_per_decade) >= 1, "split_points_per_decade", self.split_points_per_decade,
                "an integer >= 1")


# --------------------------------------------------------------------------------------------------
# The two-point bound


def tv_upper_bound(kl) -> np.ndarray:
    """The smaller of Pinsker's sqrt(KL / 2) and Bretagnolle-Huber's sqrt(1 - exp(-KL)), capped at 1."""
    kl = np.maximum(np.asarray(kl, dtype=float), 0.0)
    return np.minimum(1.0, np.minimum(np.sqrt(kl / 2), np.sqrt(-np.expm1(-kl))))


def psi_on_grid(delta, psi, grid, floor: float = 1e-10, slope_points: int = 3,
                slope_tol: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """psi at `grid` from a curve (delta, psi): log-log linear between two neighbouring points of the curve when
    both exceed `floor`; the larger of the two where one is at round-off (a log-log line from 1e-17 to 1e-3 would
    invent pairs that nobody computed; the larger neighbour can only lower the bound); below the smallest delta,
    slope 1 (psi / delta constant) only where the log-log slope over the `slope_points` smallest deltas is within
    1 +- slope_tol (psi ~ c delta near 0, the inverse bound's regime), else NaN (e.g. an over-specified planted
    curve, whose psi tends to a positive value as delta -> 0); NaN above the largest. Returns (psi_grid,
    extrapolated: bool per grid point)."""
    delta, psi, grid = (np.asarray(a, dtype=float) for a in (delta, psi, grid))
    keep = np.isfinite(delta) & np.isfinite(psi) & (delta > 0)
    delta, psi = delta[keep], np.maximum(psi[keep], 1e-300)
    if len(delta) == 0:
        return np.full(grid.shape, np.nan), np.zeros(grid.shape, bool)
    order = np.argsort(delta)
    delta, psi = delta[order], psi[order]
    ld, lp, lg = np.log(delta), np.log(psi), np.log(grid)
    out = np.exp(np.interp(lg, ld, lp))
    if len(ld) > 1:
        right = np.clip(np.searchsorted(ld, lg), 1, len(ld) - 1)
        inside = (lg > ld[0]) & (lg < ld[-1])
        rough = inside & ((psi[right - 1] <= floor) | (psi[right] <= floor))
        out[rough] = np.maximum(psi[right - 1], psi[right])[rough]
    below = lg < ld[0]
    k = min(slope_points, len(ld))
    near_zero = psi[:k] > floor
    slope = np.polyfit(ld[:k], lp[:k], 1)[0] if k >= 2 and near_zero.all() else np.nan
    out[below] = psi[0] * np.exp(lg[below] - ld[0]) if abs(slope - 1) <= slope_tol else np.nan
    out[lg > ld[-1] + 1e-12] = np.nan
    return out, below


def two_point_lower_bound(deltas, psis, ns, kl_per_psi2: float, separation: float = 1.0) -> pd.DataFrame:
    """sup over the given (delta, psi) pairs of (delta / (2 separation)) (1 - TV bound(n kl_per_psi2 psi^2)) for
    every n: one row per n with lower_bound, delta_at_sup, psi_at_sup, kl_at_sup, tv_bound (0 and NaN where no
    pair is given). `kl_per_psi2` is the n = 1 KL per unit psi^2 (1 / (2 sigma^2) or tokens per n)."""
    check_number("kl_per_psi2", kl_per_psi2, low=0, low_open=True)
    check_number("separation", separation, low=1)
    deltas, psis = np.asarray(deltas, float), np.asarray(psis, float)
    ok = np.isfinite(deltas) & np.isfinite(psis)
    deltas, psis = deltas[ok], psis[ok]
    rows = []
    for n in np.asarray(ns, float):
        if len(deltas) == 0:
            rows.append(dict(n=n, lower_bound=0.0, delta_at_sup=np.nan, psi_at_sup=np.nan, kl_at_sup=np.nan,
                             tv_bound=np.nan))
            continue
        kl = n * kl_per_psi2 * psis ** 2
        tv = tv_upper_bound(kl)
        value = deltas / (2 * separation) * (1 - tv)
        i = int(np.argmax(value))
        rows.append(dict(n=n, lower_bound=float(value[i]), delta_at_sup=float(deltas[i]), psi_at_sup=float(psis[i]),
                         kl_at_sup=float(kl[i]), tv_bound=float(tv[i])))
    return pd.DataFrame(rows)


def curve_lower_bound(delta, psi, ns, kl_per_psi2: float, config: MinimaxConfig) -> pd.DataFrame:
    """The C = 1 bound of one psi curve: the sup over a fine log grid of delta (interpolated psi, `psi_on_grid`),
    with `extrapolated` True where the sup is attained below the curve's smallest delta."""
    delta = np.asarray(delta, float)
    finite = delta[np.isfinite(delta) & (delta > 0) & np.isfinite(np.asarray(psi, float))]
    if len(finite) == 0:
        out = two_point_lower_bound([], [], ns, kl_per_psi2)
        return out.assign(extrapolated=False)
    lo = math.log10(finite.min()) - config.delta_decades_below
    hi = math.log10(finite.max())
    grid = np.unique(np.concatenate([np.logspace(lo, hi, int(round((hi - lo) * config.delta_points_per_decade)) + 1),
                                     finite]))
    psi_grid, _ = psi_on_grid(delta, psi, grid)
    out = two_point_lower_bound(grid, psi_grid, ns, kl_per_psi2)
    return out.assign(extrapolated=out["delta_at_sup"] < finite.min() * (1 - 1e-12))


# --------------------------------------------------------------------------------------------------
# Proven separation constants (THEORY section 8 (docs/theory.md), Lemmas 2 and 3) on the synthetic canonical truth


def _min_true_half_distance(truth) -> float:
    """rho: half the smallest distance between two true atoms in prefix space (k, v)."""
    k, v, _ = truth.prefix()
    theta = torch.cat([k, v], -1)
    d = torch.cdist(theta, theta)
    d = d + torch.diag(torch.full((theta.shape[0],), float("inf"), dtype=d.dtype))
    return float(d.min()) / 2


def _min_curve(y: float) -> float:
    """m(y) = min(y, y^2): the smallest cost of a distance y in a Voronoi term of exponent 1 or 2."""
    return min(y, y * y)


def exact_proven_delta_max(truth) -> float:
    """The largest delta for which Lemma 2 (exact-specified pairs, C = 2) holds on `truth`: every atom of G_delta
    stays within min(1/2, rho/2) of its true atom (Delta_j <= delta / (w_min - delta)) and delta / 2 <= c0 =
    min(w_min - delta, (w_min / 2) min(1, m(3 rho / 4)))."""
    rho = _min_true_half_distance(truth)
    w_min = float(truth.prefix()[2].exp().min())
    ok = []
    for delta in np.logspace(-6, math.log10(w_min), 2001)[:-1]:
        spread = delta / (w_min - delta)
        c0 = min(w_min - delta, 0.5 * w_min * min(1.0, _min_curve(0.75 * rho)))
        if spread <= min(0.5, rho / 2) and delta / 2 <= c0:
            ok.append(delta)
    return float(max(ok)) if ok else 0.0


class _Psi:
    """||f_G - f_G*||_{L2(mu)} (the norm of reparam.identifiability) on fixed inputs X, with the pretrained experts'
    part and f_G* computed once."""

    def __init__(self, truth, X: Tensor):
        self.truth, self.pre, self.f_true = truth, truth.experts.collapse(X), truth.regression(X)
        self.X = X

    def __call__(self, thetas: Tensor, n_atoms: int) -> np.ndarray:
        """thetas (K, P) -> psi (K,), all members in one batched pass."""
        from .moe import mixture_output

        keys, values, biases = self.truth.structure.prefix(thetas, n_atoms)
        f = mixture_output(self.X, keys, values, biases, *self.pre)  # (K, n, m)
        return (f - self.f_true).square().sum(-1).mean(-1).sqrt().numpy()


def _inputs(truth, n_inputs: int, seed: int) -> Tensor:
    from .moe import DTYPE

    rng = np.random.default_rng([int(seed), int(n_inputs), 41])
    return torch.as_tensor(rng.uniform(-truth.x_scale, truth.x_scale, size=(int(n_inputs), truth.d)), dtype=DTYPE)


def _at_delta(D, make, delta: float, n_families: int, iterations: int = 50) -> list[Tensor | None]:
    """For each of n_families one-parameter families make(scales (K,)) -> thetas (K, P): the member whose D
    (thetas (K, P) -> (K,)) equals delta, by a bisection on the log scale run on all families at once; None for a
    family that never reaches delta (in the bracket [e^-30, e^6])."""
    lo, hi = torch.full((n_families,), -30.0, dtype=torch.float64), torch.full((n_families,), 6.0, dtype=torch.float64)
    reached = D(make(hi.exp())) >= delta
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        below = D(make(mid.exp())) < delta
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    thetas = make(hi.exp())
    return [thetas[k] if reached[k] else None for k in range(n_families)]


def _searched_directions(ratio, dim: int, rng: np.random.Generator, n_directions: int, rounds: int = 6,
                         keep: int = 4) -> Tensor:
    """`keep` unit directions with small ratio(directions (K, dim)) -> (K,) (psi / delta of the pair each makes at a
    fixed small delta): `n_directions` random ones, then `rounds` of random perturbations of the best, shrinking.
    Any direction gives valid pairs; a better one only makes the proven bound larger."""
    unit = lambda z: z / z.norm(dim=-1, keepdim=True)  # noqa: E731
    pool = unit(torch.as_tensor(rng.standard_normal((n_directions, dim)), dtype=torch.float64))
    score = torch.as_tensor(ratio(pool))
    for step in np.geomspace(0.5, 0.02, rounds):
        best = pool[torch.argsort(score)[:keep]]
        trial = unit(best.repeat(n_directions // keep, 1)
                     + step * torch.as_tensor(rng.standard_normal((n_directions // keep * keep, dim)), dtype=torch.float64))
        pool, score = torch.cat([best, trial]), torch.cat([torch.sort(score).values[:keep], torch.as_tensor(ratio(trial))])
    return pool[torch.argsort(score)[:keep]]


def exact_pairs(truth, deltas, n_inputs: int, n_directions: int = 32, seed: int = 0) -> pd.DataFrame:
    """Exact-specified pairs G_1 = G* + t z (all native parameters, biases included) at every delta (t solved so
    that the prefix-space D equals delta), along a few directions z with small psi / delta (`_searched_directions`,
    seeded, scored at the smallest delta): the attained pairs of the proven exact-specified bound below the
    committed grid (Lemma 2 holds for every G_1 with one atom per cell, whatever its shape). Columns delta, psi (the
    best direction per delta)."""
    from .identifiability import prefix_voronoi

    psi = _Psi(truth, _inputs(truth, n_inputs, seed))
    D = lambda thetas: prefix_voronoi(truth, thetas, truth.n_atoms)  # noqa: E731
    mover = lambda directions: (lambda t: truth.theta + t.unsqueeze(-1) * directions)  # noqa: E731

    def pairs(directions: Tensor, delta: float) -> list[Tensor | None]:
        return _at_delta(D, mover(directions), delta, len(directions))

    def ratio(directions: Tensor) -> np.ndarray:
        found = pairs(directions, float(min(deltas)))
        out = np.full(len(found), np.inf)
        ok = [k for k, theta in enumerate(found) if theta is not None]
        if ok:
            out[ok] = psi(torch.stack([found[k] for k in ok]), truth.n_atoms) / float(min(deltas))
        return out

    rng = np.random.default_rng([int(seed), 43])
    directions = _searched_directions(ratio, truth.theta.shape[-1], rng, n_directions)
    rows = []
    for delta in deltas:
        found = [theta for theta in pairs(directions, float(delta)) if theta is not None]
        if found:
            rows.append(dict(delta=float(delta), psi=float(psi(torch.stack(found), truth.n_atoms).min())))
    return pd.DataFrame(rows, columns=["delta", "psi"])


def split_theta(truth, direction: Tensor, scale: float, beta: float = 0.5, atom: int = 0) -> Tensor:
    """Native parameters (P,) of the split of true atom `atom` along the native `direction` at `scale`: the atoms
    p* + (1 - beta) scale z and p* - beta scale z with weights beta w and (1 - beta) w (the second appended), every
    other atom and global parameter unchanged. In prefix space it is a split pair of Lemma 3 (THEORY section 8 (docs/theory.md))
    once both atoms lie within R of the true atom; its psi is > 0 unless the split is f-equivalent (the witness)."""
    s = truth.structure
    b_true, atoms_true, globals_ = s.split(truth.theta, truth.n_atoms)
    biases = torch.cat([b_true, b_true[atom:atom + 1]]).clone()
    biases[atom] = b_true[atom] + math.log(beta)
    biases[-1] = b_true[atom] + math.log(1 - beta)
    atoms = torch.cat([atoms_true, atoms_true[atom:atom + 1]]).clone()
    atoms[atom] = atoms_true[atom] + (1 - beta) * scale * direction
    atoms[-1] = atoms_true[atom] - beta * scale * direction
    return s.join(biases, atoms, globals_)


def split_pair(truth, theta: Tensor, psi: float, atom: int = 0) -> dict:
    """A split pair G_1 (native parameters with L* + 1 atoms, the split atoms `atom` and the last) measured in
    prefix space: delta = D(G_1, G*), the split weight fraction beta, R = the larger distance of a split atom to
    the true atom, rho, whether Lemma 3 covers it (R <= min(rho / 2, 2 sqrt(min(beta, 1 - beta)))) and its psi
    (given: `_Psi` evaluates a batch of pairs at once)."""
    from .identifiability import prefix_voronoi

    L = truth.n_atoms + 1
    keys, values, biases = truth.structure.prefix(theta, L)
    k, v, _ = truth.prefix()
    centre = torch.cat([k, v], -1)[atom]
    split = torch.cat([keys, values], -1)[[atom, L - 1]]
    w = biases.exp()[[atom, L - 1]]
    beta = float(w[0] / w.sum())
    R = float((split - centre).norm(dim=-1).max())
    rho = _min_true_half_distance(truth)
    return dict(delta=float(prefix_voronoi(truth, theta, L)), beta=beta, R=R, rho=rho,
                covered=R <= min(rho / 2, 2 * math.sqrt(min(beta, 1 - beta))), psi=float(psi))


def split_pairs(truth, deltas, n_inputs: int, n_directions: int = 32, seed: int = 0) -> pd.DataFrame:
    """Split pairs at every delta: the witness (reparam.identifiability.witness_at_delta, where the structure has
    one: psi at round-off) and splits with beta = 1/2 along a few native directions with small psi / delta
    (`_searched_directions`, seeded, scored at the smallest delta); one row per pair that exists (columns delta,
    beta, R, rho, covered, psi, kind)."""
    from .identifiability import prefix_voronoi, witness_at_delta
    from .structures import NoWitnessError

    psi = _Psi(truth, _inputs(truth, n_inputs, seed))
    D = lambda thetas: prefix_voronoi(truth, thetas, truth.n_atoms + 1)  # noqa: E731

    def pairs(directions: Tensor, delta: float) -> list[Tensor | None]:
        splits = lambda scales: torch.stack([split_theta(truth, z, float(sc)) for z, sc in zip(directions, scales)])  # noqa: E731
        return _at_delta(D, splits, delta, len(directions))

    def ratio(directions: Tensor) -> np.ndarray:
        found = pairs(directions, float(min(deltas)))
        out = np.full(len(found), np.inf)
        ok = [k for k, theta in enumerate(found) if theta is not None]
        if ok:
            out[ok] = psi(torch.stack([found[k] for k in ok]), truth.n_atoms + 1) / float(min(deltas))
        return out

    rng = np.random.default_rng([int(seed), 47])
    directions = _searched_directions(ratio, truth.structure.atom_dim, rng, n_directions)
    rows = []
    for delta in deltas:
        candidates = []
        try:
            candidates.append(("witness", witness_at_delta(truth, float(delta))))
        except NoWitnessError:
            pass
        candidates += [("searched direction", theta) for theta in pairs(directions, float(delta))]
        candidates = [(kind, theta) for kind, theta in candidates if theta is not None]
        if candidates:
            values = psi(torch.stack([theta for _, theta in candidates]), truth.n_atoms + 1)
            rows += [{**split_pair(truth, theta, value), "kind": kind}
                     for (kind, theta), value in zip(candidates, values)]
    return pd.DataFrame(rows, columns=["delta", "beta", "R", "rho", "covered", "psi", "kind"])


def split_proven_pairs(truth, delta_min: float, delta_max: float, points_per_decade: int,
                       n_inputs: int) -> pd.DataFrame:
    """The best covered split pair (smallest psi) at each delta of a log grid from delta_min to delta_max, refined
    between the largest delta that Lemma 3 covers and the next: the pairs of the proven over-specified bound (the
    columns of `split_pairs`; empty when no pair is covered)."""
    decades = math.log10(delta_max / delta_min)
    grid = np.logspace(math.log10(delta_min), math.log10(delta_max), max(2, int(round(decades * points_per_decade)) + 1))
    pairs = split_pairs(truth, grid, n_inputs)
    covered = pairs[pairs["covered"]]
    if len(covered) == 0:
        return covered
    top = float(covered["delta"].max())
    uncovered = pairs.loc[~pairs["covered"] & (pairs["delta"] > top), "delta"]
    if len(uncovered):  # refine between the largest covered delta and the next one
        more = split_pairs(truth, np.logspace(math.log10(top), math.log10(float(uncovered.min())), 6)[1:-1], n_inputs)
        covered = pd.concat([covered, more[more["covered"]]], ignore_index=True)
    return covered.sort_values("psi").groupby("delta", as_index=False).first().sort_values("delta")


# --------------------------------------------------------------------------------------------------
# Tables


def _with_measured_ns(ns, measured: pd.DataFrame | None, keys: dict) -> np.ndarray:
    extra = []
    if measured is not None and len(measured):
        m = measured
        for k, v in keys.items():
            m = m[m[k] == v]
        extra = list(m["n"].astype(float))
    return np.unique(np.concatenate([np.asarray(ns, float), np.asarray(extra, float)]))


def synthetic_lower_bounds(curves: pd.DataFrame, config: MinimaxConfig,
                           measured: pd.DataFrame | None = None) -> pd.DataFrame:
    """LB(n) for every (structure, regime, latent_dim) of the committed inverse-bound curve table (columns
    structure, regime, latent_dim, delta, psi): the C = 1 bound from the curve, and the proven bound from attained
    pairs only: over-specified, the best covered split pair per delta (Lemma 3, C = 8: the witness where one exists,
    else splits along random directions); exact-specified, the committed pairs with delta <= the range of Lemma 2
    (C = 2) and perturbations of the truth below the committed grid."""
    from .truth import canonical_truth

    missing = [c for c in ["structure", "regime", "latent_dim", "delta", "psi"] if c not in curves.columns]
    if missing:
        raise DataError(f"the inverse-bound curve table lacks the columns {missing}")
    out = []
    for (structure, regime, latent_dim), c in curves.groupby(["structure", "regime", "latent_dim"], sort=False):
        truth = canonical_truth(structure, latent_dim=int(latent_dim))
        sigma = float(truth.noise)
        kl_per_psi2 = 1.0 / (2 * sigma ** 2)
        ns = _with_measured_ns(config.n_synthetic, measured, dict(study="synthetic", structure=structure,
                                                                  regime=regime, latent_dim=latent_dim))
        lb = curve_lower_bound(c["delta"], c["psi"], ns, kl_per_psi2, config)
        proven, constant, delta_max = None, np.nan, np.nan
        if regime == "over":
            top = float(c["delta"].max())
            pairs = split_proven_pairs(truth, top * 10 ** -config.delta_decades_below, top,
                                       config.split_points_per_decade, config.witness_inputs)
            if len(pairs):
                constant, delta_max = SPLIT_SEPARATION, float(pairs["delta"].max())
                proven = two_point_lower_bound(pairs["delta"], pairs["psi"], ns, kl_per_psi2, constant)
        elif regime == "exact":
            delta_max = exact_proven_delta_max(truth)
            keep = c.loc[c["delta"] <= delta_max, ["delta", "psi"]]
            if len(keep):
                constant = EXACT_SEPARATION
                low = float(keep["delta"].min())
                below = np.logspace(math.log10(low) - config.delta_decades_below, math.log10(low),
                                    int(config.delta_decades_below * config.split_points_per_decade) + 1)[:-1]
                pairs = pd.concat([keep, exact_pairs(truth, below, config.witness_inputs)], ignore_index=True)
                proven = two_point_lower_bound(pairs["delta"], pairs["psi"], ns, kl_per_psi2, constant)
        lb = lb.assign(study="synthetic", base="", structure=structure, regime=regime, latent_dim=int(latent_dim),
                       replicate=0, kl_per_psi2=kl_per_psi2, separation_constant=constant, proven_delta_max=delta_max,
                       lower_bound_proven=proven["lower_bound"].to_numpy() if proven is not None else np.nan,
                       delta_at_sup_proven=proven["delta_at_sup"].to_numpy() if proven is not None else np.nan)
        out.append(lb)
    return pd.concat(out, ignore_index=True)[LB_COLUMNS]


def planted_tokens_per_n(fits: pd.DataFrame) -> float:
    """Sampled target tokens per unit of the planted study's n (sequences x seq_len for the draws axis), read from
    the fits table's `tokens` and `n` columns; DataError unless it is one number."""
    ratio = (fits["tokens"].astype(float) / fits["n"].astype(float)).unique()
    if len(ratio) != 1:
        raise DataError(f"the planted fits have {len(ratio)} different tokens / n ratios ({sorted(ratio)[:5]}): "
                        "the bound needs one")
    return float(ratio[0])


def planted_lower_bounds(psi: pd.DataFrame, tokens_per_n: float, config: MinimaxConfig,
                         measured: pd.DataFrame | None = None) -> pd.DataFrame:
    """LB(n) (C = 1) for every (base, structure, regime, replicate) of the planted inverse mode's table (columns
    base, structure, regime, replicate, delta, psi; psi = sqrt of the per-token KL, delta = relative prefix
    distance), with KL = n tokens_per_n psi^2. No separation constant is established for the relative distance
    (THEORY section 8 (docs/theory.md)): the proven columns are NaN."""
    missing = [c for c in ["base", "structure", "regime", "replicate", "delta", "psi"] if c not in psi.columns]
    if missing:
        raise DataError(f"planted psi table lacks the columns {missing}")
    out = []
    for (base, structure, regime, replicate), c in psi.groupby(["base", "structure", "regime", "replicate"]):
        ns = _with_measured_ns(config.n_planted, measured, dict(study="planted", structure=structure, regime=regime))
        lb = curve_lower_bound(c["delta"], c["psi"], ns, tokens_per_n, config)
        out.append(lb.assign(study="planted", base=base, structure=structure, regime=regime, latent_dim=np.nan,
                             replicate=int(replicate), kl_per_psi2=tokens_per_n, separation_constant=np.nan,
                             proven_delta_max=np.nan, lower_bound_proven=np.nan, delta_at_sup_proven=np.nan))
    return pd.concat(out, ignore_index=True)[LB_COLUMNS]


def measured_errors(rows: pd.DataFrame, study: str, error: str, level: float = 0.95,
                    latent_dim: int | float = np.nan) -> pd.DataFrame:
    """Mean error of the package's estimator per (structure, regime, n) over replicate streams, with a t interval:
    columns study, structure, regime, latent_dim, n, error, mean, lo, hi, replicates. Rows are the valid fits
    (synthetic: `valid`; planted: the selected estimate of each fit)."""
    from .rates import mean_half_width

    if error not in rows.columns:
        raise DataError(f"the measured table has no column {error!r}")
    out = []
    for (structure, regime, n), g in rows.groupby(["structure", "regime", "n"]):
        x = g[error].astype(float).to_numpy()
        x = x[np.isfinite(x)]
        k = len(x)
        mean = float(x.mean()) if k else np.nan
        half = mean_half_width(x, level)
        out.append(dict(study=study, structure=structure, regime=regime, latent_dim=latent_dim, n=float(n),
                        error=error, mean=mean, lo=mean - half, hi=mean + half, replicates=k))
    return pd.DataFrame(out)


def compare_measured(bounds: pd.DataFrame, measured: pd.DataFrame) -> pd.DataFrame:
    """The measured error beside the bound at the same n: for the planted study the smallest bound over the psi
    replicates of the study's base (random_init: the base the estimator was fitted on). `below_bound` (C = 1) and
    `below_proven`: the interval's upper end lies below the bound. The estimator's error is measured at G* only and
    the bound is about the worst of G* and G_delta, so a flag is not a contradiction by itself
    (THEORY section 8 (docs/theory.md))."""
    b = bounds[(bounds["study"] == "synthetic") | (bounds["base"] == "random_init")]
    keys = ["study", "structure", "regime", "n"]
    agg = b.groupby(keys + ["latent_dim"], dropna=False).agg(
        lower_bound=("lower_bound", "min"), lower_bound_proven=("lower_bound_proven", "min")).reset_index()
    agg["latent_dim"] = agg["latent_dim"].fillna(-1)  # the planted cells have none: -1 matches -1
    m = measured.assign(latent_dim=measured["latent_dim"].fillna(-1))
    merged = m.merge(agg, on=keys + ["latent_dim"], how="left").replace({"latent_dim": {-1: np.nan}})
    merged["below_bound"] = merged["hi"] < merged["lower_bound"]
    merged["below_proven"] = merged["hi"] < merged["lower_bound_proven"]
    return merged


def samples_to_reach(ns, values, target: float, at_start: float | None = None) -> float:
    """The smallest n at which a decreasing curve first reaches `target` (log-log interpolation between the two
    sizes around the crossing); inf when it never gets there; when it starts at or below the target, `at_start`
    (default: the first n). A lower bound that is below the target from the start requires nothing: pass 0."""
    ns, values = np.asarray(ns, float), np.asarray(values, float)
    order = np.argsort(ns)
    ns, values = ns[order], values[order]
    hit = np.nonzero(values <= target)[0]
    if len(hit) == 0:
        return math.inf
    i = int(hit[0])
    if i == 0:
        return float(ns[0]) if at_start is None else float(at_start)
    a, b = values[i - 1], values[i]
    if b <= 0:
        return float(ns[i])
    t = (math.log(a) - math.log(target)) / (math.log(a) - math.log(b))
    return float(math.exp(math.log(ns[i - 1]) + t * (math.log(ns[i]) - math.log(ns[i - 1]))))


def samples_needed(bounds: pd.DataFrame, measured: pd.DataFrame, study: str, targets, reference: str) -> pd.DataFrame:
    """Per (structure, regime, latent_dim, base) and target: the n below which the lower bound says the worst case
    cannot have reached the target (`n_lower_bound`, C = 1; `n_lower_bound_proven`), the n at which the estimator's
    mean error reached it (`n_measured`, NaN when not within the measured sizes; the smallest size when the mean
    is below the target there). 0: the bound is below the target at every n (it requires nothing) and the ratio of n_lower_bound to
    the reference structure's in the same regime, latent_dim and base (`ratio_to_reference`; and of the proven n,
    `ratio_proven_to_reference`; inf where only the reference reaches the target, NaN where neither does or the
    reference requires nothing). For the planted study the bound is the smallest over psi replicates."""
    b = bounds[bounds["study"] == study]
    group = ["base", "structure", "regime", "latent_dim"]
    agg = b.groupby(group + ["n"], dropna=False).agg(lb=("lower_bound", "min"),
                                                     lbp=("lower_bound_proven", "min")).reset_index()
    rows = []
    for key, g in agg.groupby(group, dropna=False):
        base, structure, regime, latent_dim = key
        meas = measured[(measured["study"] == study) & (measured["structure"] == structure)
                        & (measured["regime"] == regime)]
        if study == "synthetic":
            meas = meas[meas["latent_dim"] == latent_dim]
        else:
            meas = meas if base == "random_init" else meas.iloc[0:0]
        for target in targets:
            proven = g["lbp"].to_numpy(float)
            n_meas = samples_to_reach(meas["n"], meas["mean"], target) if len(meas) else np.nan
            rows.append(dict(study=study, base=base, structure=structure, regime=regime, latent_dim=latent_dim,
                             target=float(target), n_lower_bound=samples_to_reach(g["n"], g["lb"], target, 0.0),
                             n_lower_bound_proven=(samples_to_reach(g["n"], proven, target, 0.0)
                                                   if np.isfinite(proven).any() else np.nan),
                             n_measured=n_meas if np.isfinite(n_meas) else np.nan))
    out = pd.DataFrame(rows)
    key = lambda r: (r.base, r.regime, str(r.latent_dim), r.target)  # noqa: E731 (str: NaN latent_dim matches)
    for column, ratio in (("n_lower_bound", "ratio_to_reference"), ("n_lower_bound_proven", "ratio_proven_to_reference")):
        ref = {key(r): getattr(r, column) for r in out.itertuples() if r.structure == reference}
        with np.errstate(invalid="ignore", divide="ignore"):
            out[ratio] = [np.float64(getattr(r, column)) / np.float64(ref[key(r)]) if key(r) in ref else np.nan
                          for r in out.itertuples()]
    return out


# --------------------------------------------------------------------------------------------------
# Verdicts and the report


def _tail(n: np.ndarray, lb: np.ndarray, tail_decades: float, rate_tol: float) -> tuple[float, str]:
    """(log-log slope of a bound over its last `tail_decades` of n where it is positive, verdict): 'does not
    vanish' (slope > -rate_tol), 'falls like n^-1/2' (within rate_tol of -1/2), 'falls with slope s', 'unknown
    beyond the delta grid' (the bound reaches 0 inside the n range), '' for a bound that was not computed."""
    if not np.isfinite(lb).any():
        return np.nan, ""
    positive = np.isfinite(lb) & (lb > 1e-12 * np.nanmax(np.append(lb, 1e-300)))
    tail = positive & (n >= n.max() / 10 ** tail_decades)
    slope = float(np.polyfit(np.log(n[tail]), np.log(lb[tail]), 1)[0]) if tail.sum() >= 2 else np.nan
    if not positive[-1]:
        return slope, "unknown beyond the delta grid"
    if slope > -rate_tol:
        return slope, "does not vanish"
    if abs(slope + 0.5) <= rate_tol:
        return slope, "falls like n^-1/2"
    return slope, f"falls with slope {slope:.2f}"


def bound_verdicts(bounds: pd.DataFrame, tail_decades: float = 2.0, rate_tol: float = 0.05) -> pd.DataFrame:
    """One row per (study, base, structure, regime, latent_dim): each bound (C = 1 and proven; the smallest over
    truth replicates) at the largest n, its log-log slope over the last `tail_decades` of n and its verdict
    (`_tail`)."""
    group = ["study", "base", "structure", "regime", "latent_dim"]
    rows = []
    for key, g in bounds.groupby(group, dropna=False, sort=False):
        per_n = g.groupby("n").agg(lb=("lower_bound", "min"), lbp=("lower_bound_proven", "min")).reset_index()
        n, lb, lbp = (per_n[c].to_numpy(float) for c in ("n", "lb", "lbp"))
        slope, verdict = _tail(n, lb, tail_decades, rate_tol)
        slope_p, verdict_p = _tail(n, lbp, tail_decades, rate_tol)
        rows.append(dict(zip(group, key), n_max=float(n.max()), lower_bound_at_n_max=float(lb[-1]),
                         lower_bound_proven_at_n_max=float(lbp[-1]),
                         separation_constant=float(g["separation_constant"].iloc[0]),
                         proven_delta_max=float(g["proven_delta_max"].iloc[0]), tail_slope=slope, verdict=verdict,
                         tail_slope_proven=slope_p, verdict_proven=verdict_p))
    return pd.DataFrame(rows)


def _fmt(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return ""
    if np.isinf(x):
        return "never"
    return f"{x:.{digits}g}"


def minimax_report(verdicts: pd.DataFrame, needed: pd.DataFrame, comparison: pd.DataFrame, bounds: pd.DataFrame,
                   config: MinimaxConfig, command: str) -> str:
    """The markdown report of `reparam minimax` (figures/minimax/report.md): every number read from the tables."""
    md = ["# Local minimax lower bound (Le Cam's two-point method)", "",
          "Derivation: THEORY section 8 (docs/theory.md). For every pair (G*, G_delta) of the inverse-bound curve psi(delta), "
          "no estimator has worst-case expected loss over the pair below (delta / (2C)) (1 - TV), TV <= "
          "min(sqrt(KL/2), sqrt(1 - exp(-KL))); LB(n) is the sup over delta. `C = 1` is the largest value the method "
          "can give (the bound up to the pair's separation constant C >= 1); `proven` uses attained pairs whose "
          "constant the derivation proves: C = 8 for split pairs (over-specified: the witness where one exists, "
          "else splits along random directions), C = 2 for exact-specified pairs with an L*-atom estimator (the "
          "committed pairs in the range of the lemma, then perturbations of the truth below the grid).",
          "- synthetic: KL = n psi^2 / (2 sigma^2), psi = ||f_G - f_G*||_{L2(mu)} from "
          "figures/inverse-bound/inverse_bound.csv, loss D in prefix space (k, v);",
          f"- planted attention study: KL = n x {_fmt(float(bounds.loc[bounds['study'] == 'planted', 'kl_per_psi2'].iloc[0]) if (bounds['study'] == 'planted').any() else np.nan)}"
          " sampled tokens x psi^2, psi^2 the per-token KL(teacher || student) of the inverse mode "
          "(figures/lm/planted/inverse/planted_psi.csv), loss the relative prefix distance; n = draws per position "
          "of the asymptotic study. No separation constant is established for this loss (C = 1 values only).",
          f"- Command: `{command}`", ""]
    md += ["## Verdict per structure", "",
           "| study | base | structure | regime | r | largest n | LB there, C = 1 | verdict, C = 1 (slope) | proven LB "
           "there | C | pairs up to delta | verdict, proven (slope) |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in verdicts.itertuples():
        dim = "" if pd.isna(r.latent_dim) else str(int(r.latent_dim))
        proven = f"{r.verdict_proven} ({_fmt(r.tail_slope_proven)})" if r.verdict_proven else "no constant proven"
        md.append(f"| {r.study} | {r.base} | {r.structure} | {r.regime} | {dim} | {_fmt(r.n_max, 2)} | "
                  f"{_fmt(r.lower_bound_at_n_max)} | {r.verdict} ({_fmt(r.tail_slope)}) | "
                  f"{_fmt(r.lower_bound_proven_at_n_max)} | {_fmt(r.separation_constant)} | "
                  f"{_fmt(r.proven_delta_max)} | {proven} |")
    md += ["", "## Samples the worst case needs", "",
           "n below which the bound says the worst case over the pair cannot reach the target (0: the bound is below "
           "the target at every n; never: the bound never gets there), the ratio to the reference structure in the "
           "same regime (synthetic: " + config.reference_synthetic + ", planted: " + config.reference_planted +
           "), and the n at which the estimator's mean error reached the target at G* (empty: not within the "
           "measured sizes).", "",
           "| study | base | structure | regime | r | target | n, bound C = 1 | ratio to reference | n, proven bound | "
           "ratio to reference | n, estimator |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in needed.itertuples():
        dim = "" if pd.isna(r.latent_dim) else str(int(r.latent_dim))
        md.append(f"| {r.study} | {r.base} | {r.structure} | {r.regime} | {dim} | {r.target:g} | "
                  f"{_fmt(r.n_lower_bound)} | {_fmt(r.ratio_to_reference)} | {_fmt(r.n_lower_bound_proven)} | "
                  f"{_fmt(r.ratio_proven_to_reference)} | {_fmt(r.n_measured)} |")
    unmeasured = sorted({f"{r.study} {r.structure} {r.regime}" + ("" if pd.isna(r.latent_dim) else f" r={int(r.latent_dim)}")
                         + (f" ({r.base} base)" if isinstance(r.base, str) and r.base else "")
                         for r in verdicts.itertuples()
                         if not ((comparison["study"] == r.study) & (comparison["structure"] == r.structure)
                                 & (comparison["regime"] == r.regime)
                                 & ((comparison["latent_dim"] == r.latent_dim) | (r.study == "planted"))
                                 & ((r.study == "synthetic") | (r.base == "random_init"))).any()})
    flagged = comparison[comparison["below_bound"] | comparison["below_proven"]]
    md += ["", "## The estimator against the bound", "",
           f"{len(comparison)} (structure, regime, n) cells measured; the upper end of the estimator's "
           f"{int(100 * config.level)}% interval lies below the C = 1 bound in {int(comparison['below_bound'].sum())} "
           f"and below the proven bound in {int(comparison['below_proven'].sum())}. The estimator's error is measured "
           "at G* only, and the bound is on the worse of G* and G_delta: a cell below the bound is allowed only if the "
           "estimator does worse at G_delta (not measured here).",
           "", "Cells with a bound but no measured error (the estimator was not run there): " +
           (", ".join(unmeasured) if unmeasured else "none") + "."]
    if len(flagged):
        md += ["", "| study | structure | regime | n | mean | upper end | LB (C = 1) | proven LB |", "|---|---|---|---|---|---|---|---|"]
        for r in flagged.itertuples():
            md.append(f"| {r.study} | {r.structure} | {r.regime} | {_fmt(r.n, 4)} | {_fmt(r.mean)} | {_fmt(r.hi)} | "
                      f"{_fmt(r.lower_bound)} | {_fmt(r.lower_bound_proven)} |")
    md.append("")
    return "\n".join(md)


#: The committed tables the minimax study reads, relative to the figures folder.
INPUTS = {
    "psi": "inverse-bound/inverse_bound.csv",
    "results": "results.csv",
    "planted_psi": "lm/planted/inverse/planted_psi.csv",
    "planted_fits": "lm/planted/asymptotic/planted_fits.csv",
}


#: the columns of each input that the bound reads (a damaged or foreign table is refused before any work)
INPUT_COLUMNS = {
    "psi": ["structure", "regime", "latent_dim", "delta", "psi"],
    "results": ["structure", "regime", "n", "valid", "voronoi_prefix"],
    "planted_psi": ["base", "structure", "regime", "replicate", "delta", "psi"],
    "planted_fits": ["structure", "regime", "n", "selected", "valid", "rel_dist"],
}


LABELS = ("structure", "regime", "base", "valid", "selected")  # the columns of INPUT_COLUMNS that are not numbers


def read_inputs(figures_dir) -> dict[str, pd.DataFrame]:
    """The committed tables of INPUTS under `figures_dir` (DataError naming the first one missing, unreadable or
    lacking a column the bound reads)."""
    from pathlib import Path

    from .validation import read_csv_table

    tables = {}
    for name, rel in INPUTS.items():
        path = Path(figures_dir) / rel
        if not path.is_file():
            raise DataError(f"figures={str(figures_dir)!r} lacks {rel} (the minimax bound reads it)")
        columns = INPUT_COLUMNS[name]
        tables[name] = read_csv_table(path, columns, "the minimax bound", numeric=[c for c in columns if c not in LABELS])
    return tables


def minimax_study(tables: dict[str, pd.DataFrame], config: MinimaxConfig) -> dict[str, pd.DataFrame]:
    """Every table of the minimax study from the committed inputs (`read_inputs`): bounds (LB per cell and n),
    measured (the estimator's mean error: synthetic `voronoi_prefix` of the valid fits at latent_dim 2, planted
    `rel_dist` of the selected valid estimates), comparison, needed (samples to reach each target) and verdicts."""
    results = tables["results"]
    synthetic = measured_errors(results[results["valid"].astype(bool)], "synthetic", "voronoi_prefix", config.level,
                                latent_dim=2)
    fits = tables["planted_fits"]
    chosen = fits[fits["selected"].astype(bool) & fits["valid"].astype(bool)]
    planted = measured_errors(chosen, "planted", "rel_dist", config.level)
    measured = pd.concat([synthetic, planted], ignore_index=True)
    bounds = pd.concat([synthetic_lower_bounds(tables["psi"], config, synthetic),
                        planted_lower_bounds(tables["planted_psi"], planted_tokens_per_n(fits), config, planted)],
                       ignore_index=True)
    needed = pd.concat([samples_needed(bounds, measured, "synthetic", config.targets_synthetic,
                                       config.reference_synthetic),
                        samples_needed(bounds, measured, "planted", config.targets_planted, config.reference_planted)],
                       ignore_index=True)
    return dict(bounds=bounds, measured=measured, comparison=compare_measured(bounds, measured), needed=needed,
                verdicts=bound_verdicts(bounds))
