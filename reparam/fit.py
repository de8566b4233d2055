"""Least squares over G (THEORY section 3), batched over replicates and starts.

The solver is Levenberg-Marquardt (damped Gauss-Newton): for a least-squares objective it is a
quasi-Newton method whose curvature comes for free from the Jacobian, and near a minimum it converges
quadratically, which is what makes the optimality-gap certificate L_n(fit) - L_n(truth) <= tol cheap
to reach. Every fit in the batch keeps its own damping, acceptance and stopping state; finished fits
drop out of the batch.

Why analytic Jacobians: the heavy part (all n samples) lives in the common prefix space z = (b, k, v),
where the derivatives of f_G have a closed form:
    d f / d b_i = w_i (v_i - f),   d f / d k_i = w_i (v_i - f) X^T,   d f / d v_i = w_i I_m,
with w_i the mixture weight of prompt i. The chain to native parameters, dz/dtheta, does not depend on
the data and is taken by autograd on a tiny tensor. So a new structure needs no new derivative code.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import jacrev, vmap

from .moe import DTYPE, PretrainedExperts
from .structures import Structure


@dataclass
class SolverConfig:
    """Settings of the batched Levenberg-Marquardt solver.

    Fields:
        max_iter: iterations before a fit is stopped and flagged `max_iter` (not converged).
        ftol: converged when an accepted step lowers the loss by less than ftol * loss.
        damping0: initial Marquardt damping (relative to diag of J^T J).
        damping_max: damping above which no descent is numerically possible: the fit is at a minimum
            to working precision and is marked converged.
        chunk_elements: samples are processed in chunks so that one chunk's Jacobian holds at most
            this many numbers (bounds memory at large n).
        gap_tol: a fit whose relative optimality gap (L_n(fit) - L_n(truth)) / L_n(truth) exceeds this
            is an optimiser failure.
    """

    max_iter: int = 300
    ftol: float = 1e-10
    damping0: float = 1e-3
    damping_max: float = 1e10
    chunk_elements: int = 20_000_000
    gap_tol: float = 1e-8

    def __post_init__(self):
        for name in ("max_iter", "chunk_elements"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("ftol", "damping0", "damping_max", "gap_tol"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


class PrefixSpaceTerms:
    """Loss, gradient and Gauss-Newton matrix of L_n(theta) = (1/n) sum_t ||Y_t - f(X_t)||^2 for a batch
    of fits that share data by replicate index."""

    def __init__(self, structure: Structure, experts: PretrainedExperts, n_atoms: int, X: Tensor, Y: Tensor,
                 chunk_elements: int = 20_000_000):
        self.structure, self.n_atoms = structure, n_atoms
        self.X, self.Y = X, Y  # (R, n, d), (R, n, m)
        self.pre_log_weight, self.pre_mean = experts.collapse(X)  # (R, n), (R, n, m)
        self.n, self.m = X.shape[1], Y.shape[2]
        self.chunk_elements = chunk_elements
        self._prefix_jacobian = vmap(jacrev(self._prefix_flat))

    def _prefix_flat(self, theta: Tensor) -> Tensor:
        """theta (P,) -> z = [b (L) | k (L*d) | v (L*m)]."""
        keys, values, biases = self.structure.prefix(theta, self.n_atoms)
        return torch.cat([biases, keys.reshape(-1), values.reshape(-1)])

    def _chunks(self, batch: int, width: int):
        size = max(256, self.chunk_elements // max(1, batch * self.m * width))
        for start in range(0, self.n, size):
            yield slice(start, min(self.n, start + size))

    def _forward(self, theta: Tensor, rep: Tensor, part: slice):
        keys, values, biases = self.structure.prefix(theta, self.n_atoms)
        Xc = self.X[rep, part]  # (B, c, d)
        scores = Xc @ keys.transpose(-1, -2) + biases.unsqueeze(-2)  # (B, c, L)
        w = torch.softmax(torch.cat([self.pre_log_weight[rep, part].unsqueeze(-1), scores], dim=-1), dim=-1)
        f = w[..., :1] * self.pre_mean[rep, part] + w[..., 1:] @ values  # (B, c, m)
        return Xc, values, w[..., 1:], f, f - self.Y[rep, part]

    def loss(self, theta: Tensor, rep: Tensor) -> Tensor:
        """(B, P), (B,) -> (B,)."""
        total = torch.zeros(theta.shape[0], dtype=DTYPE)
        for part in self._chunks(theta.shape[0], 1):
            residual = self._forward(theta, rep, part)[-1]
            total += residual.square().sum(dim=(-1, -2))
        return total / self.n

    def gauss_newton(self, theta: Tensor, rep: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, P), (B,) -> loss (B,), gradient (B, P), Gauss-Newton matrix 2/n J^T J (B, P, P)."""
        B, L, d, m = theta.shape[0], self.n_atoms, self.structure.d, self.m
        Pz = L * (1 + d + m)
        JtJ = torch.zeros(B, Pz, Pz, dtype=DTYPE)
        Jtr = torch.zeros(B, Pz, dtype=DTYPE)
        total = torch.zeros(B, dtype=DTYPE)
        eye_m = torch.eye(m, dtype=DTYPE)
        for part in self._chunks(B, Pz):
            Xc, values, w, f, residual = self._forward(theta, rep, part)
            c = Xc.shape[1]
            g = w.unsqueeze(-1) * (values.unsqueeze(1) - f.unsqueeze(2))  # (B, c, L, m)
            J_b = g.transpose(2, 3)  # (B, c, m, L)
            J_k = (g.unsqueeze(-1) * Xc[:, :, None, None, :]).transpose(2, 3)  # (B, c, m, L, d)
            J_v = (w[..., None, None] * eye_m).transpose(2, 3)  # (B, c, m, L, m)
            J = torch.cat([J_b, J_k.reshape(B, c, m, L * d), J_v.reshape(B, c, m, L * m)], dim=-1)
            J = J.reshape(B, c * m, Pz)
            JtJ += J.transpose(1, 2) @ J
            Jtr += (J.transpose(1, 2) @ residual.reshape(B, c * m, 1)).squeeze(-1)
            total += residual.square().sum(dim=(-1, -2))
        M = self._prefix_jacobian(theta)  # (B, Pz, P)
        grad = 2.0 / self.n * (M.transpose(1, 2) @ Jtr.unsqueeze(-1)).squeeze(-1)
        gn = 2.0 / self.n * M.transpose(1, 2) @ JtJ @ M
        return total / self.n, grad, gn


