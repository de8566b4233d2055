"""f_G: one attention head with prefixes, read as a mixture of experts (THEORY section 1).

    f_G(X) = [ sum_j exp(s0_j(X)) h_j(X) + sum_i exp(k_i^T X + b_i) v_i ] / D(X)

The N pretrained experts are known and fixed, so for a given sample they collapse into ONE
pseudo-expert: log-weight lse_j s0_j(X) and output sum_j softmax(s0)_j h_j(X). Every fit then
only touches the prompt part, and the whole mixture is a softmax over L + 1 scores, computed in
log space (torch.softmax subtracts the row max), so scores of +-1e3 neither overflow nor underflow.

Leading dimensions broadcast everywhere: X may be (R, n, d) for R replicates while keys are
(R, S, L, d) for S starts per replicate, as long as the caller lines the dimensions up.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

DTYPE = torch.float64


@dataclass
class PretrainedExperts:
    """The frozen head: quadratic gates s0_j(X) = X^T A_j X + a_j and linear experts h_j(X) = H_j^T X.

    Fields (all known, never estimated):
        A: (N, d, d) query-key products of the input tokens.
        a: (N,) gate biases.
        H: (N, d, m) value projections.
    """

    A: Tensor
    a: Tensor
    H: Tensor

    def __post_init__(self):
        self.A = torch.as_tensor(self.A, dtype=DTYPE)
        self.a = torch.as_tensor(self.a, dtype=DTYPE)
        self.H = torch.as_tensor(self.H, dtype=DTYPE)
        if self.A.ndim != 3 or self.A.shape[1] != self.A.shape[2]:
            raise ValueError(f"A must have shape (N, d, d), got {tuple(self.A.shape)}")
        N, d, _ = self.A.shape
        if self.a.shape != (N,):
            raise ValueError(f"a must have shape ({N},), got {tuple(self.a.shape)}")
        if self.H.ndim != 3 or self.H.shape[:2] != (N, d):
            raise ValueError(f"H must have shape ({N}, {d}, m), got {tuple(self.H.shape)}")

    @property
    def n_experts(self) -> int:
        return self.A.shape[0]

    @property
    def input_dim(self) -> int:
        return self.A.shape[1]

    @property
    def output_dim(self) -> int:
        return self.H.shape[2]

    def scores(self, X: Tensor) -> Tensor:
        """s0_j(X) for every sample: (..., n, N)."""
        return torch.einsum("...nd,jde,...ne->...nj", X, self.A, X) + self.a

    def outputs(self, X: Tensor) -> Tensor:
        """h_j(X) for every sample: (..., n, N, m)."""
        return torch.einsum("...nd,jdm->...njm", X, self.H)

    def collapse(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """The pretrained part as one pseudo-expert.

        Returns (log_weight (..., n), mean_output (..., n, m)) with
        log_weight = log sum_j exp(s0_j) and mean_output = sum_j softmax(s0)_j h_j.
        """
        s0 = self.scores(X)  # (..., n, N)
        log_weight = torch.logsumexp(s0, dim=-1)
        mean_output = torch.einsum("...nj,...njm->...nm", torch.softmax(s0, dim=-1), self.outputs(X))
        return log_weight, mean_output

    @classmethod
    def random(cls, d: int, m: int, n_experts: int, seed: int, scale: float = 0.5) -> "PretrainedExperts":
        """Random frozen head, reproducible from `seed` (used for random truths)."""
        rng = np.random.default_rng(seed)
        A = rng.normal(0.0, scale, size=(n_experts, d, d))
        A = 0.5 * (A + A.transpose(0, 2, 1))  # only the symmetric part enters X^T A X
        return cls(A=A, a=rng.normal(0.0, scale, size=n_experts), H=rng.normal(0.0, 1.0, size=(n_experts, d, m)))


def gate_scores(X: Tensor, keys: Tensor, biases: Tensor) -> Tensor:
    """k_i^T X + b_i: (..., n, L) from X (..., n, d), keys (..., L, d), biases (..., L)."""
    return X @ keys.transpose(-1, -2) + biases.unsqueeze(-2)


def mixture_weights(pre_log_weight: Tensor, scores: Tensor) -> Tensor:
    """Softmax over [pretrained pseudo-expert, prompt experts]: (..., n, L + 1)."""
    pre = pre_log_weight.expand(scores.shape[:-1]).unsqueeze(-1)
    return torch.softmax(torch.cat([pre, scores], dim=-1), dim=-1)


def mixture_output(
    X: Tensor,
    keys: Tensor,
    values: Tensor,
    biases: Tensor,
    pre_log_weight: Tensor,
    pre_mean: Tensor,
) -> Tensor:
    """f_G(X) from collapsed pretrained experts.

    X (..., n, d); keys (..., L, d); values (..., L, m); biases (..., L);
    pre_log_weight (..., n) and pre_mean (..., n, m) from PretrainedExperts.collapse(X).
    Returns (..., n, m).
    """
    weights = mixture_weights(pre_log_weight, gate_scores(X, keys, biases))  # (..., n, L+1)
    return weights[..., :1] * pre_mean + weights[..., 1:] @ values


def prefix_moe(X: Tensor, experts: PretrainedExperts, keys: Tensor, values: Tensor, biases: Tensor) -> Tensor:
    """f_G(X) straight from the pretrained experts: (..., n, m)."""
    pre_log_weight, pre_mean = experts.collapse(X)
    return mixture_output(X, keys, values, biases, pre_log_weight, pre_mean)
