"""Least squares over G (THEORY section 3), batched over replicates and starts.

The solver is a trust-region Newton method in Levenberg-Marquardt form: every step solves
(H + mu D) s = -g with H the EXACT Hessian of L_n (Gauss-Newton term J^T J plus the residual term
sum_t r_t . d^2 f_t), D a Marquardt diagonal scaling and mu a damping that the ratio of actual to
predicted decrease adapts (Nielsen's rule). Why the exact Hessian: in over-specified fits (L' > L*) the
residual never vanishes (noise) and the minimum is nearly degenerate (the atoms that share a true atom
sit O(n^-1/4) apart), so the residual term is as large as the smallest eigenvalues of J^T J; plain
Gauss-Newton then converges linearly with a rate near 1 and needs thousands of iterations. With the
exact Hessian the local convergence is quadratic again. Where H is indefinite (away from a minimum)
the shift mu + max(0, -lambda_min) makes the step a descent direction (Moré-Sorensen style, done with
one eigendecomposition of the tiny P x P system per fit).

Every fit in the batch keeps its own damping, acceptance and stopping state; finished fits drop out of
the batch. A fit's numbers do not depend on which other fits share its batch (the fused pass loops over each fit
alone; the eigendecompositions are padded so that no matrix's result depends on its place: batch_invariant_eigh),
so a study may fit its replicates in groups of any size (reparam.study.run_cell).

Why analytic derivatives: the heavy part (all n samples) lives in the common prefix space z = (b, k, v),
where f_G's derivatives have a closed form. With s_i = k_i^T X + b_i, w the softmax weights over
[pretrained, prompts], u_i = v_i - f and a = [1, X]:
    d f / d s_i = w_i u_i,                 d f / d v_i = w_i I_m,
    d2 f / d s_i d s_j = delta_ij w_i u_i - w_i w_j (u_i + u_j),
    d2 f / d s_i d v_j = w_i (delta_ij - w_j) I_m,    d2 f / d v d v = 0,
and d / d(b_i, k_i) = a d / d s_i. Every sum over samples is then a batched matrix product over the
sample axis (kept LAST and contiguous, so elementwise work vectorises and the products are BLAS calls
with a long inner dimension). The chain to native parameters, z(theta), does not depend on the data:
its Jacobian and second derivatives are taken by plain reverse-mode autograd on a tiny tensor (each
row of the batch copied once per output, so one backward pass gives every row of the Jacobian), so a new
structure needs no new derivative code. Plain autograd, not torch.func: torch.func's transforms import
torch._dynamo on first use, a fixed ~1.5-2 s on the first fit of a process.

Two implementations of those sums (the same numbers to rounding, tests/test_fused_pass.py): the fused pass
(reparam.kernels: a small C kernel built on first use, one loop over samples per fit, every per-sample
quantity in L1 or registers, each unique Hessian entry one multiply-add per sample), used on the CPU wherever
it builds; and the tensor pass below (batched tensor operations over chunks of samples), used on a GPU, without
a C compiler, with REPARAM_PASS=tensor, and for the autograd checks (it is differentiable).

Stopping (SolverConfig.stop). The default, "statistical", stops a fit once the optimisation error is
negligible against the statistical error, instead of at a fixed relative tolerance; see SolverConfig.

Multi-start (SolverConfig.prune). All starts of all replicates run as one batch; at checkpoints
(successive halving) starts whose loss is clearly above the best start of the same replicate are
stopped early and flagged "pruned"; see SolverConfig.

Device. The sample-space pass (everything with a sample axis: data, softmax weights, residuals and the
sums over samples) runs on `device`; the tiny per-fit algebra (theta, the P x P Hessians and their
eigendecompositions, the chain to native parameters) stays on the host, where batches of 10 x 10
eigendecompositions are cheaper than on an accelerator. float64 throughout.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from . import kernels
from .moe import DTYPE, PretrainedExperts
from .structures import Structure
from .validation import check_choice, check_device, check_int, check_number, require

METHODS = ("newton", "gauss_newton")
STOP_RULES = ("statistical", "strict")


@dataclass
class SolverConfig:
    """Settings of the batched trust-region (Levenberg-Marquardt form) solver.

    Convergence (the `converged` flag, status "converged") is claimed ONLY when, at the current point,
      (1) the scaled curvature matrix is positive semi-definite up to round-off
          (lambda_min >= -psd_tol * lambda_max), i.e. no direction of descent through curvature, and
      (2) the Newton decrement delta = g^T H^+ g / 2 (the decrease the quadratic model still predicts
          from here to its minimum) is below the stopping tolerance of the rule `stop`:
            "strict":      delta <= ftol * L_n (a fixed relative tolerance; the rule before `stop` existed);
            "statistical": delta <= max(stat_tol * sigma_hat^2 / n, ftol * L_n), sigma_hat^2 = L_n / m
                           (the residual variance per output coordinate at the current point).
    With method="newton" H is the exact Hessian, so (1)+(2) are the second-order conditions of a local
    minimum up to that tolerance; with method="gauss_newton" H is J^T J (then (2) is exact only for zero
    residual). Other outcomes are never called converged: "max_iter" (iteration budget spent), "stalled"
    (the damping exceeded damping_max without an acceptable step while (1)-(2) failed), "nonfinite",
    "pruned" (a multi-start start stopped early because another start of its replicate is clearly better).

    Why the statistical rule is enough. Near a minimum theta_loc the loss is quadratic,
    L_n(theta) - L_n(theta_loc) = ||theta - theta_loc||_H^2 / 2, so a fit stopped with decrement delta
    sits at H-distance sqrt(2 delta) from theta_loc. The estimator's own statistical error is of order
    sigma^2 P / n in the same units: with H = (2/n) J^T J and residual noise eps, the decrease from the
    truth to the least-squares fit is (1/n) eps^T Proj_J eps ~ sigma^2 chi^2_P / n. Stopping at
    delta <= tau sigma^2 / n therefore adds an error whose squared H-norm is at most a fraction tau / P of
    the statistical one: at most sqrt(tau / P) of the error's size if it happens to be aligned with it
    (<= 10% for tau = 0.01 even with P = 1, about 3% at the P = 9..12 of the theorem structures), and a
    fraction tau / (2P) of its root-mean-square size if it is not (< 0.1%). Both are far inside the
    replicate intervals of any study, while sigma^2 / n is 1e3-1e5 times looser than ftol * L_n at
    n = 1e3..1e5, which is where the iterations of over-specified fits go (their loss is flat along a
    valley to third order, so the last digits of L_n take hundreds of iterations and do not move the
    estimate beyond its noise). The same H-norm argument holds in nearly flat directions: the
    statistical error is large there in exactly the same proportion. The gap certificate
    (L_n(fit) <= L_n(truth) up to gap_tol) is checked on the final loss whatever the rule.
    Limit: the argument needs the quadratic model to hold. Along the non-identifiable valley of an
    over-specified independent fit (THEORY section 7) the loss keeps creeping down by less than the
    tolerance per step, so the rule can stop a fraction of a noise unit above where the strict rule ends;
    BENCHMARKS.md measures this and the effect on the study's means and slopes.

    Multi-start pruning (successive halving; only with several starts per replicate). At iterations
    prune_after, 2 prune_after, 4 prune_after, ... every still-running start whose loss exceeds the best
    loss of its replicate (over all its starts, running or finished) by more than
    prune_margin * sigma_hat^2 / n is stopped and flagged "pruned". Losses only decrease, so a pruned start
    can never end as the replicate's best; it could only have overtaken it later, which in measured
    multi-start runs never happened to a start that far behind at iteration prune_after (the default
    margin, 100 noise units, is ~30x the spread between starts that end in the same basin).

    Fields:
        max_iter: iterations before a fit is stopped and flagged `max_iter` (not converged).
        ftol: relative Newton-decrement tolerance of the "strict" rule (and a floor of the statistical one).
        stop: "statistical" (default) or "strict"; see above.
        stat_tol: tau of the statistical rule: the fraction of sigma_hat^2 / n that the predicted remaining
            decrease may still be.
        damping0: initial damping mu (relative to the Marquardt scaling D = running max of diag J^T J).
        damping_max: damping above which the fit is stopped ("stalled" unless the test above passes).
        chunk_elements: samples are processed in chunks so that one chunk's temporaries hold at most
            about this many numbers (bounds memory at large n, and keeps the temporaries of the
            memory-bound pass in cache: 2e6 numbers = 16 MB; at least 256 samples per chunk).
        gap_tol: a fit whose relative optimality gap (L_n(fit) - L_n(truth)) / L_n(truth) exceeds this
            is an optimiser failure.
        method: "newton" (exact Hessian, default) or "gauss_newton" (J^T J only: classic LM, kept for
            comparisons; slow on over-specified fits).
        psd_tol: relative tolerance on negative curvature in the convergence test.
        prune: stop clearly worse starts early (see above); False runs every start to its own end.
        prune_after: first pruning checkpoint (iterations); later ones at 2x, 4x, ... this.
        prune_margin: how far above its replicate's best a start must be to be pruned, in units of
            sigma_hat^2 / n.
        num_threads: torch intra-op threads during fit (0 = leave torch's setting); restored afterwards.
            On a shared, loaded machine 1 thread is often faster than 2 (OpenMP spin-waits).
    """

    max_iter: int = 300
    ftol: float = 1e-10
    stop: str = "statistical"
    stat_tol: float = 0.01
    damping0: float = 1e-3
    damping_max: float = 1e10
    chunk_elements: int = 2_000_000
    gap_tol: float = 1e-8
    method: str = "newton"
    psd_tol: float = 1e-9
    prune: bool = True
    prune_after: int = 20
    prune_margin: float = 100.0
    num_threads: int = 0

    def __post_init__(self):
        """ConfigError (a ValueError; reparam.validation) naming the field, the value and what is allowed."""
        for name in ("max_iter", "chunk_elements", "prune_after"):
            check_int(name, getattr(self, name), low=1)
        for name in ("ftol", "stat_tol", "damping0", "damping_max", "gap_tol", "psd_tol", "prune_margin"):
            check_number(name, getattr(self, name), low=0, low_open=True)  # inf would switch the certificate off
        require(self.damping_max >= self.damping0, "damping_max", self.damping_max,
                f">= damping0={self.damping0!r} (otherwise every fit stops at once as 'stalled')")
        check_choice("method", self.method, METHODS)
        check_choice("stop", self.stop, STOP_RULES)
        check_int("num_threads", self.num_threads, low=0)


class PrefixSpaceTerms:
    """Loss, gradient, Gauss-Newton matrix and exact Hessian of L_n(theta) = (1/n) sum_t ||Y_t - f(X_t)||^2
    for a batch of fits that share data by replicate index.

    Internal prefix ordering (only used inside this class): z = [(b_1, k_1), ..., (b_L, k_L) | v_1, ..., v_L],
    i.e. the gate block of atom i is a_i = (b_i, k_i) in R^{d+1}, multiplied by a = [1, X].
    """

    def __init__(self, structure: Structure, experts: PretrainedExperts, n_atoms: int, X: Tensor, Y: Tensor,
                 chunk_elements: int = 2_000_000, device: str | torch.device = "cpu", fused: bool | None = None):
        self.structure, self.n_atoms = structure, n_atoms
        self.fused = fused  # None: the fused pass where it is available (reparam.kernels), False: the tensor pass
        self.device = torch.device(device)
        self.X, self.Y = X, Y  # (R, n, d), (R, n, m), on the host
        self.pre_log_weight, self.pre_mean = experts.collapse(X)  # (R, n), (R, n, m)
        self.n, self.m = X.shape[1], Y.shape[2]
        self.chunk_elements = chunk_elements
        # sample axis last and contiguous: every elementwise op vectorises over samples
        put = lambda t: t.contiguous().to(self.device)
        self._A = put(torch.cat([torch.ones_like(X[..., :1]), X], dim=-1).transpose(1, 2))  # (R, d+1, n)
        self._Yt = put(Y.transpose(1, 2))  # (R, m, n)
        self._mu0 = put(self.pre_mean.transpose(1, 2))  # (R, m, n)
        self._s0 = put(self.pre_log_weight)  # (R, n)
        self._all_reps = torch.arange(X.shape[0])

    # ---- the data-independent map theta -> z (host, tiny tensors) ---------------------------------
    def _prefix_flat(self, theta: Tensor) -> Tensor:
        """theta (B, P) -> z (B, Pz) in the internal ordering [(b_i, k_i) for i | v_i for i]."""
        keys, values, biases = self.structure.prefix(theta, self.n_atoms)
        B = theta.shape[0]
        return torch.cat([torch.cat([biases.unsqueeze(-1), keys], -1).reshape(B, -1), values.reshape(B, -1)], -1)

    def _prefix_jacobian(self, theta: Tensor) -> Tensor:
        """M = dz/dtheta (B, Pz, P): row b copied Pz times, copy j carries output j, one backward pass."""
        B, P = theta.shape
        Pz = self.n_atoms * (self.structure.d + 1 + self.m)
        with torch.enable_grad():
            t = theta.detach().repeat_interleave(Pz, 0).requires_grad_(True)  # (B * Pz, P)
            z = self._prefix_flat(t).reshape(B, Pz, Pz)
            (M,) = torch.autograd.grad(torch.diagonal(z, dim1=1, dim2=2).sum(), t)
        return M.reshape(B, Pz, P)

    def _prefix_curvature(self, theta: Tensor, weights: Tensor) -> Tensor:
        """sum_z weights_z d2 z / dtheta2 (B, P, P): one gradient with graph, then one backward pass over
        P copies of each row (copy j differentiates gradient entry j). Zero for structures linear in theta."""
        B, P = theta.shape
        with torch.enable_grad():
            t = theta.detach().repeat_interleave(P, 0).requires_grad_(True)  # (B * P, P)
            contracted = (self._prefix_flat(t) * weights.repeat_interleave(P, 0)).sum()
            (g,) = torch.autograd.grad(contracted, t, create_graph=True)
            if not g.requires_grad:
                return torch.zeros(B, P, P, dtype=DTYPE)
            (h,) = torch.autograd.grad(torch.diagonal(g.reshape(B, P, P), dim1=1, dim2=2).sum(), t, allow_unused=True)
        return torch.zeros(B, P, P, dtype=DTYPE) if h is None else h.reshape(B, P, P)

    # ---- the fused pass (reparam.kernels): the same sums as _prefix_terms, one loop over samples per fit ----
    def fused_in_use(self) -> bool:
        """Whether the sums come from the fused pass (reparam.kernels)."""
        if self.fused is False or self.device.type != "cpu":
            return False
        available = kernels.pass_kernel() is not None
        if self.fused and not available:
            raise RuntimeError(f"fused=True, but the fused pass is unavailable: {kernels.kernel_status()['why']}")
        return available

    def _fused_sums(self, what: int, gate: Tensor, values: Tensor, rep: Tensor) -> Tensor:
        return kernels.fused_sums(what, gate, values, rep, self._A, self._Yt, self._mu0, self._s0,
                                  threads=torch.get_num_threads())

    def _unpack_fused(self, sums: Tensor, exact: bool):
        """The kernel's per-fit sums (B, K) -> loss, grad_z, J^T J, R in _prefix_terms' layout.

        The kernel stores each symmetric gate-gate block once per atom pair i <= j and feature pair p <= p'
        (coefficient times a_p a_p'); here they are spread to full (L q, L q) blocks."""
        B, L, q, m = sums.shape[0], self.n_atoms, self.structure.d + 1, self.m
        TL, Tq, Lq, Lm = L * (L + 1) // 2, q * (q + 1) // 2, L * q, L * m
        sizes = [1, Lq, Lm, TL * Tq, TL * Tq, L * L * m * q, L * L * m * q, TL]
        total, g_gate, g_val, gg, rgg, gv, rgv, vv = torch.split(sums, sizes, dim=1)
        pair_L, pair_q = _pair_index(L), _pair_index(q)  # cached per size

        def gate_gate(x):  # (B, TL * Tq) -> (B, Lq, Lq)
            x = x.reshape(B, TL, Tq)[:, pair_L][:, :, :, pair_q]  # (B, L, L, q, q)
            return x.permute(0, 1, 3, 2, 4).reshape(B, Lq, Lq)

        def gate_value(x):  # (B, L(i) * L(j) * m * q) -> (B, Lq, Lm)
            return x.reshape(B, L, L, m, q).permute(0, 1, 4, 2, 3).reshape(B, Lq, Lm)

        vv_full = vv[:, pair_L]  # (B, L, L): sum_t w_i w_j, times I_m for each output pair
        vv_full = (vv_full[:, :, None, :, None] * torch.eye(m, dtype=DTYPE)[None, None, :, None, :]).reshape(B, Lm, Lm)
        jgv = gate_value(gv)
        JtJ = torch.cat([torch.cat([gate_gate(gg), jgv], 2), torch.cat([jgv.transpose(1, 2), vv_full], 2)], 1)
        resid = None
        if exact:
            rgv_full = gate_value(rgv)
            zeros = torch.zeros(B, Lm, Lm, dtype=DTYPE)
            resid = torch.cat([torch.cat([gate_gate(rgg), rgv_full], 2),
                               torch.cat([rgv_full.transpose(1, 2), zeros], 2)], 1)
        return total[:, 0].clone(), torch.cat([g_gate, g_val], 1), JtJ, resid

    # ---- sample-space pieces ------------------------------------------------------------------------
    def _chunks(self, batch: int, width: int):
        size = max(256, self.chunk_elements // max(1, batch * width))
        for start in range(0, self.n, size):
            yield slice(start, min(self.n, start + size))

    def _data(self, rep: Tensor, part: slice):
        if rep.numel() == self._A.shape[0] and torch.equal(rep, self._all_reps):
            return self._A[..., part], self._Yt[..., part], self._mu0[..., part], self._s0[..., part]
        rep = rep.to(self.device)
        return self._A[rep, :, part], self._Yt[rep, :, part], self._mu0[rep, :, part], self._s0[rep, part]

    def _forward(self, gate: Tensor, values: Tensor, rep: Tensor, part: slice):
        """gate (B, L, d+1) = (b_i, k_i), values (B, L, m) -> a (B, d+1, c), w (B, L, c), f, r (B, m, c)."""
        A, Yt, mu0, s0 = self._data(rep, part)
        scores = gate @ A  # (B, L, c)
        top = torch.maximum(scores.amax(dim=1), s0)  # (B, c): log-sum-exp shift
        e = torch.exp(scores - top.unsqueeze(1))
        e0 = torch.exp(s0 - top)
        inv = 1.0 / (e0 + e.sum(dim=1))
        w = e * inv.unsqueeze(1)  # (B, L, c)
        f = (e0 * inv).unsqueeze(1) * mu0 + values.transpose(1, 2) @ w  # (B, m, c)
        return A, w, f, f - Yt

    def _prefix_parts(self, theta: Tensor):
        """theta (B, P) on the host -> gate (B, L, d+1), values (B, L, m) on the device."""
        keys, values, biases = self.structure.prefix(theta, self.n_atoms)
        return torch.cat([biases.unsqueeze(-1), keys], -1).to(self.device), values.to(self.device)

    def loss(self, theta: Tensor, rep: Tensor) -> Tensor:
        """(B, P), (B,) -> (B,)."""
        gate, values = self._prefix_parts(theta)
        if self.fused_in_use() and not (torch.is_grad_enabled() and theta.requires_grad):  # the tensor pass is differentiable
            return self._fused_sums(0, gate, values, rep)[:, 0] / self.n
        total = torch.zeros(theta.shape[0], dtype=DTYPE, device=self.device)
        for part in self._chunks(theta.shape[0], 3 * self.n_atoms + 3 * self.m + self.structure.d + 2):
            residual = self._forward(gate, values, rep, part)[-1]
            total += residual.square().sum(dim=(-1, -2))
        return total.cpu() / self.n

    def _prefix_terms(self, theta: Tensor, rep: Tensor, exact: bool):
        """Sums over samples in prefix space: loss (B,), gradient g_z (B, Pz), J^T J and the residual
        curvature R = sum_t r_t . d2 f_t (B, Pz, Pz) (R is None unless exact); all without the 1/n, 2/n.

        Every sum over samples is a batched matrix product with the sample axis as inner dimension:
            J^T J                      = J J^T,           J rows: (w_i u_i) a (gate), w_i e_b (value)
            R gate-gate                = blockdiag(P_i A^T) - P Q^T - Q P^T,   P = (w_i rho_i) a, Q = w_i a
            R gate-value               = blockdiag(S_i A^T) - Q S^T,           S = w_i r
        with rho_i = r . u_i; no (L x L x samples) temporaries are formed."""
        B, L, d, m = theta.shape[0], self.n_atoms, self.structure.d, self.m
        q, Pz = d + 1, self.n_atoms * (d + 1 + m)
        gate, values = self._prefix_parts(theta)
        if self.fused_in_use():
            return self._unpack_fused(self._fused_sums(2 if exact else 1, gate, values, rep), exact)
        dev = self.device
        JtJ = torch.zeros(B, Pz, Pz, dtype=DTYPE, device=dev)
        Rgg = torch.zeros(B, L * q, L * q, dtype=DTYPE, device=dev)
        Rgv = torch.zeros(B, L * q, L * m, dtype=DTYPE, device=dev)
        g_gate = torch.zeros(B, L, q, dtype=DTYPE, device=dev)
        g_val = torch.zeros(B, L * m, dtype=DTYPE, device=dev)
        total = torch.zeros(B, dtype=DTYPE, device=dev)
        eye_m = torch.eye(m, dtype=DTYPE, device=dev)
        width = (Pz + 3 * L * q) * m + 3 * L + 4 * m + q
        J = None
        for part in self._chunks(B, width):
            A, w, f, r = self._forward(gate, values, rep, part)
            c = A.shape[-1]
            u = values.unsqueeze(-1) - f.unsqueeze(1)  # (B, L, m, c)
            wu = w.unsqueeze(2) * u  # (B, L, m, c): d f_b / d s_i
            if J is None or J.shape[-1] != m * c:  # Jacobian rows, written in place (no concatenation copy)
                J = torch.empty(B, Pz, m * c, dtype=DTYPE, device=dev)
            torch.mul(wu.unsqueeze(2), A.unsqueeze(1).unsqueeze(3), out=J[:, :L * q].view(B, L, q, m, c))  # gate rows
            torch.mul(w[:, :, None, None, :], eye_m[None, None, :, :, None],
                      out=J[:, L * q:].view(B, L, m, m, c))  # value rows (B, L, m(b'), m(b), c)
            JtJ += J @ J.transpose(1, 2)
            rho = (wu * r.unsqueeze(1)).sum(2)  # (B, L, c): w_i r . u_i
            g_gate += rho @ A.transpose(1, 2)
            S = (w.unsqueeze(2) * r.unsqueeze(1)).reshape(B, L * m, c)  # w_i r_b
            g_val += S.sum(-1)
            total += r.square().sum(dim=(-1, -2))
            if exact:
                P = (rho.unsqueeze(2) * A.unsqueeze(1)).reshape(B, L * q, c)
                Q = (w.unsqueeze(2) * A.unsqueeze(1)).reshape(B, L * q, c)
                PQ = P @ Q.transpose(1, 2)
                Rgg -= PQ + PQ.transpose(1, 2)
                diag = (P @ A.transpose(1, 2)).reshape(B, L, q, q)  # sum_t w_i rho_i a a^T
                for i in range(L):
                    Rgg[:, i * q:(i + 1) * q, i * q:(i + 1) * q] += diag[:, i]
                Rgv -= Q @ S.transpose(1, 2)
                sdiag = (S @ A.transpose(1, 2)).reshape(B, L, m, q).transpose(2, 3)  # (B, L, q, m)
                for i in range(L):
                    Rgv[:, i * q:(i + 1) * q, i * m:(i + 1) * m] += sdiag[:, i]
        grad_z = torch.cat([g_gate.reshape(B, -1), g_val], dim=1)
        resid = None
        if exact:
            zeros = torch.zeros(B, L * m, L * m, dtype=DTYPE, device=dev)
            resid = torch.cat([torch.cat([Rgg, Rgv], 2), torch.cat([Rgv.transpose(1, 2), zeros], 2)], 1).cpu()
        return total.cpu(), grad_z.cpu(), JtJ.cpu(), resid

    def gauss_newton(self, theta: Tensor, rep: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, P), (B,) -> loss (B,), gradient (B, P), Gauss-Newton matrix 2/n J^T J (B, P, P)."""
        total, grad_z, jtj, _ = self._prefix_terms(theta, rep, exact=False)
        M = self._prefix_jacobian(theta)  # (B, Pz, P)
        grad = 2.0 / self.n * (M.transpose(1, 2) @ grad_z.unsqueeze(-1)).squeeze(-1)
        return total / self.n, grad, 2.0 / self.n * M.transpose(1, 2) @ jtj @ M

    def hessian(self, theta: Tensor, rep: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(B, P), (B,) -> loss (B,), gradient (B, P), exact Hessian (B, P, P), Gauss-Newton matrix (B, P, P).

        Exact Hessian = 2/n [M^T (J^T J + R) M] + sum_z (dL/dz) d2z/dtheta2, M = dz/dtheta."""
        total, grad_z, jtj, resid = self._prefix_terms(theta, rep, exact=True)
        M = self._prefix_jacobian(theta)
        Mt = M.transpose(1, 2)
        grad_z = 2.0 / self.n * grad_z
        grad = (Mt @ grad_z.unsqueeze(-1)).squeeze(-1)
        gn = 2.0 / self.n * Mt @ jtj @ M
        H = gn + 2.0 / self.n * Mt @ resid @ M + self._prefix_curvature(theta, grad_z)
        H = 0.5 * (H + H.transpose(1, 2))
        return total / self.n, grad, H, gn


@functools.lru_cache(maxsize=64)
def _pair_index(k: int) -> Tensor:
    """(k, k) -> index of the unordered pair {i, j} in the row-major list of pairs i <= j."""
    i, j = torch.triu_indices(k, k)
    index = torch.empty(k, k, dtype=torch.long)
    index[i, j] = torch.arange(i.numel())
    index[j, i] = torch.arange(i.numel())
    return index


# a fit's outcome, stored as an int8 code while the solver runs (RUNNING until it stops)
STATUSES = ("max_iter", "converged", "stalled", "nonfinite", "pruned")
RUNNING, MAX_ITER, CONVERGED, STALLED, NONFINITE, PRUNED = -1, 0, 1, 2, 3, 4


@dataclass
class FitState:
    """Per-fit outcome of the solver (all tensors share the leading batch shape)."""

    theta: Tensor
    loss: Tensor
    n_iter: Tensor
    converged: Tensor
    status: list[str]  # one of STATUSES per fit
    pruned: Tensor


#: batch_invariant_eigh pads every matrix to a multiple of this size, so that in torch's contiguous batch copy each
#: matrix and its eigenvalue row start on a 64-byte boundary whatever its position (8 doubles = 64 bytes).
EIGH_ALIGN = 8


def batch_invariant_eigh(S: Tensor) -> tuple[Tensor, Tensor]:
    """torch.linalg.eigh of a batch of symmetric matrices (B, P, P) whose result for each matrix does not depend on
    the other matrices of the batch.

    Why: LAPACK as torch calls it on the CPU (MKL) gives results that differ in the last bits with the memory
    alignment of a matrix, and in torch's batch copy matrix b starts at byte 8 b P^2: a fit's eigendecomposition, and
    through its steps the whole fit (to ~1e-6 relative in the flat valleys of over-specified fits), then depended
    on its position in the batch, i.e. on which other fits ran beside it. Each matrix is embedded in a block-diagonal
    matrix diag(S_b, c_b I) of size a multiple of EIGH_ALIGN, with c_b above every eigenvalue of S_b (Gershgorin:
    twice the largest absolute row sum, plus 1); the zero coupling is exact, so the first P eigenpairs are those of
    S_b, and every matrix starts on a 64-byte boundary (tests/test_l2_speed.py checks the invariance)."""
    B, P, _ = S.shape
    padded = -(-P // EIGH_ALIGN) * EIGH_ALIGN
    if padded == P:
        return torch.linalg.eigh(S)
    big = torch.zeros(B, padded, padded, dtype=S.dtype)
    big[:, :P, :P] = S
    extra = torch.arange(P, padded)
    big[:, extra, extra] = (2.0 * S.abs().sum(-1).amax(-1) + 1.0).unsqueeze(-1)
    lam, V = torch.linalg.eigh(big)
    return lam[:, :P], V[:, :P, :P]


def _curvature(terms: PrefixSpaceTerms, theta: Tensor, rep: Tensor, method: str):
    if method == "newton":
        return terms.hessian(theta, rep)
    loss, grad, gn = terms.gauss_newton(theta, rep)
    return loss, grad, gn, gn


def stopping_tolerance(loss: Tensor, n: int, m: int, config: SolverConfig) -> Tensor:
    """Largest Newton decrement at which a fit may stop (see SolverConfig): (B,) -> (B,)."""
    strict = config.ftol * loss.abs()
    if config.stop == "strict":
        return strict
    return torch.maximum(strict, config.stat_tol * loss.abs() / (m * n))  # tau * sigma_hat^2 / n


def _prune_checkpoint(iteration: int, config: SolverConfig) -> bool:
    """Successive halving: prune at prune_after * 2^j."""
    k = iteration / config.prune_after
    return k >= 1 and k == int(k) and (int(k) & (int(k) - 1)) == 0


class _Solver:
    """The state of a batch of damped Newton fits, one row per fit (B rows, P parameters each).

    theta (B, P); loss (B,); grad (B, P); H (B, P, P) the curvature; scale (B, P) the running max of
    diag(Gauss-Newton), the diagonal scaling D^2; mu, nu (B,) the damping and its growth factor (Nielsen);
    n_iter (B,); code (B,) int8: RUNNING or the final status (index into STATUSES)."""

    def __init__(self, terms: PrefixSpaceTerms, theta0: Tensor, rep: Tensor, config: SolverConfig):
        self.terms, self.rep, self.config = terms, rep, config
        self.theta = theta0.clone().to(DTYPE)
        B, P = self.theta.shape
        self.mu = torch.full((B,), config.damping0, dtype=DTYPE)
        self.nu = torch.full((B,), 2.0, dtype=DTYPE)
        self.n_iter = torch.zeros(B, dtype=torch.long)
        self.code = torch.full((B,), RUNNING, dtype=torch.int8)
        self.loss = torch.full((B,), float("nan"), dtype=DTYPE)
        self.grad = torch.zeros(B, P, dtype=DTYPE)
        self.H = torch.zeros(B, P, P, dtype=DTYPE)
        self.scale = torch.zeros(B, P, dtype=DTYPE)
        self.n_reps = int(rep.max()) + 1 if B else 0
        self.evaluate(torch.isfinite(self.theta).all(-1).nonzero().flatten())  # a non-finite start stays NaN
        self.stop_nonfinite()

    def running(self) -> Tensor:
        return self.code == RUNNING

    def evaluate(self, idx: Tensor) -> None:
        """Loss, gradient and curvature at theta[idx]; the scaling keeps the largest GN diagonal seen."""
        if idx.numel() == 0:
            return
        self.store(idx, *_curvature(self.terms, self.theta[idx], self.rep[idx], self.config.method))

    def store(self, idx: Tensor, loss: Tensor, grad: Tensor, H: Tensor, gn: Tensor) -> None:
        self.loss[idx], self.grad[idx], self.H[idx] = loss, grad, H
        self.scale[idx] = torch.maximum(self.scale[idx], torch.diagonal(gn, dim1=-2, dim2=-1))

    def stop_nonfinite(self) -> None:
        bad = self.running() & (~torch.isfinite(self.loss) | ~torch.isfinite(self.grad).all(-1)
                                | ~torch.isfinite(self.H).flatten(1).all(-1))
        self.code[bad] = NONFINITE

    def prune(self) -> None:
        """Stop the starts of a replicate whose loss is clearly above that replicate's best start."""
        loss, rep = self.loss, self.rep
        finite = torch.where(torch.isfinite(loss), loss, torch.full_like(loss, float("inf")))
        best = torch.full((self.n_reps,), float("inf"), dtype=DTYPE).scatter_reduce(0, rep, finite, "amin")
        margin = self.config.prune_margin * best.abs() / (self.terms.m * self.terms.n)  # prune_margin * sigma^2 / n
        self.code[self.running() & (finite > best[rep] + margin[rep])] = PRUNED

    def scaled_eigen(self, active: Tensor):
        """Eigendecomposition of the scaled curvature D^-1 H D^-1 = V diag(lam) V^T of the active fits, with
        D (b, P) and the scaled gradient in the eigenbasis, coef = V^T D^-1 g."""
        D = self.scale[active]
        D = D.clamp_min(1e-12 * D.amax(-1, keepdim=True).clamp_min(1e-300)).sqrt()  # (b, P)
        lam, V = batch_invariant_eigh(self.H[active] / (D.unsqueeze(-1) * D.unsqueeze(-2)))
        coef = (V.transpose(1, 2) @ (self.grad[active] / D).unsqueeze(-1)).squeeze(-1)
        return D, lam, V, coef

    def stop_tests(self, active: Tensor, lam: Tensor, coef: Tensor) -> tuple[Tensor, Tensor]:
        """(converged, stalled) masks over `active`: converged = curvature PSD within psd_tol and Newton
        decrement within stopping_tolerance; stalled = not converged and the damping beyond damping_max."""
        lam_max = lam.abs().amax(-1).clamp_min(1e-300)
        decrement = 0.5 * (coef.square() / lam.clamp_min((1e-14 * lam_max).unsqueeze(-1))).sum(-1)
        ok = (lam[:, 0] >= -self.config.psd_tol * lam_max) & (
            decrement <= stopping_tolerance(self.loss[active], self.terms.n, self.terms.m, self.config))
        return ok, ~ok & (self.mu[active] > self.config.damping_max)

    def step(self, active: Tensor, D: Tensor, lam: Tensor, V: Tensor, coef: Tensor) -> None:
        """One damped step s = -D^-1 V (lam + sigma)^-1 V^T D^-1 g, sigma = mu + max(0, -lam_min); accepted
        when the loss drops; mu shrinks by the gain ratio on success and grows by nu on failure."""
        lam_mu, f0, nu = self.mu[active], self.loss[active], self.nu[active]
        self.n_iter[active] += 1
        sigma = lam_mu + (-lam[:, 0]).clamp_min(0.0)
        step_e = -coef / (lam + sigma.unsqueeze(-1))
        predicted = -(coef * step_e + 0.5 * lam * step_e.square()).sum(-1)
        trial = self.theta[active] + (V @ step_e.unsqueeze(-1)).squeeze(-1) / D
        # with the fused pass the loss costs a third of the full evaluation, and most steps are accepted: evaluate
        # everything at the trial point at once (the loss is the same number either way)
        full = self.terms.fused_in_use()
        if full:
            trial_terms = _curvature(self.terms, trial, self.rep[active], self.config.method)
            trial_loss = trial_terms[0]
        else:
            trial_loss = self.terms.loss(trial, self.rep[active])
        gain = (f0 - trial_loss) / predicted.clamp_min(1e-300)
        accepted = torch.isfinite(trial_loss) & (trial_loss < f0)
        shrink = (1.0 - (2.0 * gain - 1.0).pow(3)).clamp(min=1.0 / 3.0)
        self.mu[active] = torch.where(accepted, (lam_mu * shrink).clamp_min(1e-15), lam_mu * nu)
        self.nu[active] = torch.where(accepted, torch.full_like(nu, 2.0), 2.0 * nu)
        self.theta[active[accepted]] = trial[accepted]
        if full:
            self.store(active[accepted], *(t[accepted] for t in trial_terms))
        else:
            self.evaluate(active[accepted])

    def result(self) -> FitState:
        code = torch.where(self.code == RUNNING, torch.full_like(self.code, MAX_ITER), self.code)
        return FitState(theta=self.theta, loss=self.loss, n_iter=self.n_iter, converged=code == CONVERGED,
                        status=[STATUSES[c] for c in code.tolist()], pruned=code == PRUNED)


def levenberg_marquardt(terms: PrefixSpaceTerms, theta0: Tensor, rep: Tensor, config: SolverConfig) -> FitState:
    """Minimise terms.loss for every row of theta0 (B, P); row b uses the data of replicate rep[b].

    Per iteration and fit: scale by D = running max of diag(GN); eigendecompose the scaled curvature
    H' = V diag(lam) V^T; test convergence (SolverConfig); step s' = -V (lam + sigma)^-1 V^T g' with
    sigma = mu + max(0, -lam_min); accept when the loss drops; update mu from the gain ratio (Nielsen).
    With several rows per replicate, clearly worse rows are pruned at the checkpoints of SolverConfig.
    A fit still running when max_iter steps are spent ends as "max_iter"."""
    solver = _Solver(terms, theta0, rep, config)
    multi_start = config.prune and theta0.shape[0] > solver.n_reps
    for iteration in range(config.max_iter + 1):
        if multi_start and _prune_checkpoint(iteration, config):
            solver.prune()
        active = solver.running().nonzero().flatten()
        if active.numel() == 0:
            break
        D, lam, V, coef = solver.scaled_eigen(active)
        converged, stalled = solver.stop_tests(active, lam, coef)
        solver.code[active[converged]] = CONVERGED
        solver.code[active[stalled]] = STALLED
        if iteration >= config.max_iter:  # budget spent: the rest end as max_iter
            break
        go = ~converged & ~stalled
        if go.any():
            solver.step(active[go], D[go], lam[go], V[go], coef[go])
        solver.stop_nonfinite()
    return solver.result()


@contextlib.contextmanager
def _threads(n: int):
    if n <= 0:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class PrefixLeastSquares:
    """Least-squares estimator of the prompt part of f_G, scikit-learn style.

    Parameters are stored untouched by the constructor; `fit(X, Y, starts)` runs every start of every
    replicate as one batched program and returns self. `device` ('cpu' or 'cuda') is where the
    sample-space pass runs (inputs may live anywhere; fitted state is on the host). Fitted state:
        theta_ (R, S, P), loss_ (R, S), converged_ (R, S), n_iter_ (R, S), status_ (R x S nested list),
        pruned_ (R, S): starts stopped early by multi-start pruning (status "pruned"),
        best_start_ (R,): index of the lowest final loss among the finite starts of each replicate,
        best_theta_ (R, P), best_loss_ (R,).
    """

    def __init__(self, structure: Structure, experts: PretrainedExperts, n_atoms: int,
                 solver: SolverConfig | None = None, device: str = "cpu"):
        self.structure = structure
        self.experts = experts
        self.n_atoms = n_atoms
        self.solver = solver
        self.device = device

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
        X, Y, starts = (torch.as_tensor(t, dtype=DTYPE).cpu() for t in (X, Y, starts))
        self._check(X, Y, starts)
        device = check_device(self.device)
        solver = self.solver or SolverConfig()
        R, S, P = starts.shape
        with _threads(solver.num_threads):
            terms = PrefixSpaceTerms(self.structure, self.experts, self.n_atoms, X, Y, solver.chunk_elements, device)
            rep = torch.arange(R).repeat_interleave(S)
            state = levenberg_marquardt(terms, starts.reshape(R * S, P), rep, solver)
        self.theta_ = state.theta.reshape(R, S, P)
        self.loss_ = state.loss.reshape(R, S)
        self.converged_ = state.converged.reshape(R, S)
        self.n_iter_ = state.n_iter.reshape(R, S)
        self.pruned_ = state.pruned.reshape(R, S)
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
