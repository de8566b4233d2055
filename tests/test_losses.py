"""Voronoi losses: zero at the truth, permutation invariance, hand-computed values."""
import itertools

import numpy as np
import pytest
import torch

from reparam.losses import cell_atom_errors, voronoi_loss, voronoi_r

TRUE_ATOMS = np.array([[0.0, 0.0], [3.0, 0.0]])
TRUE_WEIGHTS = np.array([1.0, 2.0])


def test_zero_at_truth():
    assert voronoi_loss(TRUE_ATOMS, TRUE_WEIGHTS, TRUE_ATOMS, TRUE_WEIGHTS) == 0.0
    assert voronoi_r(TRUE_ATOMS, TRUE_WEIGHTS, TRUE_ATOMS, TRUE_WEIGHTS, 1.5) == 0.0


def test_permutation_invariant():
    rng = np.random.default_rng(0)
    fitted = rng.normal(size=(4, 2)) + np.array([[0, 0], [0, 0], [3, 0], [3, 0]])
    weights = rng.uniform(0.2, 1.5, size=4)
    reference = voronoi_loss(fitted, weights, TRUE_ATOMS, TRUE_WEIGHTS)
    for perm in itertools.permutations(range(4)):
        perm = list(perm)
        assert voronoi_loss(fitted[perm], weights[perm], TRUE_ATOMS, TRUE_WEIGHTS) == pytest.approx(reference, abs=1e-14)


def test_hand_computed_exact_specified():
    fitted = np.array([[0.0, 0.5], [3.0, 0.0]])
    weights = np.array([1.5, 2.0])
    # cell 1: |1.5 - 1| + 1.5 * 0.5 ; cell 2: |2 - 2| + 2 * 0
    assert voronoi_loss(fitted, weights, TRUE_ATOMS, TRUE_WEIGHTS) == pytest.approx(0.5 + 0.75, abs=1e-14)


def test_hand_computed_over_specified_cell():
    fitted = np.array([[0.3, 0.4], [-0.6, 0.8], [3.0, 1.0]])  # distances 0.5, 1.0 (cell 1), 1.0 (cell 2)
    weights = np.array([0.5, 0.25, 2.5])
    # cell 1 (two atoms, exponent 2): |0.75 - 1| + 0.5*0.25 + 0.25*1 ; cell 2 (one atom): |2.5-2| + 2.5*1
    expected = 0.25 + 0.125 + 0.25 + 0.5 + 2.5
    assert voronoi_loss(fitted, weights, TRUE_ATOMS, TRUE_WEIGHTS) == pytest.approx(expected, abs=1e-14)
    # D_{1,r}: every cell with exponent r = 3
    expected_r3 = 0.25 + 0.5 * 0.125 + 0.25 * 1 + 0.5 + 2.5
    assert voronoi_r(fitted, weights, TRUE_ATOMS, TRUE_WEIGHTS, 3.0) == pytest.approx(expected_r3, abs=1e-14)
    single, multi = cell_atom_errors(torch.as_tensor(fitted), torch.as_tensor(TRUE_ATOMS))
    assert float(single) == pytest.approx(1.0) and float(multi) == pytest.approx(1.0)


def test_batched_matches_loop():
    rng = np.random.default_rng(1)
    fitted = rng.normal(size=(6, 3, 2)) * 2
    weights = rng.uniform(0.1, 2, size=(6, 3))
    batched = voronoi_loss(fitted, weights, TRUE_ATOMS, TRUE_WEIGHTS)
    for i in range(6):
        assert batched[i] == pytest.approx(voronoi_loss(fitted[i], weights[i], TRUE_ATOMS, TRUE_WEIGHTS), abs=1e-14)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="coordinates"):
        voronoi_loss(np.zeros((2, 3)), np.ones(2), TRUE_ATOMS, TRUE_WEIGHTS)
    with pytest.raises(ValueError, match="weights"):
        voronoi_loss(TRUE_ATOMS, -TRUE_WEIGHTS, TRUE_ATOMS, TRUE_WEIGHTS)
