"""Bad input stops with a ValueError that names the argument."""
import math

import pytest
import torch

from reparam.fit import PrefixLeastSquares, SolverConfig
from reparam.structures import build_structure
from reparam.study import Setting, TruthConfig, make_starts, run_cell
from reparam.truth import canonical_truth


@pytest.fixture(scope="module")
def truth():
    return canonical_truth("shared_mlp")


def test_n_below_one(truth):
    with pytest.raises(ValueError, match="n must be"):
        truth.sample(0, seed=1)
    with pytest.raises(ValueError, match="n must be"):
        run_cell(Setting(), 0, [0])


def test_fewer_fitted_than_true_atoms(truth):
    with pytest.raises(ValueError, match="n_fitted_atoms=1"):
        make_starts(Setting(), truth, 1, 100, seed=0)
    with pytest.raises(ValueError, match="extra_atoms"):
        run_cell(Setting(regime="over", extra_atoms=0), 100, [0])


def _estimator(truth):
    return PrefixLeastSquares(truth.structure, truth.experts, 2, SolverConfig(max_iter=2))


def test_wrong_shapes(truth):
    X, Y = truth.sample_replicates(20, [1, 2])
    starts = make_starts(Setting(), truth, 2, 20, 0).unsqueeze(0).expand(2, -1, -1)
    with pytest.raises(ValueError, match="X must have shape"):
        _estimator(truth).fit(X[..., :1], Y, starts)
    with pytest.raises(ValueError, match="Y must have shape"):
        _estimator(truth).fit(X, Y[:1], starts)
    with pytest.raises(ValueError, match="starts must have shape"):
        _estimator(truth).fit(X, Y, starts[..., :-1])
    with pytest.raises(ValueError, match="theta has"):
        truth.structure.prefix(torch.zeros(5, dtype=torch.float64), 2)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nonfinite_data(truth, bad):
    X, Y = truth.sample_replicates(20, [1])
    starts = make_starts(Setting(), truth, 2, 20, 0).unsqueeze(0)
    X_bad = X.clone()
    X_bad[0, 3, 1] = bad
    with pytest.raises(ValueError, match="X contains NaN or inf"):
        _estimator(truth).fit(X_bad, Y, starts)
    Y_bad = Y.clone()
    Y_bad[0, 5, 0] = bad
    with pytest.raises(ValueError, match="Y contains NaN or inf"):
        _estimator(truth).fit(X, Y_bad, starts)


def test_unknown_structure_and_activation():
    with pytest.raises(ValueError, match="structure='attention'"):
        build_structure("attention", 2, 1)
    with pytest.raises(ValueError, match="activation='swish'"):
        canonical_truth("shared_mlp", activation="swish")
    with pytest.raises(ValueError, match="structure='nope'"):
        run_cell(Setting(structure="nope"), 10, [0])


def test_negative_noise():
    with pytest.raises(ValueError, match="noise"):
        canonical_truth("shared_mlp", noise=-0.1)
    with pytest.raises(ValueError, match="truth.noise=-1.0"):
        run_cell(Setting(truth=TruthConfig(noise=-1.0)), 10, [0])


def test_solver_settings():
    with pytest.raises(ValueError, match="max_iter"):
        SolverConfig(max_iter=0)
    with pytest.raises(ValueError, match="gap_tol"):
        SolverConfig(gap_tol=-1.0)
