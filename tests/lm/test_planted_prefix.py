"""The planted-prefix study (reparam.lm.planted, experiments.planted_prefix): metric, truth, estimator, app.

Known truths: a prefix permuted per head IS the truth for attention (error 0); a shared_fixed student with the
true latents IS the teacher; the planted truth has exactly the requested key/value scale.
"""
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from reparam.lm import planted as pl
from reparam.lm.prefix import fixed_prefix, prefix_atoms
from reparam.losses import voronoi_loss
from reparam.validation import ConfigError

SMALL = pl.BaseConfig(n_layer=2, n_head=4, d_model=32, vocab=48, seed=0)


@pytest.fixture(scope="module")
def base():
    torch.set_num_threads(1)
    return pl.make_base(SMALL)


def _per_layer_errors(kv_hat, kv_true):
    """The metric before the fix (positions matched per LAYER), to show the test can tell them apart."""
    a_hat, a_true = prefix_atoms(kv_hat.double()), prefix_atoms(kv_true.double())
    ones = torch.ones(a_hat.shape[:2], dtype=torch.float64)
    return float(torch.as_tensor(voronoi_loss(a_hat, ones, a_true, ones)).mean())


def test_per_head_permutation_leaves_error_and_logits_unchanged(base):
    pc = pl.PlantedConfig(prefix_len=4, seq_len=6)
    rms = pl.natural_kv_rms(base, torch.randint(0, SMALL.vocab, (8, 6), generator=torch.Generator().manual_seed(0)))
    truth = pl.plant_truth(base, "shared", pc, replicate=0, kv_rms=rms)
    kv = truth.kv.clone()  # (layers, 2, heads, L, head_dim)
    g = torch.Generator().manual_seed(1)
    for layer in range(kv.shape[0]):
        for head in range(kv.shape[2]):
            kv[layer, :, head] = kv[layer, :, head, torch.randperm(4, generator=g)]
    inputs = torch.randint(0, SMALL.vocab, (3, 6), generator=g)
    with torch.no_grad():
        same = (pl.logits(fixed_prefix(base, kv), inputs) - pl.logits(fixed_prefix(base, truth.kv), inputs)).abs().max()
    assert same < 1e-12  # attention is invariant to per-head permutations (float64 round-off)
    errs = pl.prefix_errors(kv, truth.kv)
    assert errs["voronoi"] < 1e-12 and errs["rel_dist"] < 1e-12
    assert _per_layer_errors(kv, truth.kv) > 1.0  # the old per-layer matching calls this a large error


def test_prefix_errors_known_values():
    g = torch.Generator().manual_seed(0)
    kv_true = torch.randn(2, 2, 3, 2, 4, generator=g, dtype=torch.float64)  # (layers, k|v, heads, L=2, hd)
    kv_hat = kv_true.clone()
    kv_hat[1, 0, 2, 1, 0] += 0.01  # one coordinate of one atom of one head, well inside its Voronoi cell
    errs = pl.prefix_errors(kv_hat, kv_true)
    assert errs["voronoi"] == pytest.approx(0.01 / 6, rel=1e-9)  # one cell of one of 6 heads: distance 0.01
    assert errs["rel_dist"] == pytest.approx(0.01 / float(kv_true.pow(2).sum().sqrt()), rel=1e-9)
    over = torch.cat([kv_true, kv_true[:, :, :, :1]], dim=3)  # over-specified: a duplicated position
    assert pl.prefix_errors(over, kv_true)["voronoi"] == pytest.approx(1.0)  # mass error 1 in every head


def test_truth_scale_and_shared_fixed_contains_truth(base):
    pc = pl.PlantedConfig(prefix_len=3, scale=0.7, seq_len=6)
    rms = pl.natural_kv_rms(base, torch.randint(0, SMALL.vocab, (8, 6), generator=torch.Generator().manual_seed(0)))
    for family in ("shared", "independent"):
        truth = pl.plant_truth(base, family, pc, replicate=2, kv_rms=rms)
        got = truth.kv.pow(2).mean(dim=(2, 3, 4)).sqrt()  # (layers, k|v)
        assert torch.allclose(got, 0.7 * rms, rtol=1e-10)
    truth = pl.plant_truth(base, "shared", pc, replicate=2, kv_rms=rms)
    student = pl.make_student(base, "shared_fixed", 3, pc, truth, seed=9, kv_rms=rms)
    assert not torch.allclose(student.prefix(), truth.kv)  # a random start, not the truth
    with torch.no_grad():
        student.prefix.embedding.weight.copy_(truth.encoder.embedding.weight)
    assert torch.equal(student.prefix(), truth.kv)
    emb = pl.plant_truth(base, "embedding", pc, replicate=2, kv_rms=rms)
    assert emb.kv.shape == truth.kv.shape and torch.isfinite(emb.kv).all()


