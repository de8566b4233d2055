"""The truth's shape (TruthConfig d, m, n_atoms, n_experts, latent_dim) from the command line, the head-like
canonical truths (d = 8, 16), and that the defaults keep every existing truth and fingerprint."""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize
from omegaconf import OmegaConf

import reparam.sims.convergence  # noqa: F401 - stores the app's options (hydra/job_logging=reparam)
import reparam.sims.robustness as robustness
from reparam.study import STUDY_INIT, Setting, TruthConfig, build_truth, run_cell, validate_setting
from reparam.study_config import folder_setting, plan_from_cfg
from reparam.sweep import StudyPlan, check_resources, estimate_resources, setting_id
from reparam.truth import SHAPE_FIELDS, canonical_truth, random_truth
from reparam.validation import ConfigError, fingerprint

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["structure=shared", "regime=exact", "n=300", "replicates=1", "n_eval=1000", "threads=1", "workers=1",
         "progress=false", "figures=false"]
X3 = torch.tensor([[0.3, -0.7], [-0.9, 0.2], [0.55, 0.81]], dtype=torch.float64)


def composed(overrides, app="convergence"):
    with initialize(config_path="../sims/conf", version_base="1.3"):
        return compose(app, overrides=overrides)


def truths_of(cfg):
    plan, _ = plan_from_cfg(cfg)
    return plan, [build_truth(s) for s in plan.settings()]


def shape_of(truth):
    """(d, m, L*, N, r); r is None for `independent` (no latent p)."""
    return truth.d, truth.m, truth.n_atoms, truth.experts.n_experts, getattr(truth.structure, "r", None)


# ------------------------------------------------------------------------------- shape from the command line

def test_shape_fields_reach_the_canonical_truth_from_a_composed_config():
    cfg = composed(["truth.d=8", "truth.m=3", "truth.n_atoms=3", "truth.n_experts=4", "truth.latent_dim=9", *SMALL])
    _, truths = truths_of(cfg)
    assert [shape_of(t) for t in truths] == [(8, 3, 3, 4, 9)] * 2
    assert {t.name for t in truths} == {"canonical-d8-m3-L3-N4-r9"}
    _, truths = truths_of(composed(["truth.d=16", *SMALL]))  # m, L*, N, r: the family's defaults
    assert [shape_of(t) for t in truths] == [(16, 4, 2, 2, 16)] * 2 and truths[0].name == "canonical-d16-m4"


