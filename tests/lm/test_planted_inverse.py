"""The inverse bound inside attention (reparam.lm.planted.inverse) and the draws-axis estimator.

Known answers: with a constant query component in every head, the split of a true position reproduces the teacher's
logits to round-off while the prefix stays away from the truth (the attention witness), and psi there is round-off;
without one (the random-init base) the same split changes the logits by O(1) and the exact-specified psi(delta)/delta
stays away from 0. The count-based NLL equals the per-draw mean.
"""
import pytest
import torch

from reparam.lm import planted as pl
from reparam.lm.planted import inverse as inv
from reparam.lm.prefix import fixed_prefix

SMALL = pl.BaseConfig(n_layer=2, n_head=4, d_model=32, vocab=48, seed=0)
C0 = 4.0


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    base = pl.make_base(SMALL)
    inputs = torch.randint(0, SMALL.vocab, (16, 6), generator=torch.Generator().manual_seed(0))
    pc = pl.PlantedConfig(prefix_len=3, seq_len=6, n_test=8)
    rms = pl.natural_kv_rms(base, inputs[:8])
    cq, dirs = inv.constant_query_base(base, C0)
    return base, cq, dirs, inputs, pc, rms


def test_constant_query_component_is_detected(setup):
    base, cq, dirs, inputs, _, _ = setup
    ratio_random, _ = inv.query_constancy(base, inputs)
    ratio_cq, found = inv.query_constancy(cq, inputs)
    assert ratio_random.min() > 0.05  # a random-init GPT-2 has no constant query component (measured ~0.2)
    assert ratio_cq.max() < 1e-6  # the constructed one has it in every head...
    assert (found.double() * dirs).sum(-1).abs().min() > 1 - 1e-6  # ...along the planted direction


def test_attention_witness_reproduces_the_teacher_away_from_the_truth(setup):
    base, cq, dirs, inputs, pc, rms = setup
    truth = pl.plant_truth(cq, "shared", pc, 0, rms)
    kv = inv.attention_witness(truth.kv, dirs, C0, position=2, alpha=0.3, scale=1.0)
    assert kv.shape[3] == pc.prefix_len + 1
    with torch.no_grad():
        teacher = pl.logits(fixed_prefix(cq, truth.kv), inputs)
        same = (pl.logits(fixed_prefix(cq, kv), inputs) - teacher).abs().max()
        other = (pl.logits(fixed_prefix(base, kv), inputs) - pl.logits(fixed_prefix(base, truth.kv), inputs)).abs().max()
    errs = pl.prefix_errors(kv, truth.kv)
    assert same < 1e-6  # f unchanged (float64; measured ~1e-8)
    assert other > 0.1  # the same split without a constant query component changes the logits
    assert errs["rel_dist"] > 0.2 and errs["voronoi"] > 1.0  # while the prefix is far from the truth


def test_psi_is_round_off_on_the_witness_and_bounded_without_it(setup):
    base, cq, dirs, _, pc, rms = setup
    cfg = inv.PsiConfig(deltas=[1.0, 0.1], sequences=8, random_starts=1, max_iter=15)
    truth = pl.plant_truth(cq, "shared", pc, 0, rms)
    rows = inv.psi_curve(cq, truth, "independent", "over", pc, rms, cfg,
                         witness=lambda d: inv.witness_at_delta(truth.kv, dirs, C0, d))
    at = {r["delta"]: r for r in rows}
    assert at[1.0]["psi"] < 1e-6 and at[1.0]["start"] == "witness"  # an f-equivalent prefix at distance 1
    assert at[1.0]["rel_dist"] == pytest.approx(1.0, rel=1e-6)
    truth0 = pl.plant_truth(base, "shared", pc, 0, rms)
    exact = inv.psi_curve(base, truth0, "independent", "exact", pc, rms, cfg)
    for r in exact:  # every reported psi is attained at the stated distance, and stays away from 0
        assert r["rel_dist"] == pytest.approx(r["delta"], rel=1e-6)
        assert r["psi"] / r["delta"] > 0.01
    assert exact[0]["psi0"] < 1e-6  # the base point of the exact student IS the truth