def test_sampled_targets_make_n_matter(base):
    """Known truth, fixed seeds: shared_fixed (exact) is valid (basic inequality) and its held-out KL and prefix
    error shrink with n. Tolerances: from n=8 to n=128 (16x) a parametric KL shrinks ~16x; we ask for 3x, and
    for a smaller relative distance."""
    pc = pl.PlantedConfig(prefix_len=2, seq_len=6, n_test=64, structures=["shared_fixed"])
    study = pl.PlantedStudy(base, pc, pl.FitConfig(starts=1, max_iter=60), replicate=0, n_max=128)
    small, large = study.fit("shared_fixed", "exact", 8)[0], study.fit("shared_fixed", "exact", 128)[0]
    for row in (small, large):
        assert row["valid"] and row["rel_gap"] <= 1e-8 and row["iterations"] >= 1 and row["grad_max"] >= 0
    assert large["kl"] < small["kl"] / 3
    assert large["rel_dist"] < small["rel_dist"]
    assert study.data["shared"].targets.shape == (128, 1, 6)


def test_sampled_data_are_nested_and_follow_the_teacher(base):
    pc = pl.PlantedConfig(prefix_len=2, seq_len=4, draws=2, n_test=8)
    rms = pl.natural_kv_rms(base, torch.randint(0, SMALL.vocab, (8, 4), generator=torch.Generator().manual_seed(0)))
    teacher = fixed_prefix(base, pl.plant_truth(base, "shared", pc, replicate=1, kv_rms=rms).kv)
    small, large = pl.sample_data(teacher, pc, 5, replicate=1), pl.sample_data(teacher, pc, 40, replicate=1)
    assert torch.equal(small.inputs, large.inputs[:5]) and torch.equal(small.targets, large.targets[:5])
    assert torch.equal(small.test_inputs, large.test_inputs)  # the held-out set does not depend on n_max
    # inverse-CDF sampler: frequencies of 40000 draws at one position match the teacher's probabilities within
    # 5 binomial standard deviations (a wrong sampler, e.g. off by one token, misses by ~max p = 0.03)
    many = pl.sample_data(teacher, pl.PlantedConfig(prefix_len=2, seq_len=4, draws=40000, n_test=1), 1, replicate=1)
    p = pl.logits(teacher, many.inputs).exp()[0, 2]
    freq = torch.bincount(many.targets[0, :, 2], minlength=SMALL.vocab).double() / 40000
    assert ((freq - p).abs() <= 5 * (p * (1 - p) / 40000).sqrt() + 1e-12).all()


def _compose(tmp_path, extra=()):
    conf = Path(__file__).resolve().parents[2] / "experiments" / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose(config_name="planted_prefix",
                       overrides=["study=smoke", f"run_dir={tmp_path}/runs", f"out_dir={tmp_path}/fig", *extra])


@pytest.mark.parametrize("override, field", [
    ("planted.truth=mixed", "planted"), ("planted.structures=[independent,deep]", "planted"),
    ("base.d_model=30", "base"), ("fit.starts=0", "fit"), ("study.ns=[4,4]", "study"), ("mode=fit", "mode"),
    ("+planted.lr=0.1", "planted.lr"), ("out_dir=figures/lm/planted", "out_dir"),
])
def test_bad_settings_are_refused_before_work(tmp_path, override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        pl.validate_study(_compose(tmp_path, [override]))
    assert not (tmp_path / "runs").exists()


def test_smoke_app_records_every_fit_resumes_and_checks(tmp_path, capsys):
    from reparam.experiments import planted_prefix as app

    cfg = _compose(tmp_path, ["planted.structures=[independent,shared_fixed,embedding_only]", "study.ns=[4,8,16]"])
    settings = pl.validate_study(cfg)
    app.run(cfg, settings)
    slopes = app.draw(cfg, settings)
    fits = pd.read_csv(tmp_path / "fig" / "planted_fits.csv")
    assert len(fits) == 3 * 2 * 3 * 3  # structures x regimes x sizes x replicates, 1 start each
    assert fits["valid"].isin([True, False]).all() and fits["setting_id"].nunique() == 1
    assert set(fits.prefix_len) == {3, 4}
    for name in ("planted_estimates.csv", "planted_slopes.csv", "planted_summary.csv", "planted_kl.png",
                 "planted_valley.png", "planted_check.md"):
        assert (tmp_path / "fig" / name).is_file()
    assert set(slopes.error) == set(pl.ERRORS) and slopes.verdict.isin(
        ["agree", "disagree", "inconclusive", "insufficient", "measured"]).all()
    app.run(cfg, settings)  # resumable: nothing refitted
    rows = sum(1 for f in (tmp_path / "runs").glob("replicate_*.jsonl") for _ in open(f))
    assert rows == len(fits)
    app.check(_compose(tmp_path, [f"check_table={tmp_path}/fig/planted_fits.csv"]), settings)
    assert "| shared_fixed | exact | voronoi |" in capsys.readouterr().out
