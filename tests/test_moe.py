"""f_G against a direct loop over the THEORY section 1 formula, and log-space stability."""
import math

import numpy as np
import torch

from reparam.moe import PretrainedExperts, prefix_moe


def direct_f(x, A, a, H, k, b, v):
    """THEORY section 1, one sample, written as plainly as possible."""
    num = np.zeros(H.shape[2])
    den = 0.0
    for j in range(A.shape[0]):
        weight = math.exp(float(x @ A[j] @ x) + a[j])
        num += weight * (H[j].T @ x)
        den += weight
    for i in range(k.shape[0]):
        weight = math.exp(float(k[i] @ x) + b[i])
        num += weight * v[i]
        den += weight
    return num / den


def test_matches_direct_formula_on_random_inputs():
    rng = np.random.default_rng(0)
    d, m, N, L, n = 3, 2, 3, 4, 50
    experts = PretrainedExperts.random(d, m, N, seed=1)
    A, a, H = (t.numpy() for t in (experts.A, experts.a, experts.H))
    k, v, b = rng.normal(size=(L, d)), rng.normal(size=(L, m)), rng.normal(size=L)
    X = rng.uniform(-1, 1, size=(n, d))
    ours = prefix_moe(torch.as_tensor(X), experts, *(torch.as_tensor(t) for t in (k, v, b))).numpy()
    loop = np.stack([direct_f(x, A, a, H, k, b, v) for x in X])
    assert np.max(np.abs(ours - loop)) <= 1e-10


def test_batched_leading_dimensions_match_single_evaluations():
    rng = np.random.default_rng(1)
    experts = PretrainedExperts.random(2, 1, 2, seed=3)
    X = torch.as_tensor(rng.uniform(-1, 1, size=(3, 40, 2)))  # (R, n, d)
    keys = torch.as_tensor(rng.normal(size=(3, 5, 2, 2)))  # (R, S, L, d)
    values = torch.as_tensor(rng.normal(size=(3, 5, 2, 1)))
    biases = torch.as_tensor(rng.normal(size=(3, 5, 2)))
    batched = prefix_moe(X[:, None], experts, keys, values, biases)  # (R, S, n, m)
    for r in range(3):
        for s in range(5):
            single = prefix_moe(X[r], experts, keys[r, s], values[r, s], biases[r, s])
            assert torch.allclose(batched[r, s], single, atol=1e-13, rtol=0)


def test_no_overflow_for_gate_scores_up_to_1e3():
    experts = PretrainedExperts(A=[[[500.0, 0.0], [0.0, 500.0]]], a=[0.0], H=[[[1.0], [2.0]]])
    X = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [0.0, 0.0]], dtype=torch.float64)
    for sign in (1.0, -1.0):
        keys = sign * torch.tensor([[1000.0, 0.0], [0.0, -1000.0]], dtype=torch.float64)
        biases = torch.tensor([sign * 1000.0, -sign * 1000.0], dtype=torch.float64)
        out = prefix_moe(X, experts, keys, torch.tensor([[3.0], [-3.0]], dtype=torch.float64), biases)
        assert torch.isfinite(out).all()
        # every output is a convex combination of the expert outputs
        assert (out.abs() <= 3.0 + 1e-12).all()