def test_count_nll_is_the_mean_over_draws(setup):
    base, _, _, inputs, pc, rms = setup
    truth = pl.plant_truth(base, "shared", pc, 0, rms)
    teacher = fixed_prefix(base, truth.kv)
    targets = torch.randint(0, SMALL.vocab, (4, 5, 6), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logp = pl.logits(teacher, inputs[:4])
        direct = -torch.gather(logp.unsqueeze(1).expand(-1, 5, -1, -1), -1, targets.unsqueeze(-1)).mean()
        assert float(pl.nll(teacher, inputs[:4], targets)) == pytest.approx(float(direct), rel=1e-12)


def test_draws_axis_fit_uses_the_first_draws_and_a_warm_start(setup):
    base, _, _, _, _, _ = setup
    pc = pl.PlantedConfig(prefix_len=2, seq_len=4, draws=8, n_test=8, structures=["shared_fixed"])
    study = pl.PlantedStudy(base, pc, pl.LBFGSConfig(starts=1, max_iter=30, grad_tol=1e-7), replicate=0, n_max=6)
    rows, state = study.fit("shared_fixed", "exact", 6, draws=2)
    assert rows[0]["draws"] == 2 and rows[0]["tokens"] == 6 * 2 * 4 and rows[0]["start_kind"] == "random"
    rows2, _ = study.fit("shared_fixed", "exact", 6, draws=8, warm=state)
    assert [r["start_kind"] for r in rows2] == ["random", "warm"] and sum(r["selected"] for r in rows2) == 1
    best = min(r["train_nll"] for r in rows2)
    assert next(r for r in rows2 if r["selected"])["train_nll"] == best
    with pytest.raises(ValueError, match="draws"):
        study.fit("shared_fixed", "exact", 6, draws=9)


def test_inverse_mode_writes_the_witness_and_psi_tables(tmp_path):
    """`reparam planted-prefix mode=inverse` end to end on the smoke setting: the witness reproduces the teacher on the
    constant-query base only, and the psi verdict of independent over-specified there is 'fails'; a rerun computes
    nothing (the cases are cached)."""
    import pandas as pd
    from hydra import compose, initialize_config_dir
    from pathlib import Path

    from reparam.experiments import planted_prefix as app

    conf = Path(__file__).resolve().parents[2] / "experiments" / "conf"
    overrides = ["study=smoke", f"run_dir={tmp_path}/runs", f"out_dir={tmp_path}/fig", "mode=inverse",
                 "inverse.deltas=[3.0,0.1]", "inverse.max_iter=3", "inverse.sequences=4", "inverse.random_starts=0",
                 "inverse.structures=[independent]", "inverse.regimes=[over]", "base.d_model=32", "base.vocab=48",
                 "progress=false"]
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name="planted_prefix", overrides=overrides)
    assert app.run(cfg) == 0
    witness = pd.read_csv(tmp_path / "fig" / "planted_witness.csv").set_index("base")
    assert witness.loc["constant_query", "witness_max_logit_diff"] < 1e-6
    assert witness.loc["random_init", "witness_max_logit_diff"] > 0.1
    verdicts = pd.read_csv(tmp_path / "fig" / "planted_psi_verdicts.csv")
    v = verdicts.set_index(["base", "structure", "regime"])["verdict"]
    assert v[("constant_query", "independent", "over")] == "fails"
    assert (tmp_path / "fig" / "planted_psi.png").is_file()
    cached = sorted((tmp_path / "runs").rglob("*.json"))
    assert len(cached) == 2
    stamps = [p.stat().st_mtime_ns for p in cached]
    assert app.run(cfg) == 0
    assert [p.stat().st_mtime_ns for p in cached] == stamps
