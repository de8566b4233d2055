"""Structures map native parameters to prefixes as THEORY section 2 says; truths are as documented."""
import numpy as np
import pytest
import torch

from reparam.structures import STRUCTURES, build_structure
from reparam.truth import CANONICAL, canonical_truth, random_truth


def test_registry_holds_the_four_structures():
    assert {"independent", "shared_linear", "shared_mlp", "shared_learned"} <= set(STRUCTURES)
    assert STRUCTURES["shared_learned"].theorem is None  # labelled as outside the theorems


def test_canonical_shared_mlp_prefix_is_tanh_of_the_tie_maps():
    truth = canonical_truth("shared_mlp")
    keys, values, biases = truth.prefix()
    p, W_K, W_V = (np.array(CANONICAL[k]) for k in ("p", "W_K", "W_V"))
    assert np.allclose(keys.numpy(), np.tanh(p @ W_K.T), atol=1e-15)
    assert np.allclose(values.numpy(), np.tanh(p @ W_V.T), atol=1e-15)
    assert np.allclose(biases.numpy(), CANONICAL["b"])


@pytest.mark.parametrize("other", ["independent", "shared_learned"])
def test_independent_and_learned_canonical_truths_share_the_shared_mlp_regression(other):
    X = torch.as_tensor(np.random.default_rng(0).uniform(-1, 1, size=(200, 2)))
    reference = canonical_truth("shared_mlp").regression(X)
    assert torch.allclose(canonical_truth(other).regression(X), reference, atol=1e-14)


@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu", "sigmoid"])
def test_activations_are_selectable(activation):
    s = build_structure("shared_mlp", 2, 1, r=2, W_K=np.eye(2), W_V=np.ones((1, 2)), activation=activation)
    keys, _, _ = s.prefix(torch.tensor([0.0, 0.0, -1.0, 2.0, 0.5, 0.5], dtype=torch.float64), 2)
    expected = {"tanh": np.tanh, "relu": lambda x: np.maximum(x, 0), "sigmoid": lambda x: 1 / (1 + np.exp(-x))}
    if activation in expected:
        assert np.allclose(keys.numpy(), expected[activation](np.array([[-1.0, 2.0], [0.5, 0.5]])))


def test_nested_streams_and_separated_random_truths():
    truth = canonical_truth("independent")
    X_small, Y_small = truth.sample(5000, seed=11)
    X_big, Y_big = truth.sample(20000, seed=11)
    assert torch.equal(X_small, X_big[:5000]) and torch.equal(Y_small, Y_big[:5000])
    assert not torch.equal(truth.sample(100, seed=12)[0], X_small[:100])
    for seed in range(5):
        t = random_truth("independent", seed, min_separation=0.6)
        atoms = torch.cat(t.prefix()[:2], dim=-1)
        assert torch.cdist(atoms, atoms)[0, 1] >= 0.6
        assert random_truth("independent", seed, min_separation=0.6).theta.equal(t.theta)  # reproducible
