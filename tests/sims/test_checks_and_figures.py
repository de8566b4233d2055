"""Summaries, verdicts and figures on synthetic tables with known laws (so the tests can fail)."""
import os
import shutil
import subprocess

import matplotlib
import numpy as np
import pandas as pd
import pytest

from reparam.checks import CHECKS, check_lines, prediction_for, robustness_tables, summarize
from reparam.cli import COMMANDS
from reparam.plots import color_for, robustness_figure, study_figures, draw_study_curves
from .conftest import run_cli

NS = [300, 1000, 3000, 10000, 30000, 100000]


def synthetic(slopes: dict, reps=10, failures=0, truth="canonical", seed=0):
    """Rows whose voronoi_prefix / l2_error / atom_error_multi follow c * n^slope * lognormal noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for (structure, regime), slope in slopes.items():
        for n in NS:
            for r in range(reps):
                e = n ** slope * np.exp(0.05 * rng.standard_normal())
                failed = r < failures
                rows.append(dict(structure=structure, regime=regime, n=n, replicate=r, seed=1000 + r, truth=truth,
                                 voronoi_prefix=(1e3 if failed else e), l2_error=e, atom_error_multi=e if regime == "over" else np.nan,
                                 voronoi_r1_prefix=e, voronoi_r2_prefix=e, voronoi_native=e,
                                 rel_gap=(1e-3 if failed else -1e-4), valid=not failed,
                                 certified=not failed, converged=not failed, status="max_iter" if failed else "converged"))
    return pd.DataFrame(rows)


def test_summary_recovers_known_slopes_and_verdicts():
    df = synthetic({("shared_mlp", "exact"): -0.5, ("shared_linear", "exact"): -0.2})
    s = summarize(df, n_boot=300).set_index(["structure", "error"])
    assert s.loc[("shared_mlp", "voronoi_prefix"), "slope"] == pytest.approx(-0.5, abs=0.02)
    assert s.loc[("shared_mlp", "voronoi_prefix"), "verdict"] == "agree"
    assert s.loc[("shared_linear", "voronoi_prefix"), "verdict"] == "disagree"


def test_failed_fits_are_counted_and_never_averaged_in():
    df = synthetic({("shared_mlp", "over"): -0.5}, failures=3)
    s = summarize(df, n_boot=300).set_index("error")
    row = s.loc["voronoi_prefix"]
    assert row["n_excluded"] == 3 * len(NS) and row["excluded_gap"] == 3 * len(NS)
    assert row["slope"] == pytest.approx(-0.5, abs=0.03)  # the 1e3 values of invalid fits are excluded
    assert row["mean_at_n_max"] < 1


def test_validity_is_the_gap_not_convergence():
    """A gap-valid fit that stopped at max_iter enters every number; a fit with a positive gap does not, and is
    counted. Same table both ways: only the flags differ, so the slope tells which rows were used."""
    df = synthetic({("independent", "over"): -0.5}, failures=0)
    unconverged = df.replicate < 2  # valid (gap <= 0) but stopped at max_iter
    df.loc[unconverged, ["converged", "certified", "status"]] = [False, False, "max_iter"]
    df.loc[unconverged, "voronoi_prefix"] *= 10.0  # heavier: dropping them would lower the mean 2-3x
    invalid = df.replicate == 2
    df.loc[invalid, ["valid", "rel_gap", "voronoi_prefix"]] = [False, 1e-4, 1e6]
    row = summarize(df, n_boot=200).set_index("error").loc["voronoi_prefix"]
    assert row["n_valid"] == len(df) - invalid.sum() and row["n_excluded"] == invalid.sum()
    assert row["valid_max_iter"] == unconverged.sum() and row["n_converged"] == (~unconverged).sum()
    kept = df[~invalid]
    expected = kept[kept.n == max(NS)]["voronoi_prefix"].mean()
    assert row["mean_at_n_max"] == pytest.approx(expected, rel=1e-12)  # unconverged rows are in, the 1e6 row is not
    assert row["median_at_n_max"] == pytest.approx(kept[kept.n == max(NS)]["voronoi_prefix"].median(), rel=1e-12)


def test_validity_falls_back_to_rel_gap_for_old_tables():
    df = synthetic({("shared_mlp", "exact"): -0.5}, failures=2).drop(columns=["valid"])
    row = summarize(df, n_boot=100).set_index("error").loc["voronoi_prefix"]
    assert row["n_excluded"] == 2 * len(NS)


def test_independent_over_prediction_is_flatter_than():
    pred, _ = prediction_for("independent", "over", "voronoi_r1_prefix")
    assert pred.kind == "flatter_than"
    df = synthetic({("independent", "over"): -0.05})
    lines, overall = check_lines(CHECKS["independent-over"], summarize(df, n_boot=300))
    assert overall == "agree", lines
    df = synthetic({("independent", "over"): -0.6})
    _, overall = check_lines(CHECKS["independent-over"], summarize(df, n_boot=300))
    assert overall == "disagree"


def test_every_theory_row_has_a_check():
    assert set(CHECKS) == {"regression", "shared-exact", "shared-over", "independent-over", "inverse-ratio",
                           "inverse-bound"}
    for c in CHECKS.values():
        if c.kind != "study":
            with pytest.raises(ValueError, match="fits no study plan"):
                c.plan()
            continue
        for s in c.structures:
            for r in c.regimes:
                for e in c.errors:
                    assert prediction_for(s, r, e)[0] is not None, (c.name, s, r, e)


def test_check_list_cli(tmp_path):
    proc = run_cli(["sims.check", "list=true"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in CHECKS:
        assert name in proc.stdout
    assert list(tmp_path.iterdir()) == []  # no outputs/ folder, no log: list=true writes nothing


def test_entry_point_lists_every_command_and_runs_check_list(tmp_path):
    exe = shutil.which("reparam")
    if exe is None:
        pytest.skip("the `reparam` entry point is not installed (pip install -e .)")
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    listed = [line.split()[0] for line in proc.stdout.split("commands:")[1].splitlines() if line.strip()]
    assert listed == list(COMMANDS)
    for command in ("check", "aggregate", "figures", "readme-tables"):
        assert command in listed
    proc = subprocess.run([exe, "check", "list=true"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [line.split()[0] for line in proc.stdout.splitlines() if not line.startswith(" ")] == list(CHECKS)
    proc = subprocess.run([exe, "check", "names=[no-such-check]"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "no-such-check" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_figures_cli_redraws_a_folder_and_refuses_one_without_tables(tmp_path):
    df = synthetic({("shared_mlp", "exact"): -0.5, ("independent", "over"): -0.1})
    df.to_csv(tmp_path / "results.csv", index=False)
    summarize(df, n_boot=100).to_csv(tmp_path / "summary.csv", index=False)
    pd.DataFrame({"axis": ["n", "n", "L", "L", "d", "d"], "value": [1000, 10000, 2, 4, 2, 4],
                  "seconds": [0.01, 0.1, 0.02, 0.04, 0.02, 0.05]}).to_csv(tmp_path / "scaling.csv", index=False)
    proc = run_cli(["sims.figures", f"dir={tmp_path}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = proc.stdout.split()
    assert str(tmp_path / "convergence_voronoi.png") in printed and all(os.path.exists(p) for p in printed)
    assert str(tmp_path / "scaling.png") in printed  # every committed figure with a table is redrawn from it
    assert not (tmp_path / ".hydra").exists() and not list(tmp_path.glob("*.log"))  # nothing of Hydra's
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_cli(["sims.figures", f"dir={empty}"])
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"config error: dir='{empty}' is invalid: must contain results.csv (run `reparam canonical`)")
    assert list(empty.iterdir()) == []


def test_study_figures_png_pdf_one_color_per_structure(tmp_path):
    df = synthetic({("shared_mlp", "exact"): -0.5, ("shared_mlp", "over"): -0.3, ("independent", "exact"): -0.5,
                    ("independent", "over"): -0.1}, failures=1)
    summary = summarize(df, n_boot=200)
    paths = study_figures(df, summary, tmp_path)
    stems = {p.stem for p in paths}
    assert {"convergence_voronoi", "convergence_regression", "convergence_atoms_over", "sample_complexity"} <= stems
    assert all(p.exists() and p.stat().st_size > 1000 for p in paths)
    assert {p.suffix for p in paths} == {".png", ".pdf"}
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    draw_study_curves(ax, df, "voronoi_prefix", "over", summary, {"-1/2": -0.5})
    colors = {line.get_label().split(":")[0].split(" ")[0]: matplotlib.colors.to_hex(line.get_color())
              for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert colors["shared_mlp"] == color_for("shared_mlp") and colors["independent"] == color_for("independent")
    legend = " ".join(t.get_text() for t in ax.get_legend().get_texts())
    assert "invalid, excluded" in legend and "slope" in legend
    plt.close(fig)


def test_robustness_tables_and_figure(tmp_path):
    df = pd.concat([synthetic({("shared_mlp", "exact"): -0.5 + 0.01 * t, ("shared_mlp", "over"): -0.5,
                               ("independent", "over"): -0.1}, reps=4, truth=f"random-{t}", seed=t) for t in range(5)])
    per_truth, dist = robustness_tables(df, n_boot=100)
    assert per_truth.truth.nunique() == 5
    row = dist[(dist.structure == "shared_mlp") & (dist.regime == "exact") & (dist.error == "voronoi_prefix")].iloc[0]
    assert row.n_truths == 5 and -0.52 < row.slope_median < -0.43 and row.agree == 5
    fig = robustness_figure(per_truth)
    fig.savefig(tmp_path / "r.png")
