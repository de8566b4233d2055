"""The identifiability checks through the CLI and their figures, on synthetic tables with known laws."""
import matplotlib
import numpy as np
import pandas as pd

from reparam.plots import color_for, inverse_bound_figure
from .conftest import run_cli


def test_inverse_ratio_check_summarises_a_recorded_table_without_fitting(tmp_path):
    rng = np.random.default_rng(1)
    rows = []
    for structure in ("shared_linear", "shared_mlp", "independent"):
        for regime in ("exact", "over"):
            growth = 0.25 if (structure, regime) == ("independent", "over") else 0.0
            for n in (300, 1000, 3000, 10000, 30000, 100000):
                for seed in range(10):
                    l2 = n ** -0.5 * np.exp(0.1 * rng.standard_normal())
                    rows.append(dict(structure=structure, regime=regime, n=n, replicate=seed, seed=seed, l2_error=l2,
                                     voronoi_prefix=50 * n ** growth * l2 * np.exp(0.1 * rng.standard_normal()),
                                     rel_gap=-1e-4, converged=True, status="converged", truth="canonical"))
    path = tmp_path / "results.csv"
    pd.DataFrame(rows).to_csv(path, index=False)  # no `valid` column: the gap rule decides
    proc = run_cli(["sims.check", "names=[inverse-ratio]", f"results={path}", f"out={tmp_path / 'out'}", "threads=1"])
    assert proc.returncode == 0, proc.stderr
    assert "inverse-ratio: AGREE" in proc.stdout
    assert proc.stdout.rstrip().endswith(f"report: {tmp_path / 'out' / 'inverse-ratio' / 'report.md'}")
    summary = pd.read_csv(tmp_path / "out" / "inverse-ratio" / "summary.csv").set_index(["structure", "regime"])
    assert abs(summary.loc[("independent", "over"), "slope"] - 0.25) < 0.05
    assert (summary["verdict"] == "agree").all()
    assert (tmp_path / "out" / "inverse-ratio" / "inverse_ratio.png").stat().st_size > 1000
    report = (tmp_path / "out" / "inverse-ratio" / "report.md").read_text()
    assert f"- Command: `reparam check names=[inverse-ratio] results={path}`" in report
    assert f"fits read from `{path}` (not refitted)" in report
    # the printed lines are kept in OUT/check.log; Hydra leaves nothing else (no .hydra, no outputs/<date>)
    assert "inverse-ratio: AGREE" in (tmp_path / "out" / "check.log").read_text()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["check.log", "inverse-ratio", "provenance.json"]


def test_inverse_bound_figure_one_colour_per_structure_and_reference_line():
    delta = np.logspace(0, -3, 7)
    curve = pd.concat([
        pd.DataFrame(dict(structure="shared_mlp", regime=regime, latent_dim=2, delta=delta, psi=3e-3 * delta))
        for regime in ("exact", "over")] + [
        pd.DataFrame(dict(structure="independent", regime="over", latent_dim=2, delta=delta, psi=1e-16)),
        pd.DataFrame(dict(structure="shared_linear", regime="over", latent_dim=3, delta=delta, psi=1e-16))])
    fig = inverse_bound_figure(curve)
    assert len(fig.axes) == 2
    over = fig.axes[1]
    colors = {line.get_label(): matplotlib.colors.to_hex(line.get_color()) for line in over.get_lines()}
    assert colors["shared_mlp, r = 2"] == color_for("shared_mlp")
    assert colors["independent"] == color_for("independent")
    assert colors["shared_linear, r = 3"] == color_for("shared_linear")
    assert "psi = delta (slope 1)" in colors
    import matplotlib.pyplot as plt
    plt.close(fig)
