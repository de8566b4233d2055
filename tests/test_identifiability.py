"""Identifiability (THEORY section 7): the exact f-equivalent witness, the inverse-bound curve psi(delta) on cases
with a known answer, its verdict rule, and the ratio D / ||f_hat - f*|| on fits."""
import numpy as np
import pandas as pd
import pytest
import torch

from reparam.identifiability import (
    InverseBoundConfig, NoWitnessError, add_inverse_ratio, inverse_bound_curve, inverse_bound_inputs,
    psi_verdict, witness_family, witness_theta,
)
from reparam.moe import DTYPE, PretrainedExperts, mixture_output
from reparam.structures import build_structure
from reparam.truth import GroundTruth, canonical_truth


@pytest.mark.parametrize("structure, latent_dim", [("independent", 2), ("shared_linear", 3)])
def test_witness_reproduces_f_exactly_with_voronoi_loss_at_least_one(structure, latent_dim):
    truth = canonical_truth(structure, latent_dim=latent_dim)
    for box in (1.0, 3.0):  # on the support of mu and off it: the identity holds for every X
        w = witness_family(truth, [0.5, 1.0, 3.0, 5.0], atom=0, alpha=0.3, n_inputs=100_000, input_scale=box)
        assert (w.table["max_abs_error"] <= 1e-12).all(), w.table
    assert w.table["voronoi_prefix"].max() >= 1.0
    assert np.all(np.diff(w.table["voronoi_prefix"]) > 0)  # D grows with the scale while f stays put
    keys, values, _ = truth.structure.prefix(w.theta, w.n_atoms)
    assert torch.allclose(keys[:, 0], keys[:, -1], atol=1e-14)  # the two split atoms share the true key
    assert (values[:, 0] - values[:, -1]).abs().min() > 0.1  # ... but not the value


def test_shared_linear_witness_moves_p_along_the_null_space_of_W_K():
    truth = canonical_truth("shared_linear", latent_dim=3)
    theta, beta = witness_theta(truth, 2.0, atom=1, alpha=0.4)
    assert beta == 0.4
    _, atoms, _ = truth.structure.split(theta, 3)
    _, atoms_true, _ = truth.structure.split(truth.theta, 2)
    step = atoms[1] - atoms_true[1]
    assert float((truth.structure.W_K @ step).abs().max()) < 1e-14
    assert float(step.norm()) == pytest.approx(0.6 * 2.0)


def test_shared_mlp_with_r_above_d_and_one_output_also_has_an_exact_family():
    # THEORY section 7 expects no exact family (sigma is nonlinear); re-weighting the two split atoms gives one
    # whenever m = 1: v* lies between tanh(W_V p_1) and tanh(W_V p_2).
    truth = canonical_truth("shared_mlp", latent_dim=3)
    w = witness_family(truth, [1.0, 3.0], n_inputs=50_000, input_scale=3.0)
    assert (w.table["max_abs_error"] <= 1e-12).all()
    assert (w.table["voronoi_prefix"] > 1e-3).all()
    assert not np.allclose(w.table["beta"], 0.5)


@pytest.mark.parametrize("structure", ["shared_linear", "shared_mlp"])
def test_injective_key_map_has_no_witness_and_the_construction_fails(structure):
    truth = canonical_truth(structure)  # r = d = 2, W_K of full column rank
    with pytest.raises(NoWitnessError, match="injective"):
        witness_theta(truth, 1.0)
    # Forcing the construction along any latent direction changes the key, and f moves with it.
    s = truth.structure
    b, atoms, g = s.split(truth.theta, 2)
    X = truth.eval_inputs(20_000)
    for z in torch.eye(2, dtype=DTYPE):
        p1, p2 = atoms[0] + 0.5 * z, atoms[0] - 0.5 * z
        theta = s.join(torch.cat([b[:1] + np.log(0.5), b[1:], b[:1] + np.log(0.5)]), torch.stack([p1, atoms[1], p2]), g)
        keys, values, biases = s.prefix(theta, 3)
        f = mixture_output(X, keys, values, biases, *truth.experts.collapse(X))
        assert float((f - truth.regression(X)).abs().max()) > 1e-3


