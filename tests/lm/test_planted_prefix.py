"""The planted-prefix study (reparam.lm.planted, experiments.planted_prefix): metric, truth, estimator, app.

Known truths: a prefix permuted per head IS the truth for attention (error 0); a shared_fixed student with the
true latents IS the teacher; the planted truth has exactly the requested key/value scale.
"""
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from reparam.experiments import planted_prefix as app  # also registers the apps' Hydra job logging (reparam.app)
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
    study = pl.PlantedStudy(base, pc, pl.LBFGSConfig(starts=1, max_iter=60), replicate=0, n_max=128)
    small, large = study.fit("shared_fixed", "exact", 8)[0][0], study.fit("shared_fixed", "exact", 128)[0][0]
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
    cfg = _compose(tmp_path, ["planted.structures=[independent,shared_fixed,embedding_only]", "study.ns=[4,8,16]"])
    settings = pl.validate_study(cfg)
    app.fit_all(cfg, settings)
    slopes = app.draw(cfg, settings)
    fits = pd.read_csv(tmp_path / "fig" / "planted_fits.csv")
    assert len(fits) == 3 * 2 * 3 * 3  # structures x regimes x sizes x replicates, 1 start each
    assert fits["valid"].isin([True, False]).all() and fits["setting_id"].nunique() == 1
    assert set(fits.prefix_len) == {3, 4}
    for name in ("planted_estimates.csv", "planted_slopes.csv", "planted_summary.csv", "planted_check.md",
                 *(f"{stem}.{ext}" for stem in [*app.FIGURES, app.VALLEY] for ext in ("png", "pdf"))):
        assert (tmp_path / "fig" / name).is_file()
    assert not list((tmp_path / "fig").glob("planted_shared*")) and not (tmp_path / "fig" / "planted_valley.png").exists()
    est = pd.read_csv(tmp_path / "fig" / "planted_estimates.csv")
    assert (est["voronoi_rel"] > 0).all() and est["voronoi_scale"].notna().all()
    assert set(slopes.error) == set(pl.ERRORS) and slopes.verdict.isin(
        ["agree", "disagree", "inconclusive", "insufficient", "measured"]).all()
    app.fit_all(cfg, settings)  # resumable: nothing refitted
    rows = sum(1 for f in (tmp_path / "runs").glob("replicate_*.jsonl") for _ in open(f))
    assert rows == len(fits)
    app.check(_compose(tmp_path, [f"check_table={tmp_path}/fig/planted_fits.csv"]), settings)
    assert "| shared_fixed | exact | voronoi |" in capsys.readouterr().out


# ------------------------------------------------------------------ figures: drawn from the recorded tables only

COMMITTED = Path(__file__).resolve().parents[2] / "figures" / "lm" / "planted"


def _fake_estimates(n_rep=5, ns=(2, 4, 8, 16, 32, 64)):
    """Estimates of two structures with known power laws (rel_dist ~ n^-1/2 for shared_fixed, flat for
    independent), recorded columns only."""
    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    for structure, slope, truth in (("shared_fixed", -0.5, "shared"), ("independent", 0.0, "shared")):
        for regime, L in (("exact", 3), ("over", 4)):
            for r in range(n_rep):
                for n in ns:
                    e = 2.0 * n ** slope * np.exp(rng.normal(0, 0.05))
                    rows.append({"structure": structure, "regime": regime, "n": n, "replicate": r, "truth": truth,
                                 "prefix_len": L, "valid": True, "voronoi": 40 * e, "rel_dist": e, "kl": 0.1 * e * e,
                                 "kl_truth_vs_base": 0.15 + 0.01 * r})
    return pd.DataFrame(rows)


def test_normalised_voronoi_keeps_slopes_and_checks_the_truth():
    """voronoi_rel = voronoi / (mean over replicates of D(0_L, G*)): one constant per curve, so its slope IS the
    raw loss's; a reference computed for another truth (its bare-model KL differs) is refused."""
    import numpy as np

    from reparam.rates import fit_slopes
    from reparam.validation import DataError

    est = _fake_estimates()
    refs = pd.DataFrame([{"truth": "shared", "replicate": r, "prefix_len": L, "voronoi_zero": 30.0 + 5 * r + L,
                          "truth_atom_rms": 4.0, "kl_bare": 0.15 + 0.01 * r} for r in range(5) for L in (3, 4)])
    out = pl.add_normalised_errors(est, refs)
    exact = out[out.prefix_len == 3]
    assert np.allclose(exact["voronoi_rel"], exact["voronoi"] / np.mean([33.0 + 5 * r for r in range(5)]))
    raw, rel = (fit_slopes(out, e, ["structure", "regime"], n_boot=200) for e in ("voronoi", "voronoi_rel"))
    assert np.allclose(raw[["slope", "slope_lo", "slope_hi"]], rel[["slope", "slope_lo", "slope_hi"]])
    bad = refs.assign(kl_bare=refs["kl_bare"] * 1.01)
    with pytest.raises(DataError, match="not the recorded one"):
        pl.add_normalised_errors(est, bad)


