"""Voronoi losses between a fitted and a true mixing measure, and the regression L2 error (THEORY section 4).

A mixing measure is a set of atoms theta_i (..., L, D) with weights exp(b_i) (..., L). Cells:
V_j = {i : theta_hat_i is closer to theta*_j than to any other true atom} (ties go to the lower j).

    D(G_hat, G*) = sum_j | sum_{i in V_j} w_hat_i - w*_j |
                 + sum_{j: |V_j| = 1} sum_{i in V_j} w_hat_i ||theta_hat_i - theta*_j||^{exponent_single}
                 + sum_{j: |V_j| > 1} sum_{i in V_j} w_hat_i ||theta_hat_i - theta*_j||^{exponent_multi}

exponent_single = 1, exponent_multi = 2 is the loss of the shared theorems; D_{1,r} (Theorem 1) sets
both to r. Everything broadcasts over leading dimensions and works on numpy arrays or torch tensors.
"""
from __future__ import annotations

import numpy as np
import torch

from .moe import DTYPE, PretrainedExperts


def _as_tensor(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=DTYPE)


def voronoi_cells(theta_hat, theta_true) -> torch.Tensor:
    """Index of the nearest true atom for every fitted atom: (..., L_hat)."""
    theta_hat, theta_true = _as_tensor(theta_hat), _as_tensor(theta_true)
    distances = torch.cdist(theta_hat, theta_true)  # (..., L_hat, L_true)
    return distances.argmin(dim=-1)


def _cell_distances(theta_hat: torch.Tensor, theta_true: torch.Tensor):
    """Cells, and for every fitted atom: distance to its true atom and whether its cell is over-specified."""
    # numpy's broadcast rule: torch.broadcast_shapes imports sympy on first use (~1 s per process)
    batch = np.broadcast_shapes(tuple(theta_hat.shape[:-2]), tuple(theta_true.shape[:-2]))
    theta_hat = theta_hat.expand(*batch, *theta_hat.shape[-2:])
    theta_true = theta_true.expand(*batch, *theta_true.shape[-2:])
    cells = voronoi_cells(theta_hat, theta_true)  # (..., L_hat)
    cell_size = torch.nn.functional.one_hot(cells, theta_true.shape[-2]).sum(dim=-2)  # (..., L_true)
    nearest = torch.gather(theta_true, -2, cells.unsqueeze(-1).expand(*cells.shape, theta_true.shape[-1]))
    distance = (theta_hat - nearest).norm(dim=-1)  # (..., L_hat)
    in_multi = torch.gather(cell_size, -1, cells) > 1
    return cells, distance, in_multi


def voronoi_loss(theta_hat, weight_hat, theta_true, weight_true, exponent_single: float = 1.0,
                 exponent_multi: float = 2.0):
    """The Voronoi loss D above. Shapes (..., L_hat, D), (..., L_hat), (..., L_true, D), (..., L_true) -> (...)."""
    is_numpy = not isinstance(theta_hat, torch.Tensor)
    theta_hat, weight_hat = _as_tensor(theta_hat), _as_tensor(weight_hat)
    theta_true, weight_true = _as_tensor(theta_true), _as_tensor(weight_true)
    if theta_hat.shape[-1] != theta_true.shape[-1]:
        raise ValueError(f"theta_hat atoms have {theta_hat.shape[-1]} coordinates, theta_true {theta_true.shape[-1]}")
    if weight_hat.shape != theta_hat.shape[:-1] or weight_true.shape != theta_true.shape[:-1]:
        raise ValueError("weights must have the shape of the atoms without their last dimension")
    if (weight_hat < 0).any() or (weight_true < 0).any():
        raise ValueError("weights must be >= 0 (they are exp(b))")
    cells, distance, in_multi = _cell_distances(theta_hat, theta_true)
    membership = torch.nn.functional.one_hot(cells, theta_true.shape[-2]).to(DTYPE)  # (..., L_hat, L_true)
    mass_error = ((membership * weight_hat.unsqueeze(-1)).sum(dim=-2) - weight_true).abs().sum(dim=-1)
    # scalar exponents: torch evaluates pow(x, 1) and pow(x, 2) exactly (a copy, x * x), whereas a tensor of
    # exponents goes through a vectorised pow whose last bit depends on the element's position in the batch
    powered = torch.where(in_multi, distance.pow(float(exponent_multi)), distance.pow(float(exponent_single)))
    total = mass_error + (weight_hat * powered).sum(dim=-1)
    if not is_numpy:
        return total
    return total.numpy() if total.ndim else float(total)


def voronoi_r(theta_hat, weight_hat, theta_true, weight_true, r: float):
    """D_{1,r} of Theorem 1: every cell with exponent r."""
    return voronoi_loss(theta_hat, weight_hat, theta_true, weight_true, exponent_single=r, exponent_multi=r)


def cell_atom_errors(theta_hat, theta_true) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest unweighted atom distance ||theta_hat_i - theta*_j|| over atoms in single-atom cells and over
    atoms in multi-atom (over-specified) cells: each (...), NaN where no such cell exists. What the theorems
    predict for each is the theory table's (reparam.theory.THEORY_TABLE, error `atom_error_multi`)."""
    _, distance, in_multi = _cell_distances(_as_tensor(theta_hat), _as_tensor(theta_true))
    nan = torch.full_like(distance, float("nan"))
    return _nanmax(torch.where(~in_multi, distance, nan)), _nanmax(torch.where(in_multi, distance, nan))