def test_witness_argument_errors_name_the_argument():
    truth = canonical_truth("independent")
    with pytest.raises(ValueError, match="alpha"):
        witness_theta(truth, 1.0, alpha=1.0)
    with pytest.raises(ValueError, match="atom"):
        witness_theta(truth, 1.0, atom=2)


FAST = dict(deltas=[1e-1, 1e-2, 1e-3], n_inputs=400, n_random=2, n_continued=2, max_iter=60)


def test_psi_is_zero_to_round_off_for_independent_over_specified():
    truth = canonical_truth("independent", noise=0.0)
    cfg = InverseBoundConfig(**FAST)
    curve = inverse_bound_curve(truth, 3, cfg)
    assert (curve["psi"] <= 1e-13).all(), curve
    assert np.allclose(curve["d_reached"], curve["delta"], rtol=1e-6)
    assert psi_verdict(curve, cfg)["verdict"] == "fails: psi = 0"


def _one_atom_truth() -> GroundTruth:
    """d = m = 1, one pretrained expert, one prompt atom: small enough to brute-force the linearised problem."""
    experts = PretrainedExperts(A=[[[0.3]]], a=[0.0], H=[[[1.0]]])
    return GroundTruth("one-atom", build_structure("independent", 1, 1), experts,
                       theta=torch.tensor([0.2, 0.7, -0.5], dtype=DTYPE), n_atoms=1, noise=0.0)


def test_psi_over_delta_matches_the_brute_forced_linearised_minimum_for_one_exact_atom():
    """For an exact-specified fit psi(delta) / delta -> min { ||J Delta|| : |dw| + w ||(dk, dv)|| = 1 } as delta -> 0,
    J the Jacobian of f in (w, k, v). The sphere is two-dimensional here, so a fine grid gives that minimum."""
    truth = _one_atom_truth()
    cfg = InverseBoundConfig(deltas=[1e-2, 3e-3, 1e-3], n_inputs=500, n_random=3, n_continued=3, max_iter=100)
    curve = inverse_bound_curve(truth, 1, cfg)
    X = inverse_bound_inputs(truth, 1, cfg)
    b, k, v = truth.theta
    w = float(b.exp())

    def f(params):  # (w, k, v) -> f on X
        return mixture_output(X, params[1].reshape(1, 1), params[2].reshape(1, 1), params[0].log().reshape(1),
                              *truth.experts.collapse(X))[:, 0]

    J = torch.autograd.functional.jacobian(f, torch.tensor([w, float(k), float(v)], dtype=DTYPE))  # (n, 3)
    lam, chi = np.meshgrid(np.linspace(0, 1, 2001), np.linspace(0, 2 * np.pi, 721))
    directions = np.stack([lam.ravel(), (1 - lam.ravel()) / w * np.cos(chi.ravel()),
                           (1 - lam.ravel()) / w * np.sin(chi.ravel())], 1)  # |dw| + w ||(dk, dv)|| = 1, dw >= 0
    directions = np.concatenate([directions, directions * [-1, 1, 1]])
    gram = J.numpy().T @ J.numpy() / len(X)  # ||J Delta||^2_{L2(mu_n)} = Delta^T gram Delta
    norms = np.sqrt(np.einsum("ki,ij,kj->k", directions, gram, directions))
    linear_min = norms.min()
    assert linear_min > 1e-3
    ratio = curve["psi_over_delta"].to_numpy() / linear_min
    assert np.all(np.abs(ratio - 1) < 0.02), (curve, linear_min)
    v = psi_verdict(curve, cfg)
    assert v["verdict"] == "holds" and abs(v["slope_near_0"] - 1) < 0.02


def test_psi_verdict_rules_on_known_curves():
    delta = np.logspace(0, -3, 7)
    cfg = InverseBoundConfig()
    curve = lambda psi: pd.DataFrame(dict(delta=delta, psi=psi))
    assert psi_verdict(curve(0.3 * delta), cfg)["verdict"] == "holds"
    assert psi_verdict(curve(0.3 * delta ** 0.5), cfg)["verdict"] == "holds"  # psi / delta -> infinity: still a bound
    assert psi_verdict(curve(0.3 * delta ** 1.5), cfg)["verdict"] == "fails: psi = o(delta)"
    assert psi_verdict(curve(np.full(7, 1e-16)), cfg)["verdict"] == "fails: psi = 0"
    assert psi_verdict(curve(np.where(delta < 0.01, 1e-16, delta)), cfg)["verdict"] == "mixed"
    zero_near_0 = psi_verdict(curve(np.where(delta < 0.05, 1e-16, delta)), cfg)  # read on the 3 smallest deltas
    assert zero_near_0["verdict"] == "fails: psi = 0" and zero_near_0["n_zero"] == 4
    assert psi_verdict(curve(np.where(delta < 0.01, np.nan, delta)), cfg)["verdict"] == "no solution"
    with pytest.raises(ValueError, match="deltas"):
        InverseBoundConfig(deltas=[1.0, 0.1])


