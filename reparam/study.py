"""One cell of a convergence study: a setting, a sample size n and a set of replicates -> tidy rows.

Everything a study varies is in `Setting` (plain dataclasses, so Hydra can use them as structured
configs). `run_cell` draws the nested data of each replicate, builds the logged starts, fits all
replicates and starts as one batch, and measures every loss against the truth. Rows are plain dicts:
one per (replicate) fit, with the certificate (gap, converged, status) beside the errors.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np
import torch

from .fit import PrefixLeastSquares, SolverConfig
from .losses import cell_atom_errors, l2_error, voronoi_loss, voronoi_r
from .structures import ACTIVATIONS, STRUCTURES
from .truth import SHAPE_FIELDS, GroundTruth, canonical_shape, default_shape, make_truth
from .validation import check_choice, check_device, check_int, check_number, is_int

REGIMES = ("exact", "over")
INIT_MODES = ("near_truth", "random", "mixed")
TRUTH_KINDS = ("canonical", "random")
# The default sample sizes of every study (main job, StudyPlan, checks): log-spaced 300..1e5.
DEFAULT_N_GRID = (300, 1000, 3000, 10000, 30000, 100000)


@dataclass
class TruthConfig:
    """Which ground truth. kind: 'canonical' (documented values) or 'random' (drawn from `seed`).
    noise: sigma of Y (None = the truth's default 0.1). min_separation: random truths only.

    The shape (None = the kind's default, reparam.truth.default_shape):
    d: input dimension; m: output dimension; n_atoms: L*, the true prompts; n_experts: N, the pretrained experts;
    latent_dim: r, the latent size of the shared structures' p.
    canonical: d = 2 (the documented truth: m = 1, L* = 2, N = 2, r = 2, or r = 3 for "canonical-r3") or d = 8, 16
    (the head-like family of reparam.truth: m = 4 (1..d), L* = 2 (1..4), N = 2 (1..4), r = d (or d + 1)).
    random: any shape; the defaults are random_truth's, d = 2, m = 1, L* = 2, N = 2, r = 2.
    A shape field left at None, or set to the kind's default for the given d, is left out of every fingerprint
    (recorded_truth), so the setting ids of runs made before these fields existed stay valid."""

    kind: str = "canonical"
    seed: int = 0
    noise: float | None = None
    min_separation: float = 0.5
    d: Optional[int] = None
    m: Optional[int] = None
    n_atoms: Optional[int] = None
    n_experts: Optional[int] = None
    latent_dim: Optional[int] = None

    def shape(self) -> dict:
        """The shape fields as given (None = the kind's default)."""
        return {name: getattr(self, name) for name in SHAPE_FIELDS}


def recorded_truth(truth: dict) -> dict:
    """A truth section (a dict of TruthConfig's fields) as fingerprints record it: without the shape fields that are
    None or equal to the kind's default for its d (reparam.truth.default_shape), so that a default truth has the
    fingerprint it had before the shape fields existed, and `truth.d=2` spells the same setting as no `truth.d`.
    Values that are not valid are kept (validation reports them)."""
    out = dict(truth)
    kind, d = out.get("kind"), out.get("d")
    known = kind in TRUTH_KINDS and (d is None or is_int(d))
    defaults = (default_shape(kind, d) or {}) if known else {}  # the defaults at this d (none for an unknown d)
    if known:
        defaults["d"] = default_shape(kind)["d"]  # d itself is compared with the kind's own d
    for name in SHAPE_FIELDS:
        if name in out and (out[name] is None or (is_int(out[name]) and out[name] == defaults.get(name))):
            out.pop(name)
    return out


@dataclass
class InitConfig:
    """Starts of the non-convex fit (a statistical choice, so it is logged in every row).

    mode: 'near_truth' (truth + N(0, scale_n^2) on every coordinate; in over-specified fits the extra atoms
        split the weight of true atoms 1, 2, ... in turn), 'random' (biases U(-1, 1), atoms
        U(-random_scale, random_scale)), or 'mixed' (start 0 near the truth, the rest random).
    n_starts: starts per replicate; the fit with the lowest empirical loss is kept.
    The studies (main job, checks, robustness) use `STUDY_INIT`, 'mixed' with 5 starts (the near-truth start
    plus 4 random ones): a single near-truth start puts the extra atom of an over-specified fit on a copy of
    a true atom, i.e. ON the flat valley of THEORY section 7, so its result would depend on that one start.
    The dataclass default (one near-truth start) is the cheap choice for programmatic use and tests.
    scale, shrink: scale_n = scale * (n / 1000) ** (-shrink); shrink = 0 keeps it fixed.
    """

    mode: str = "near_truth"
    n_starts: int = 1
    scale: float = 0.1
    shrink: float = 0.0
    random_scale: float = 1.5


#: Starts of every study command (reparam convergence, check, robustness): near-truth + 4 random.
STUDY_INIT = InitConfig(mode="mixed", n_starts=5)


@dataclass
class Setting:
    """A fitted model against a truth.

    structure: registry name (reparam.structures.STRUCTURES).
    regime: 'exact' (L' = L*) or 'over' (L' = L* + extra_atoms).
    activation: sigma of shared_mlp / shared_learned.
    device: where the solver's sample-space pass runs, 'cpu' or 'cuda' (float64 on both; see reparam.fit).
    """

    structure: str = "shared_mlp"
    regime: str = "exact"
    extra_atoms: int = 1
    activation: str = "tanh"
    truth: TruthConfig = field(default_factory=TruthConfig)
    init: InitConfig = field(default_factory=InitConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    n_eval: int = 100_000
    device: str = "cpu"


def validate_setting(setting: Setting) -> None:
    """Range and name checks; ConfigError (reparam.validation) naming the field, the value and what is allowed."""
    check_choice("structure", setting.structure, sorted(STRUCTURES))
    check_choice("regime", setting.regime, list(REGIMES))
    check_int("extra_atoms", setting.extra_atoms, low=1)
    check_choice("activation", setting.activation, sorted(ACTIVATIONS))
    truth, init = setting.truth, setting.init
    check_choice("truth.kind", truth.kind, list(TRUTH_KINDS))
    if truth.noise is not None:  # None: the truth's default
        check_number("truth.noise", truth.noise, low=0)
    check_number("truth.min_separation", truth.min_separation, low=0)
    for name, value in truth.shape().items():
        if value is not None:  # None: the kind's default
            check_int(f"truth.{name}", value, low=1)
    if truth.kind == "canonical":
        canonical_shape(**truth.shape(), prefix="truth.")  # names the field and what the canonical truths support
    check_choice("init.mode", init.mode, list(INIT_MODES))
    check_int("init.n_starts", init.n_starts, low=1)
    check_number("init.scale", init.scale, low=0)
    check_number("init.shrink", init.shrink, low=0)
    check_number("init.random_scale", init.random_scale, low=0, low_open=True)
    check_int("n_eval", setting.n_eval, low=1)
    SolverConfig(**asdict(setting.solver))  # re-runs the solver's own checks on Hydra-built objects
    check_device(setting.device)  # names `device`; refuses 'cuda' where torch sees no GPU


def build_truth(setting: Setting) -> GroundTruth:
    t = setting.truth
    kwargs = {"min_separation": t.min_separation} if t.kind == "random" else {}
    return make_truth(t.kind, setting.structure, seed=t.seed, activation=setting.activation, noise=t.noise,
                      **t.shape(), **kwargs)


def n_fitted_atoms(setting: Setting, truth: GroundTruth) -> int:
    return truth.n_atoms + (setting.extra_atoms if setting.regime == "over" else 0)


def gap_scale(truth_loss: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """The denominator of the relative optimality gap: L_n(truth), or, when that is smaller, the float64
    resolution of the loss at the scale of the data, eps * mean ||Y_i||^2. With noise the truth's loss is the
    larger by many orders of magnitude (the rule is the relative one); on noise-free data L_n(truth) = 0 and the
    rule becomes absolute: a fit is valid when its loss is at the round-off floor of the data (gap <= gap_tol *
    eps * mean ||Y_i||^2), so a fit that reproduces the data counts and one stuck elsewhere does not."""
    floor = torch.finfo(torch.float64).eps * Y.square().sum(-1).mean(-1)
    return torch.maximum(truth_loss, floor).clamp_min(1e-300)


def is_valid_gap(rel_gap: torch.Tensor, gap_tol: float) -> torch.Tensor:
    """The validity rule of every summary: a fit is a valid estimate when L_n(fit) <= L_n(truth) up to the
    relative tolerance gap_tol (THEORY section 3: the rate proofs use only this basic inequality plus an
    inverse bound). Convergence of the solver is NOT required: it is a reported diagnostic. NaN/inf -> invalid."""
    return torch.isfinite(rel_gap) & (rel_gap <= gap_tol)


def data_seed(base_seed: int, replicate: int) -> int:
    """Seed of replicate's data stream; shared by all structures (common random numbers)."""
    return int(np.random.SeedSequence([int(base_seed), int(replicate)]).generate_state(1)[0])


def make_starts(setting: Setting, truth: GroundTruth, n_atoms: int, n: int, seed: int) -> torch.Tensor:
    """Logged starts for one replicate: (n_starts, P)."""
    if n_atoms < truth.n_atoms:
        raise ValueError(f"n_fitted_atoms={n_atoms} is fewer than the {truth.n_atoms} true atoms")
    s, init = truth.structure, setting.init
    rng = np.random.default_rng([seed, int(n), 11])
    true_b, true_atoms, true_globals = s.split(truth.theta, truth.n_atoms)
    owner = [j % truth.n_atoms for j in range(n_atoms)]  # atom i starts in the cell of true atom owner[i]
    copies = np.bincount(owner, minlength=truth.n_atoms)
    near_b = torch.stack([true_b[j] - np.log(copies[j]) for j in owner])
    near = s.join(near_b, true_atoms[owner], true_globals)
    scale = init.scale * (n / 1000.0) ** (-init.shrink)
    starts = []
    for k in range(init.n_starts):
        if init.mode == "near_truth" or (init.mode == "mixed" and k == 0):
            starts.append(near + scale * torch.as_tensor(rng.standard_normal(near.shape), dtype=near.dtype))
        else:
            b = torch.as_tensor(rng.uniform(-1, 1, size=n_atoms), dtype=near.dtype)
            starts.append(s.join(b, s.random_atoms((n_atoms,), rng, init.random_scale), s.random_globals((), rng)))
    return torch.stack(starts)


#: Memory one cell may use for its replicates' data and the solver's copies of it (bytes): run_cell fits its
#: replicates in groups of at most this much (cell_group_size), so a study of any number of replicates runs
#: in bounded memory; two workers of reparam.sweep.run_plan then need about twice this.
CELL_MEMORY_BYTES = 2 * 1024 ** 3


def replicate_bytes(n: int, d: int, m: int, n_experts: int, n_starts: int = 1,
                    n_params: int = 0) -> float:
    """Peak memory (bytes) that one replicate adds to a group of run_cell at sample size n: the float64 numbers
    per sample that live together while the group is fitted, counted from the code below:
    the stacked X, Y and f*(X) (d + 2 m) and, while they are stacked, the per-replicate copies (d + 2 m); the
    solver's data (PrefixSpaceTerms: [1, X] (d + 1), Y, the experts' collapsed output and log-weight (2 m + 2, and
    their transposed copies m + 1) with the experts' pass over all samples at once (N scores, N x m outputs, N
    softmax weights) or, after the fit, the residual for L_n(truth) (2 m). Plus the solver's state of its n_starts fits, about 16 matrices of
    n_params^2 numbers each (Hessian, Gauss-Newton and residual terms in prefix space, the chain's Jacobian, the
    padded eigendecomposition; n_params: the larger of the native parameter count and the prefix width), which
    dominates at small n. The l2_error evaluation does not grow with replicates (its memory is bounded
    separately). tests/test_l2_speed.py compares the count with the measured growth of peak memory per replicate."""
    experts_pass = n_experts * (m + 2)
    per_sample = 2 * (d + 2 * m) + (d + 1 + m + 2 * m + 2 + m + 1) + max(experts_pass, 2 * m)
    return 8.0 * (per_sample * int(n) + 16 * n_starts * n_params ** 2)


def replicate_group_size(n: int, d: int, m: int, n_experts: int, n_starts: int = 1,
                         n_params: int = 0, memory_bytes: float | None = None) -> int:
    """How many replicates run_cell fits at once at sample size n for a truth of this shape: as many as fit in
    `memory_bytes` (None: CELL_MEMORY_BYTES) by replicate_bytes, at least one. Rows do not depend on it (every fit
    runs on its own replicate's data, and the solver's per-fit numbers do not depend on the batch:
    tests/test_l2_speed.py checks that groupings give identical rows)."""
    budget = CELL_MEMORY_BYTES if memory_bytes is None else memory_bytes
    return max(1, int(budget // replicate_bytes(n, d, m, n_experts, n_starts, n_params)))


def cell_group_size(setting: Setting, truth: GroundTruth, n: int, memory_bytes: float | None = None) -> int:
    """replicate_group_size for a cell of `setting` on `truth` at sample size n."""
    L = n_fitted_atoms(setting, truth)
    width = max(truth.structure.n_params(L), L * (truth.d + 1 + truth.m))
    return replicate_group_size(n, truth.d, truth.m, truth.experts.n_experts, setting.init.n_starts, width,
                                memory_bytes)


def run_cell(setting: Setting, n: int, replicates: list[int], base_seed: int = 0,
             truth: GroundTruth | None = None, memory_bytes: float | None = None) -> list[dict]:
    """Fit every replicate at sample size n; return one tidy row per replicate.

    Row fields beside the errors: `valid` (basic inequality, rel_gap <= gap_tol: the filter of every mean,
    slope and figure), `converged` and `status` (solver diagnostics only), `certified` (valid AND converged,
    kept as a diagnostic), `best_start` (index of the lowest-loss start) and `n_valid_starts` (how many of
    the `n_starts` starts ended with a valid gap), `n_pruned_starts` (how many the solver stopped early as
    clearly worse than another start of the replicate) and `device`. `seconds` is the cell's wall time per
    replicate.

    The replicates are fitted in groups of cell_group_size (all of them when they
    fit in memory_bytes, default CELL_MEMORY_BYTES); every number of a row but `seconds` is the same whatever
    the grouping."""
    validate_setting(setting)
    if int(n) != n or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n}")
    if not replicates:
        raise ValueError("replicates must list at least one replicate index")
    n = int(n)
    truth = truth or build_truth(setting)
    tic = time.perf_counter()
    X_eval = truth.eval_inputs(setting.n_eval)
    size = cell_group_size(setting, truth, n, memory_bytes)
    rows = []
    for start in range(0, len(replicates), size):
        rows += _group_rows(setting, truth, n, list(replicates[start:start + size]), base_seed, X_eval)
    seconds = (time.perf_counter() - tic) / len(replicates)
    for row in rows:
        row["seconds"] = seconds
    return rows


def _group_rows(setting: Setting, truth: GroundTruth, n: int, replicates: list[int], base_seed: int,
                X_eval: torch.Tensor) -> list[dict]:
    """run_cell's rows for one group of replicates (without `seconds`)."""
    L = n_fitted_atoms(setting, truth)
    s = truth.structure
    seeds = [data_seed(base_seed, r) for r in replicates]
    X, Y, mean = truth.sample_replicates(n, seeds, with_mean=True)
    starts = torch.stack([make_starts(setting, truth, L, n, sd) for sd in seeds])
    est = PrefixLeastSquares(s, truth.experts, L, setting.solver, device=setting.device).fit(X, Y, starts)
    truth_loss = (Y - mean).square().sum(-1).mean(-1)  # L_n(G*): the truth is feasible
    del X, mean
    best = est.best_theta_
    keys, values, biases = s.prefix(best, L)
    t_keys, t_values, t_biases = truth.prefix()
    prefix_hat, prefix_true = torch.cat([keys, values], -1), torch.cat([t_keys, t_values], -1)
    w_hat, w_true = biases.exp(), t_biases.exp()
    b_hat, atoms_hat, _ = s.split(best, L)
    _, atoms_true, _ = s.split(truth.theta, truth.n_atoms)
    single_err, multi_err = cell_atom_errors(prefix_hat, prefix_true)
    metrics = {
        "voronoi_prefix": voronoi_loss(prefix_hat, w_hat, prefix_true, w_true),
        "voronoi_native": voronoi_loss(atoms_hat, b_hat.exp(), atoms_true, w_true),
        "voronoi_r1_prefix": voronoi_r(prefix_hat, w_hat, prefix_true, w_true, 1.0),
        "voronoi_r2_prefix": voronoi_r(prefix_hat, w_hat, prefix_true, w_true, 2.0),
        "atom_error_single": single_err,
        "atom_error_multi": multi_err,
        "l2_error": l2_error(X_eval, truth.experts, (keys, values, biases), (t_keys, t_values, t_biases)),
    }
    gap = est.best_loss_ - truth_loss
    scale = gap_scale(truth_loss, Y)  # L_n(truth); the data's round-off floor when noise-free (L_n(truth) = 0)
    rel_gap = gap / scale
    valid = is_valid_gap(rel_gap, setting.solver.gap_tol)  # (R,): the basic inequality, the only filter
    start_valid = is_valid_gap((est.loss_ - truth_loss.unsqueeze(1)) / scale.unsqueeze(1),
                               setting.solver.gap_tol)  # (R, S)
    rows = []
    for i, r in enumerate(replicates):
        j = int(est.best_start_[i])
        converged = bool(est.converged_[i, j])
        status = est.status_[i][j]
        row = dict(
            structure=s.name, regime=setting.regime, n=n, replicate=int(r), seed=seeds[i], truth=truth.name,
            activation=setting.activation, theorem=s.theorem or "none (extension)",
            n_true_atoms=truth.n_atoms, n_fitted_atoms=L, noise=truth.noise,
            init=setting.init.mode, n_starts=setting.init.n_starts,
            init_scale=setting.init.scale * (n / 1000.0) ** (-setting.init.shrink), best_start=j,
            **{k: float(v[i]) for k, v in metrics.items()},
            loss=float(est.best_loss_[i]), truth_loss=float(truth_loss[i]), gap=float(gap[i]), rel_gap=float(rel_gap[i]),
            n_valid_starts=int(start_valid[i].sum()), n_pruned_starts=int(est.pruned_[i].sum()),
            valid=bool(valid[i]), converged=converged, certified=converged and bool(valid[i]), status=status,
            n_iter=int(est.n_iter_[i, j]), device=setting.device,
        )
        rows.append(row)
    return rows
