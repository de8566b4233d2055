"""The extension point: a structure declared in ONE class (here, in this test file) runs through the main job
(the Hydra app, in-process), its summary rows carry its declared THEORY rows, and the checks select it by its
declared property, with no edit anywhere else in the package."""
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
from reparam.structures import STRUCTURES, SharedLinear, register, unregister
from reparam.truth import canonical_truth
from reparam.sims.config import plan_from_cfg  # also stores the Hydra app's options (ConfigStore)

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