@dataclass
class FitState:
    """Per-fit outcome of the solver (all tensors share the leading batch shape)."""

    theta: Tensor
    loss: Tensor
    n_iter: Tensor
    converged: Tensor
    status: list[str]  # "converged", "max_iter" or "nonfinite"


def levenberg_marquardt(terms: PrefixSpaceTerms, theta0: Tensor, rep: Tensor, config: SolverConfig) -> FitState:
    """Minimise terms.loss for every row of theta0 (B, P); row b uses the data of replicate rep[b]."""
    theta = theta0.clone().to(DTYPE)
    B, P = theta.shape
    damping = torch.full((B,), config.damping0, dtype=DTYPE)
    n_iter = torch.zeros(B, dtype=torch.long)
    done = torch.zeros(B, dtype=torch.bool)
    converged = torch.zeros(B, dtype=torch.bool)
    status = ["max_iter"] * B
    loss, grad, gn = terms.gauss_newton(theta, rep)
    bad = ~torch.isfinite(loss) | ~torch.isfinite(grad).all(-1)
    for b in bad.nonzero().flatten().tolist():
        status[b], done[b] = "nonfinite", True
    eye = torch.eye(P, dtype=DTYPE)
    for _ in range(config.max_iter):
        active = (~done).nonzero().flatten()
        if active.numel() == 0:
            break
        n_iter[active] += 1
        H, g, lam = gn[active], grad[active], damping[active]
        scale = torch.diagonal(H, dim1=-2, dim2=-1).clamp_min(1e-12)
        system = H + lam[:, None, None] * (torch.diag_embed(scale) + 1e-12 * eye)
        step = -torch.linalg.solve(system, g.unsqueeze(-1)).squeeze(-1)
        trial = theta[active] + step
        trial_loss = terms.loss(trial, rep[active])
        accepted = torch.isfinite(trial_loss) & (trial_loss < loss[active])
        relative_drop = (loss[active] - trial_loss) / loss[active].clamp_min(1e-300)
        damping[active] = torch.where(accepted, (lam / 3).clamp_min(1e-12), lam * 4)
        idx_acc = active[accepted]
        if idx_acc.numel():
            theta[idx_acc] = trial[accepted]
            loss[idx_acc], grad[idx_acc], gn[idx_acc] = terms.gauss_newton(theta[idx_acc], rep[idx_acc])
        small = accepted & (relative_drop < config.ftol)
        stalled = ~accepted & (damping[active] > config.damping_max)
        finished = small | stalled
        for b in active[finished].tolist():
            status[b] = "converged"
        converged[active[finished]] = True
        done[active[finished]] = True
        broken = ~torch.isfinite(loss[active]) | ~torch.isfinite(grad[active]).all(-1)
        for b in active[broken].tolist():
            status[b], done[b], converged[b] = "nonfinite", True, False
    return FitState(theta=theta, loss=loss, n_iter=n_iter, converged=converged, status=status)