def _nanmax(x: torch.Tensor) -> torch.Tensor:
    filled = torch.where(torch.isnan(x), torch.full_like(x, -float("inf")), x).amax(dim=-1)
    return torch.where(torch.isinf(filled), torch.full_like(filled, float("nan")), filled)


#: Evaluation points per chunk of l2_error, and fitted prefixes per block: fixed numbers, never derived from the
#: batch, so that a fit's error is the same float whatever other fits share the call (a study may evaluate its
#: replicates in groups of any size); a block's temporaries (L + 2 numbers per point and fit) stay in cache.
L2_CHUNK_POINTS = 1024
L2_BLOCK_FITS = 64


def _prefix_output(Xt: torch.Tensor, pre_log_weight: torch.Tensor, pre_mean_t: torch.Tensor, keys: torch.Tensor,
                   values: torch.Tensor, biases: torch.Tensor) -> torch.Tensor:
    """f_G on a chunk of points for a block of prefixes: Xt (d, c), pre_log_weight (c,), pre_mean_t (m, c) from
    PretrainedExperts.collapse; keys (B, L, d), values (B, L, m), biases (B, L) -> (B, m, c).

    The same mixture as reparam.moe.mixture_output (a softmax over [pretrained, prompts] shifted by the row max),
    laid out with the point axis last and written as elementwise operations with explicit sums over the few
    atoms and coordinates: no softmax over a last dimension of size L + 1 (torch's reduction over a tiny inner
    dimension is the slow part of the reference) and no matrix product, so each prefix's numbers do not depend
    on how many prefixes share the block."""
    d, L = Xt.shape[0], keys.shape[1]
    scores = biases.unsqueeze(-1) + keys[:, :, 0, None] * Xt[0]  # (B, L, c): b_i + k_i^T x
    for k in range(1, d):
        scores.add_(keys[:, :, k, None] * Xt[k])
    top = torch.maximum(scores[:, 0], pre_log_weight)  # (B, c): the log-sum-exp shift
    for i in range(1, L):
        torch.maximum(top, scores[:, i], out=top)
    e = scores.sub_(top.unsqueeze(1)).exp_()  # (B, L, c), in place of the scores
    e0 = torch.exp(pre_log_weight - top)  # (B, c)
    total = e0 + e[:, 0]
    for i in range(1, L):
        total.add_(e[:, i])
    inv = total.reciprocal_()
    e.mul_(inv.unsqueeze(1))  # the prompts' softmax weights
    out = (e0.mul_(inv)).unsqueeze(1) * pre_mean_t  # (B, m, c)
    for i in range(L):
        out.add_(values[:, i, :, None] * e[:, i].unsqueeze(1))
    return out


def l2_error(X_eval: torch.Tensor, experts: PretrainedExperts, fitted_prefix, true_prefix) -> torch.Tensor:
    """||f_hat - f*||_{L2(mu)} estimated on a fresh sample X_eval (n_eval, d).

    fitted_prefix = (keys (..., L, d), values (..., L, m), biases (..., L)); true_prefix likewise
    without batch dimensions. Returns (...).

    The pretrained experts are collapsed once for all fits; the sum of squared differences runs over chunks of
    L2_CHUNK_POINTS points and blocks of L2_BLOCK_FITS fits (bounded memory at any number of fits: the whole
    (fits, n_eval, L + 1) weight tensor is never formed). Equal to the direct evaluation,
    mean_x ||prefix_moe(x; fit) - prefix_moe(x; truth)||^2, up to float64 round-off (tests/test_l2_speed.py)."""
    keys, values, biases = (_as_tensor(t) for t in fitted_prefix)
    t_keys, t_values, t_biases = (_as_tensor(t) for t in true_prefix)
    X_eval = _as_tensor(X_eval)
    if X_eval.ndim != 2:
        raise ValueError(f"X_eval must have shape (n_eval, d), got {tuple(X_eval.shape)}")
    if t_keys.ndim != 2:
        raise ValueError(f"true_prefix keys must have shape (L*, d) (no batch dimensions), got {tuple(t_keys.shape)}")
    batch = keys.shape[:-2]
    L, d, m = keys.shape[-2], keys.shape[-1], values.shape[-1]
    keys, values, biases = keys.reshape(-1, L, d), values.reshape(-1, L, m), biases.reshape(-1, L)
    B, n = keys.shape[0], X_eval.shape[0]
    pre_log_weight, pre_mean = experts.collapse(X_eval)  # (n,), (n, m): shared by every fit and the truth
    Xt, pre_mean_t = X_eval.T.contiguous(), pre_mean.T.contiguous()
    total = torch.zeros(B, dtype=DTYPE)
    for start in range(0, n, L2_CHUNK_POINTS):
        part = slice(start, min(n, start + L2_CHUNK_POINTS))
        chunk = (Xt[:, part], pre_log_weight[part], pre_mean_t[:, part])
        f_true = _prefix_output(*chunk, t_keys[None], t_values[None], t_biases[None])[0]  # (m, c)
        for lo in range(0, B, L2_BLOCK_FITS):
            hi = min(B, lo + L2_BLOCK_FITS)
            diff = _prefix_output(*chunk, keys[lo:hi], values[lo:hi], biases[lo:hi]) - f_true  # (b, m, c)
            squared = diff[:, 0].square()
            for j in range(1, m):
                squared = squared + diff[:, j].square()
            total[lo:hi] += squared.sum(-1)  # a chunk is far below torch's parallel-reduction grain: one order
    return (total / n).sqrt().reshape(batch)