def test_truth_references_are_the_zero_prefix_loss(tmp_path):
    """voronoi_zero is the Voronoi loss of an all-zero prefix against the re-planted truth, and kl_bare is what a
    fit of the same setting records as kl_truth_vs_base (the same truth, without refitting anything)."""
    cfg = _compose(tmp_path, ["planted.structures=[shared_fixed]", "study.replicates=[1]", "planted.regimes=[exact]"])
    settings = pl.validate_study(cfg)
    refs = pl.truth_references(settings)
    assert list(refs.truth) == ["shared"] and list(refs.prefix_len) == [3]
    base = pl.make_base(settings["base"])
    study = pl.PlantedStudy(base, settings["planted"], settings["fit"], 1, n_max=4)
    kv = study.truths["shared"].kv
    assert refs.voronoi_zero.iloc[0] == pytest.approx(pl.prefix_errors(torch.zeros_like(kv), kv)["voronoi"], rel=1e-12)
    row = study.fit("shared_fixed", "exact", 4)[0][0]
    assert refs.kl_bare.iloc[0] == pytest.approx(row["kl_truth_vs_base"], rel=1e-12)


def test_slope_text_has_the_precision_of_its_interval():
    from reparam.plots import lm_slope_text

    assert lm_slope_text(-0.49, -0.62, -0.37) == "\u22120.49 [\u22120.62, \u22120.37]"
    import re

    narrow = lm_slope_text(-0.0012, -0.0019, -0.0004)  # printed as "-0.00 [-0.00, -0.00]" before
    numbers = [float(x.replace("\u2212", "-")) for x in re.findall(r"[+\u2212]?\d+\.\d+", narrow)]
    assert len(numbers) == 3 and all(x < 0 for x in numbers) and numbers[1] < numbers[0] < numbers[2]
    assert lm_slope_text(-0.02, -0.04, -0.003).endswith("\u22120.003]")  # no non-zero bound prints as 0.00
    assert "insufficient" in lm_slope_text(-0.3, float("nan"), float("nan"))


@pytest.mark.parametrize("width", [3.5, 7.0])
def test_planted_figures_have_reference_lines_and_fit_their_width(width):
    """Reference lines (relative distance 1, the bare model's KL per truth), the THEORY guide only where THEORY
    predicts, slopes in the legends, and the drawn figure no wider than asked (3.5 in: panels stacked)."""
    import numpy as np

    from reparam.plots import planted_error_figure, planted_valley_figure, plt

    est = _fake_estimates()
    slopes = pd.DataFrame([{"structure": s, "regime": g, "error": "rel_dist", "slope": v, "slope_lo": v - 0.1,
                            "slope_hi": v + 0.1, "verdict": "agree" if s == "shared_fixed" else "measured"}
                           for s, v in (("shared_fixed", -0.5), ("independent", 0.0)) for g in ("exact", "over")])
    fig = planted_error_figure(est, "rel_dist", slopes=slopes, predictions={("shared_fixed", "exact"): -0.5},
                               width=width, title="a title long enough to need wrapping at a column's width, surely")
    axes = fig.axes
    assert len(axes) == 2 and (width > 4) == (axes[0].get_position().y0 == axes[1].get_position().y0)
    for ax in axes:
        flat = [line for line in ax.get_lines() if len(set(np.atleast_1d(line.get_ydata()))) == 1]
        assert any(np.atleast_1d(line.get_ydata())[0] == 1.0 for line in flat)  # relative distance 1
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert any(t.startswith("shared_fixed: \u22120.50 [") for t in labels)
        assert any("THEORY" in t for t in labels) == (ax is axes[0])
        assert ax.get_yscale() == "log"
    fig.canvas.draw()
    bbox = fig.get_tightbbox(fig.canvas.get_renderer())
    assert bbox.width <= width + 0.05
    plt.close(fig)
    kl = planted_error_figure(est, "kl", width=width)
    refs = sorted(float(np.atleast_1d(line.get_ydata())[0]) for line in kl.axes[0].get_lines()
                  if "bare model" in str(line.get_label()))
    assert refs == pytest.approx([est["kl_truth_vs_base"].mean()])
    plt.close(kl)
    valley = planted_valley_figure(est, width=width)
    assert any("bare model" in t.get_text() for t in valley.legends[0].get_texts())
    plt.close(valley)


@pytest.mark.skipif(not (COMMITTED / "draws_1" / "planted_fits.csv").is_file(), reason="no committed planted study")
def test_committed_figures_are_named_after_what_they_show():
    """Every committed planted figure is one the draw mode writes (no stale names such as planted_shared_* or
    planted_valley), and every one it writes is committed, in both formats."""
    stems = {*app.FIGURES, app.VALLEY}
    for study in ("draws_1", "draws_16"):  # drawn before the headline figures existed
        found = {p.stem for p in (COMMITTED / study).glob("*.png")} | {p.stem for p in (COMMITTED / study).glob("*.pdf")}
        assert found == stems, study
    asymptotic = COMMITTED / "asymptotic"
    if (asymptotic / "planted_fits.csv").is_file():
        found = {p.stem for p in asymptotic.glob("*.png")} & {p.stem for p in asymptotic.glob("*.pdf")}
        assert stems | {"planted_headline_exact", "planted_headline_over"} <= found