class PrefixLeastSquares:
    """Least-squares estimator of the prompt part of f_G, scikit-learn style.

    Parameters are stored untouched by the constructor; `fit(X, Y, starts)` runs every start of every
    replicate as one batched program and returns self. Fitted state:
        theta_ (R, S, P), loss_ (R, S), converged_ (R, S), n_iter_ (R, S), status_ (R x S nested list),
        best_start_ (R,): index of the lowest final loss among the finite starts of each replicate,
        best_theta_ (R, P), best_loss_ (R,).
    """

    def __init__(self, structure: Structure, experts: PretrainedExperts, n_atoms: int,
                 solver: SolverConfig | None = None):
        self.structure = structure
        self.experts = experts
        self.n_atoms = n_atoms
        self.solver = solver

    def _check(self, X: Tensor, Y: Tensor, starts: Tensor) -> None:
        d, m = self.structure.d, self.structure.m
        if self.n_atoms < 1:
            raise ValueError(f"n_atoms must be >= 1, got {self.n_atoms}")
        if X.ndim != 3 or X.shape[-1] != d:
            raise ValueError(f"X must have shape (replicates, n, {d}), got {tuple(X.shape)}")
        if Y.ndim != 3 or Y.shape[:2] != X.shape[:2] or Y.shape[-1] != m:
            raise ValueError(f"Y must have shape {tuple(X.shape[:2]) + (m,)}, got {tuple(Y.shape)}")
        if not torch.isfinite(X).all():
            raise ValueError("X contains NaN or inf")
        if not torch.isfinite(Y).all():
            raise ValueError("Y contains NaN or inf")
        P = self.structure.n_params(self.n_atoms)
        if starts.ndim != 3 or starts.shape[0] != X.shape[0] or starts.shape[-1] != P:
            raise ValueError(f"starts must have shape ({X.shape[0]}, n_starts, {P}), got {tuple(starts.shape)}")

    def fit(self, X: Tensor, Y: Tensor, starts: Tensor) -> "PrefixLeastSquares":
        X, Y, starts = (torch.as_tensor(t, dtype=DTYPE) for t in (X, Y, starts))
        self._check(X, Y, starts)
        solver = self.solver or SolverConfig()
        R, S, P = starts.shape
        terms = PrefixSpaceTerms(self.structure, self.experts, self.n_atoms, X, Y, solver.chunk_elements)
        rep = torch.arange(R).repeat_interleave(S)
        state = levenberg_marquardt(terms, starts.reshape(R * S, P), rep, solver)
        self.theta_ = state.theta.reshape(R, S, P)
        self.loss_ = state.loss.reshape(R, S)
        self.converged_ = state.converged.reshape(R, S)
        self.n_iter_ = state.n_iter.reshape(R, S)
        self.status_ = [state.status[r * S:(r + 1) * S] for r in range(R)]
        ranked = torch.where(torch.isfinite(self.loss_), self.loss_, torch.full_like(self.loss_, float("inf")))
        self.best_start_ = ranked.argmin(dim=1)
        self.best_theta_ = self.theta_[torch.arange(R), self.best_start_]
        self.best_loss_ = self.loss_[torch.arange(R), self.best_start_]
        self.terms_ = terms
        return self

    def empirical_loss(self, theta: Tensor) -> Tensor:
        """L_n at one parameter vector per replicate: (R, P) -> (R,). Needs a fitted estimator."""
        R = theta.shape[0]
        return self.terms_.loss(theta.to(DTYPE), torch.arange(R))