def test_shape_fields_reach_the_random_truth_from_a_composed_config():
    cfg = composed(["truth=random", "truth.seed=3", "truth.d=3", "truth.m=2", "truth.n_atoms=3", "truth.n_experts=4",
                    "truth.latent_dim=5", *SMALL])
    plan, truths = truths_of(cfg)
    for setting, truth in zip(plan.settings(), truths):
        assert shape_of(truth) == (3, 2, 3, 4, 5) and truth.name == "random-3-d3-m2-L3-N4-r5"
        direct = random_truth(setting.structure, 3, d=3, m=2, r=5, n_atoms=3, n_experts=4)
        X = torch.rand(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2 - 1
        assert torch.equal(truth.theta, direct.theta) and torch.equal(truth.regression(X), direct.regression(X))


def test_the_robustness_app_passes_the_shape_through(tmp_path):
    cfg = composed(["truth.seed=2", "truth.d=3", "truth.m=2", "structure=shared_linear", "regime=exact",
                    "n_grid=[300,1000]", "replicates=1", "init=near_truth", "n_eval=1000", "threads=1", "workers=1",
                    "progress=false", "figures=false"], app="robustness")
    plan, _ = plan_from_cfg(robustness.study_cfg(cfg))
    assert robustness.truth_name(plan) == "random-2-d3-m2"
    assert robustness.run(cfg, tmp_path, summary=False) == 0
    rows = pd.read_csv(tmp_path / "results.csv")
    assert set(rows.truth) == {"random-2-d3-m2"} and len(rows) == 2 and rows.valid.all()


# ------------------------------------------------------------------------------- defaults change nothing

# f*(X3) of the d = 2 canonical truth and of random truth 5, computed by the code before the shape fields existed
OLD_CANONICAL = {"shared_mlp": [0.2980145164855046, -0.5765981120654423, 0.21194728706142657],
                 "shared_linear": [0.5408866776201084, -1.1023771595647402, 0.4082221595456908]}
OLD_RANDOM_5 = [0.36162596602319896, 0.44342116721951996, 0.8693175248584641]


@pytest.mark.parametrize("structure", ["shared_mlp", "shared_linear", "independent", "shared_learned"])
def test_default_shapes_reproduce_the_old_truths(structure):
    truth = build_truth(Setting(structure=structure))
    assert truth.name == "canonical" and shape_of(truth) == (2, 1, 2, 2, None if structure == "independent" else 2)
    old = OLD_CANONICAL["shared_linear" if structure == "shared_linear" else "shared_mlp"]
    torch.testing.assert_close(truth.regression(X3).flatten(), torch.tensor(old, dtype=torch.float64), rtol=0,
                               atol=1e-15)
    if structure in ("shared_mlp", "shared_linear"):  # native p*, b* as written in CANONICAL
        assert truth.theta.tolist() == [0.5, 0.3, 0.8, -0.6, -0.7, 0.9]
    r3 = canonical_truth(structure, latent_dim=3)
    assert r3.name == "canonical-r3" and torch.equal(r3.regression(X3), truth.regression(X3))
    random = build_truth(Setting(structure=structure, truth=TruthConfig(kind="random", seed=5)))
    direct = random_truth(structure, 5)
    assert random.name == direct.name == "random-5"
    assert torch.equal(random.theta, direct.theta) and torch.equal(random.regression(X3), direct.regression(X3))
    if structure != "shared_linear":
        torch.testing.assert_close(random.regression(X3).flatten(), torch.tensor(OLD_RANDOM_5, dtype=torch.float64),
                                   rtol=0, atol=1e-15)


def old_setting_id(setting):
    """sweep.setting_id as it was before the shape fields: the Setting without structure, regime and them."""
    d = asdict(setting)
    d.pop("structure"), d.pop("regime")
    for name in SHAPE_FIELDS:
        d["truth"].pop(name)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def without_shape(cfg):
    old = OmegaConf.to_container(cfg)
    for name in SHAPE_FIELDS:
        old["truth"].pop(name)
    return OmegaConf.create(old)


@pytest.mark.parametrize("app, overrides", [("convergence", []), ("convergence", ["truth=random", "truth.seed=4"]),
                                            ("convergence", ["truth.noise=0.05"]), ("robustness", ["truth.seed=0"]),
                                            ("robustness", ["truth.seed=7"])])
def test_default_shapes_keep_setting_ids_and_run_folder_settings(app, overrides):
    cfg = composed(overrides, app)
    plan, _ = plan_from_cfg(robustness.study_cfg(cfg) if app == "robustness" else cfg)
    for setting in plan.settings():
        assert setting_id(setting) == old_setting_id(setting)
    settings = robustness.folder_setting if app == "robustness" else folder_setting
    old = settings(without_shape(cfg))  # a run folder's config of before the shape fields
    assert settings(cfg) == old and fingerprint(settings(cfg)) == fingerprint(old)
    assert not set(SHAPE_FIELDS) & set(settings(cfg)["truth"])


def test_recorded_results_keep_their_setting_ids():
    """figures/results.csv (the default canonical run) and figures/robustness_results.csv (random-0, random-7)."""
    main = pd.read_csv(ROOT / "figures" / "results.csv", usecols=["truth", "setting_id"], dtype=str)
    plan, _ = plan_from_cfg(composed([]))
    assert set(main.setting_id) == {setting_id(s) for s in plan.settings()}
    rob = pd.read_csv(ROOT / "figures" / "robustness_results.csv", usecols=["truth", "setting_id"], dtype=str)
    for seed in (0, 7):
        plan, _ = plan_from_cfg(robustness.study_cfg(composed([f"truth.seed={seed}"], "robustness")))
        assert set(rob[rob.truth == f"random-{seed}"].setting_id) == {setting_id(s) for s in plan.settings()}


def test_a_shape_at_its_default_is_the_same_setting_and_another_is_not():
    base = composed(SMALL)
    same = composed(["truth.d=2", "truth.m=1", "truth.latent_dim=2", *SMALL])
    assert fingerprint(folder_setting(same)) == fingerprint(folder_setting(base))
    ids = {name: {setting_id(s) for s in plan_from_cfg(c)[0].settings()}
           for name, c in [("base", base), ("same", same), ("d8", composed(["truth.d=8", *SMALL])),
                           ("d8m4", composed(["truth.d=8", "truth.m=4", *SMALL])),
                           ("r3", composed(["truth.latent_dim=3", *SMALL]))]}
    assert ids["same"] == ids["base"] and ids["d8m4"] == ids["d8"]
    assert not ids["d8"] & ids["base"] and not ids["r3"] & ids["base"]


# ------------------------------------------------------------------------------- the head-like canonical truths

def gate_weights(truth, X):
    """Softmax weights of the N pretrained and L* prompt gates: (n, N + L*)."""
    keys, _, biases = truth.prefix()
    scores = torch.cat([truth.experts.scores(X), X @ keys.T + biases], -1)
    return torch.softmax(scores, -1)


def test_head_canonical_values_follow_the_documented_formulas():
    truth = canonical_truth("shared_linear", d=8)
    s, e = truth.structure, truth.experts
    cas = lambda x: np.cos(x) + np.sin(x)  # noqa: E731
    assert s.W_K[1, 1].item() == pytest.approx(cas(2 * np.pi / 8) / np.sqrt(8)) == pytest.approx(0.5)
    assert s.W_K[3, 2].item() == pytest.approx(cas(2 * np.pi * 6 / 8) / np.sqrt(8))
    assert s.W_V[2, 5].item() == pytest.approx(np.sqrt(2 / 8) * np.cos(np.pi * 5 * 11 / 32))
    b, p, _ = s.split(truth.theta, 2)
    assert b.tolist() == pytest.approx([0.5, 0.3])
    assert p[1, 3].item() == pytest.approx(0.6 * cas(np.pi * 16 / 8))
    assert e.A[1, 2, 5].item() == pytest.approx(2 / 8 * np.cos(np.pi * 2 * 8 / 9)) == e.A[1, 5, 2].item()
    assert e.a.tolist() == [0.0, -0.25]
    assert e.H[1, 3, 2].item() == pytest.approx(cas(2 * np.pi * 3 * 6 / 8) / np.sqrt(8))


@pytest.mark.parametrize("d, sep_tanh, sep_linear", [(8, 2.30, 2.93), (16, 3.12, 3.82)])
def test_head_canonical_truths_are_injective_separated_and_not_degenerate(d, sep_tanh, sep_linear):
    for structure, sep in (("shared_mlp", sep_tanh), ("shared_linear", sep_linear)):
        truth = canonical_truth(structure, d=d)
        assert truth.name == f"canonical-d{d}-m4" and shape_of(truth) == (d, 4, 2, 2, d)  # r = d: W_K is d x d
        sv = torch.linalg.svdvals(truth.structure.W_K)
        assert len(sv) == d and torch.allclose(sv, torch.ones(d, dtype=sv.dtype), atol=1e-12)  # full column rank
        keys, values, _ = truth.prefix()
        kv = torch.cat([keys, values], -1)
        assert torch.dist(kv[0], kv[1]).item() == pytest.approx(sep, abs=0.01)  # the module docstring's number
        w = gate_weights(truth, truth.eval_inputs(20_000))
        largest, spread, mean = w.max(-1).values.mean().item(), w.std(0), w.mean(0)
        entropy = (-(w * w.log()).sum(-1) / np.log(w.shape[-1])).mean().item()
        assert 0.4 < largest < 0.65  # 0.25 = uniform over 4 gates, 1 = saturated
        assert 0.65 < entropy < 0.9
        assert spread.min() > 0.1 and mean.min() > 0.1  # every gate varies with X and carries weight
        assert (w.max(-1).values > 0.9).double().mean() < 0.1
    one = canonical_truth("shared_mlp", d=d)
    for structure in ("independent", "shared_learned"):  # the same f* as shared_mlp
        other = canonical_truth(structure, d=d)
        X = one.eval_inputs(500)
        torch.testing.assert_close(other.regression(X), one.regression(X), rtol=0, atol=1e-13)


@pytest.mark.parametrize("d", [8, 16])
def test_head_canonical_shapes_stay_separated_and_r_above_d_is_not_injective(d):
    for m, L, N in [(1, 4, 1), (d, 4, 4), (3, 3, 2)]:
        for structure in ("shared_mlp", "shared_linear"):
            truth = canonical_truth(structure, d=d, m=m, n_atoms=L, n_experts=N)
            keys, values, _ = truth.prefix()
            assert torch.pdist(torch.cat([keys, values], -1)).min() > 1.5
            w = gate_weights(truth, truth.eval_inputs(5000))
            assert w.std(0).min() > 0.04 and w.mean(0).min() > 0.04
    base, wide = canonical_truth("shared_linear", d=d), canonical_truth("shared_linear", d=d, latent_dim=d + 1)
    assert wide.name == f"canonical-d{d}-m4-r{d + 1}" and wide.structure.r == d + 1
    assert torch.linalg.matrix_rank(wide.structure.W_K).item() == d  # r = d + 1 > rank W_K: a null direction
    X = base.eval_inputs(200)
    torch.testing.assert_close(wide.regression(X), base.regression(X), rtol=0, atol=1e-13)


def test_a_tiny_fit_on_the_head_canonical_truth():
    rows = run_cell(Setting(structure="shared_mlp", truth=TruthConfig(d=8), n_eval=1000), 300, [0])
    assert rows[0]["truth"] == "canonical-d8-m4" and rows[0]["n_true_atoms"] == 2 and rows[0]["valid"]


# ------------------------------------------------------------------------------- validation and resources

@pytest.mark.parametrize("truth, field", [
    (TruthConfig(d=0), "truth.d=0"), (TruthConfig(kind="random", m=0), "truth.m=0"),
    (TruthConfig(kind="random", n_atoms=-1), "truth.n_atoms=-1"), (TruthConfig(n_experts=0), "truth.n_experts=0"),
    (TruthConfig(kind="random", latent_dim=0), "truth.latent_dim=0"), (TruthConfig(d=2.5), "truth.d=2.5"),
    (TruthConfig(d=5), "truth.d=5"), (TruthConfig(m=2), "truth.m=2"), (TruthConfig(n_atoms=3), "truth.n_atoms=3"),
    (TruthConfig(latent_dim=4), "truth.latent_dim=4"), (TruthConfig(d=8, m=9), "truth.m=9"),
    (TruthConfig(d=16, n_atoms=5), "truth.n_atoms=5"), (TruthConfig(d=8, n_experts=5), "truth.n_experts=5"),
    (TruthConfig(d=8, latent_dim=7), "truth.latent_dim=7")])
def test_bad_shapes_name_the_field(truth, field):
    with pytest.raises(ConfigError, match=f"^{field.replace('.', '[.]')} is invalid"):
        validate_setting(Setting(truth=truth))


def test_unsupported_canonical_shapes_say_what_is_supported():
    with pytest.raises(ConfigError, match=r"truth\.d=5 is invalid: the canonical truths have d = 2 .* \[8, 16\]"):
        plan_from_cfg(composed(["truth.d=5", *SMALL]))
    with pytest.raises(ConfigError, match=r"truth\.m=9 is invalid: must be an integer from 1 to 8 for the canonical "
                                          r"d = 8 truth"):
        plan_from_cfg(composed(["truth.d=8", "truth.m=9", *SMALL]))
    with pytest.raises(ConfigError, match=r"truth\.latent_dim=4 is invalid: must be 2 or 3 for the canonical d = 2"):
        plan_from_cfg(composed(["truth.latent_dim=4", *SMALL]))
    with pytest.raises(ConfigError, match=r"^m=2 is invalid"):  # the programmatic call names its argument
        canonical_truth("shared_mlp", m=2)


def estimate(**truth):
    plan = StudyPlan(structures=["shared_mlp", "shared_learned"], regimes=["exact"], n_grid=[1000, 10000],
                     replicates=2, setting=Setting(truth=TruthConfig(**truth)))
    return estimate_resources(plan)


def test_the_resource_estimate_grows_with_the_shape():
    base = estimate(kind="random")
    for bigger in (dict(d=8), dict(m=4), dict(n_atoms=4), dict(d=8, latent_dim=8)):
        est = estimate(kind="random", **bigger)
        assert est["seconds"] > base["seconds"] and est["memory_bytes"] >= base["memory_bytes"], bigger
    small, large = estimate(kind="random", d=8), estimate(kind="random", d=32)
    assert large["seconds"] / small["seconds"] > (3 * 35 / (3 * 11)) ** 1.5  # width 33 -> 105: faster than linear


def test_a_study_too_large_by_its_dimension_names_the_truth_field():
    plan = StudyPlan(structures=["shared_linear"], regimes=["exact"], n_grid=[100_000], replicates=10,
                     setting=Setting(truth=TruthConfig(kind="random", d=256), init=copy.deepcopy(STUDY_INIT)))
    with pytest.raises(ConfigError, match=r"^truth\.d=256 is too large"):
        check_resources(plan)
    assert check_resources(plan, allow_large=True)["seconds"] > 24 * 3600
