"""The extension point: a structure declared in ONE class (here, in this test file) runs through the main job
(the Hydra app, in-process), its summary rows carry its declared THEORY rows, and the checks select it by its
declared property, with no edit anywhere else in the package. Two such classes: one built on SharedLinear (it
inherits the tie matrices and truth recipe), and one on the registry's base class alone, which declares
everything itself, its inverse bound and witness included."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize
from hydra.core.config_store import ConfigStore

from reparam.checks import CHECKS, check_lines, prediction_for
from reparam.identifiability import witness_family
from reparam.rates import Prediction
from reparam.structures import STRUCTURES, SharedLinear, Structure, register, unregister
from reparam.truth import canonical_truth
from reparam.study_config import plan_from_cfg  # also stores the Hydra app's options (ConfigStore)
import reparam.sims.convergence  # noqa: F401 - the app of sims/conf/convergence.yaml stores what it composes

NAME = "scaled_linear_test"


@dataclass
class ScaledLinear(SharedLinear):
    """k_i = W_K p_i / 2, v_i = W_V p_i / 2: a tied linear map (Theorem 2's kind), with its own truth recipe
    inherited from the tied structures (the same p*, W_K, W_V through its own maps)."""

    name: ClassVar[str] = NAME
    theorem: ClassVar[str | None] = "Theorem 2"
    theory_rows: ClassVar[str | None] = "shared"
    hydra_options: ClassVar[tuple[str, ...]] = ("shared",)
    scale: ClassVar[float] = 0.5

    def prefix_from_atoms(self, atoms, globals_):
        return self.scale * (atoms @ self.W_K.T), self.scale * (atoms @ self.W_V.T)


@pytest.fixture
def scaled_linear():
    register(ScaledLinear)
    yield ScaledLinear
    unregister(NAME)


TINY = [f"structure={NAME}", "regime=exact", "n_grid=[300,3000]", "replicates=3", "init=near_truth", "n_eval=2000",
        "progress=false", "figures=false", "threads=1", "workers=1"]


def test_new_structure_has_a_truth_and_hydra_options(scaled_linear):
    truth = canonical_truth(NAME)
    keys, values, _ = truth.prefix()
    p = torch.tensor([[0.8, -0.6], [-0.7, 0.9]], dtype=keys.dtype)  # reparam.truth.CANONICAL["p"]
    torch.testing.assert_close(keys, 0.5 * p @ truth.structure.W_K.T)
    torch.testing.assert_close(values, 0.5 * p @ truth.structure.W_V.T)
    with initialize(config_path="../sims/conf", version_base="1.3"):
        cfg = compose("convergence", overrides=[f"structure={NAME}", *TINY[1:]])
        plan, _ = plan_from_cfg(cfg)
        assert plan.structures == [NAME]
        assert list(compose("convergence", overrides=["structure=shared"]).structure.names) == [
            "shared_linear", "shared_mlp", NAME]
        assert list(compose("convergence", overrides=["structure=all"]).structure.names) == [
            "shared_linear", "shared_mlp", "independent"]  # it did not declare "all"


def test_unregistering_removes_every_trace():
    register(ScaledLinear)
    unregister(NAME)
    assert NAME not in STRUCTURES and f"{NAME}.yaml" not in ConfigStore.instance().repo["structure"]
    assert NAME not in CHECKS["shared-exact"].structures
    assert prediction_for(NAME, "exact", "voronoi_prefix") == (None, "")


def test_new_structure_runs_through_the_main_job_and_the_checks(scaled_linear, tmp_path, monkeypatch):
    from reparam.sims import check, convergence

    run_dir = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["sims.convergence", *TINY, f"hydra.run.dir={run_dir}"])
    convergence.main()
    results = pd.read_csv(run_dir / "results.csv")
    assert set(results.structure) == {NAME} and len(results) == 2 * 3
    # The fits estimate the new structure's own truth: regression error falls with n (expected ratio sqrt(10) ~ 3.2
    # from n = 300 to 3000; asserting > 1.5 leaves room for 3 replicates' noise).
    l2 = results.groupby("n")["l2_error"].mean()
    assert np.isfinite(l2).all() and l2[300] / l2[3000] > 1.5
    summary = pd.read_csv(run_dir / "summary.csv").set_index("error")
    assert summary.loc["voronoi_prefix", "theory_row"] == "D, exact-specified: shared"
    assert summary.loc["voronoi_prefix", "predicted"] == -0.5
    assert summary.loc["l2_error", "theory_row"] == "regression: all structures"

    assert NAME in CHECKS["shared-exact"].structures and NAME in CHECKS["regression"].structures
    assert NAME not in CHECKS["independent-over"].structures
    lines, _ = check_lines(CHECKS["shared-exact"], summary.reset_index())
    mine = [line for line in lines if line["structure"] == NAME]
    assert len(mine) == 1 and mine[0]["predicted"] == -0.5 and "slope" in mine[0]

    out = tmp_path / "checks"
    assert check.run(check.CheckConf(names=["shared-exact"], results=str(run_dir / "results.csv"), out=str(out))) == 0
    report = (out / "shared-exact" / "report.md").read_text()
    assert f"| {NAME} | exact | `voronoi_prefix` | -0.50 +- 0.10 |" in report


# ---- a structure on the base class alone ------------------------------------------------------------------------
FREE = "half_free_test"


@dataclass
class HalfFree(Structure):
    """k_i = a_i[:d] / 2, v_i = a_i[d:] / 2: free keys and values (Theorem 1's kind) on a halved native scale.
    Nothing is inherited but the parameter layout: its truth recipe, THEORY rows, inverse bound and witness are
    declared here."""

    name: ClassVar[str] = FREE
    theorem: ClassVar[str | None] = "Theorem 1"
    theory_rows: ClassVar[str | None] = "independent"
    hydra_options: ClassVar[tuple[str, ...]] = ()
    inverse_bound: ClassVar[dict[str, str]] = {"exact": "holds", "over": "fails"}

    @property
    def atom_dim(self) -> int:
        return self.d + self.m

    def prefix_from_atoms(self, atoms, globals_):
        return 0.5 * atoms[..., : self.d], 0.5 * atoms[..., self.d:]

    def truth_theta(self, biases, latents, W_K, W_V):
        """The tanh-tied prefix (the f* of shared_mlp), written as doubled free atoms."""
        return self.join(biases, 2.0 * torch.cat([torch.tanh(latents @ W_K.T), torch.tanh(latents @ W_V.T)], -1))

    def witness_direction(self):
        """Along the value coordinates: the key does not move, the value does (affine, so beta = alpha)."""
        z = torch.zeros(self.atom_dim, dtype=torch.float64)
        z[self.d:] = 1.0 / np.sqrt(self.m)
        return z


@pytest.fixture
def half_free():
    register(HalfFree)
    yield HalfFree
    unregister(FREE)


def test_a_structure_on_the_base_class_gets_its_inverse_ratio_prediction_from_its_declaration(half_free):
    assert not issubclass(HalfFree, tuple(cls for name, cls in STRUCTURES.items() if name != FREE))
    assert prediction_for(FREE, "exact", "inverse_ratio") == (Prediction(0.0, tolerance=0.1),
                                                              "D / ||f_hat - f*||: inverse bound holds")
    assert prediction_for(FREE, "over", "inverse_ratio") == (Prediction(0.0, kind="flatter_than"),
                                                             "D / ||f_hat - f*||: inverse bound fails")
    assert FREE in CHECKS["inverse-ratio"].structures
    HalfFree.inverse_bound = {"exact": "holds"}  # the declaration is read at each use: change it, the prediction follows
    try:
        assert prediction_for(FREE, "over", "inverse_ratio") == (None, "")
    finally:
        HalfFree.inverse_bound = {"exact": "holds", "over": "fails"}
    # its own witness: an extra atom that leaves f exactly as it is while D grows
    w = witness_family(canonical_truth(FREE), [0.5, 2.0], n_inputs=20_000)
    assert (w.table["max_abs_error"] <= 1e-12).all() and (w.table["beta"] == 0.5).all()
    assert w.table["voronoi_prefix"].is_monotonic_increasing and w.table["voronoi_prefix"].iloc[0] > 0


def test_a_structure_on_the_base_class_runs_through_the_main_job_and_the_inverse_ratio_check(half_free, tmp_path,
                                                                                              monkeypatch):
    from reparam.sims import check, convergence

    run_dir = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["sims.convergence", f"structure={FREE}", *TINY[1:], f"hydra.run.dir={run_dir}"])
    convergence.main()
    results = pd.read_csv(run_dir / "results.csv")
    assert set(results.structure) == {FREE} and len(results) == 2 * 3
    assert set(results.theorem) == {"Theorem 1"}
    l2 = results.groupby("n")["l2_error"].mean()  # its own truth is estimated: the error falls with n
    assert np.isfinite(l2).all() and l2[300] / l2[3000] > 1.5

    out = tmp_path / "checks"
    assert check.run(check.CheckConf(names=["inverse-ratio"], results=str(run_dir / "results.csv"), out=str(out))) == 0
    report = (out / "inverse-ratio" / "report.md").read_text()
    assert f"| {FREE} | exact | `inverse_ratio` | +0.00 +- 0.10 |" in report
    summary = pd.read_csv(out / "inverse-ratio" / "summary.csv")
    mine = summary[(summary.structure == FREE) & (summary.error == "inverse_ratio")]
    assert len(mine) == 1 and mine.iloc[0]["theory_row"] == "D / ||f_hat - f*||: inverse bound holds"