def inverse_ratio_summary(results, n_boot):
    """The study summary of the derived error `inverse_ratio` only, as the checks compute it."""
    from reparam.checks import summarize

    return summarize(add_inverse_ratio(results), errors=["inverse_ratio"], n_boot=n_boot)


def test_inverse_ratio_slopes_and_verdicts_on_a_known_law():
    rng = np.random.default_rng(0)
    rows = []
    for structure, regime, growth in [("shared_mlp", "over", 0.0), ("independent", "over", 0.3)]:
        for n in [300, 1000, 3000, 10000, 30000]:
            for seed in range(12):
                l2 = n ** -0.5 * np.exp(0.1 * rng.standard_normal())
                ratio = 5.0 * n ** growth * np.exp(0.1 * rng.standard_normal())
                rows.append(dict(structure=structure, regime=regime, n=n, seed=seed, l2_error=l2,
                                 voronoi_prefix=ratio * l2, rel_gap=-1e-3, valid=True, converged=False,
                                 status="max_iter"))
    # an invalid fit with a huge ratio must not enter
    rows.append(dict(structure="shared_mlp", regime="over", n=30000, seed=0, l2_error=1e-3, voronoi_prefix=1e3,
                     rel_gap=1e-2, valid=False, converged=True, status="converged"))
    table = pd.DataFrame(rows)
    assert np.allclose(add_inverse_ratio(table)["inverse_ratio"], table.voronoi_prefix / table.l2_error)
    s = inverse_ratio_summary(table, n_boot=300).set_index("structure")
    assert abs(s.loc["shared_mlp", "slope"]) < 0.03 and s.loc["shared_mlp", "verdict"] == "agree"
    assert abs(s.loc["independent", "slope"] - 0.3) < 0.03 and s.loc["independent", "verdict"] == "agree"
    assert s.loc["shared_mlp", "n_valid"] == 60 and s.loc["shared_mlp", "n_excluded"] == 1
    # without a `valid` column the gap rule decides
    s2 = inverse_ratio_summary(table.drop(columns="valid"), n_boot=100).set_index("structure")
    assert s2.loc["shared_mlp", "n_valid"] == 60
    # a growing ratio where the theory predicts a flat one disagrees; a flat one where it predicts growth cannot
    # confirm growth (the interval straddles 0)
    flipped = table.assign(structure=table.structure.map({"shared_mlp": "independent", "independent": "shared_linear"}))
    s3 = inverse_ratio_summary(flipped, n_boot=300).set_index("structure")
    assert s3.loc["shared_linear", "verdict"] == "disagree"
    assert s3.loc["independent", "verdict"] == "inconclusive"


def test_each_inverse_bound_case_reads_its_prediction_from_its_structure():
    """The study's predictions come from the structures' declarations (the key map decides which one), and they
    are the predictions the committed inverse-bound summary was checked against."""
    from pathlib import Path

    from reparam.identifiability import INVERSE_BOUND_CASES

    derived = {(s, r, k): canonical_truth(s, latent_dim=k, noise=0.0).structure.predicted_inverse_bound(r)
               for s, r, k in INVERSE_BOUND_CASES}
    assert derived[("shared_linear", "over", 2)] == "holds"  # injective: an extra atom cannot hide
    assert derived[("shared_linear", "over", 3)] == "fails"  # r > d: the null-space family
    assert derived[("shared_mlp", "over", 3)] == "open"
    committed = pd.read_csv(Path(__file__).resolve().parents[1] / "figures/inverse-bound/inverse_bound_summary.csv")
    recorded = {(r.structure, r.regime, int(r.latent_dim)): r.predicted for r in committed.itertuples()}
    assert derived == recorded
