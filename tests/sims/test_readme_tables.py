"""README's generated tables are rendered from the committed tables, idempotently, and only between markers."""
from reparam.checks import summarize
from reparam.sims.readme_tables import refresh

from .test_checks_and_figures import synthetic


def test_refresh_renders_summary_between_markers_and_is_idempotent(tmp_path):
    results = synthetic({("shared_mlp", "exact"): -0.5, ("independent", "over"): -0.1})
    summary = summarize(results, n_boot=100)
    results.to_csv(tmp_path / "results.csv", index=False)
    summary.to_csv(tmp_path / "summary.csv", index=False)
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- generated:canonical-summary -->\nstale numbers\n<!-- /generated:canonical-summary -->\n"
                      "middle\n<!-- generated:canonical-largest-n -->\n<!-- /generated:canonical-largest-n -->\nend\n")
    assert set(refresh(readme, tmp_path)) == {"canonical-summary", "canonical-largest-n"}
    text = readme.read_text()
    assert "stale numbers" not in text and text.startswith("intro\n") and text.endswith("end\n")
    row = summary[(summary.structure == "shared_mlp") & (summary.error == "voronoi_prefix")].iloc[0]
    assert f"{row.slope:+.3f} [{row.slope_lo:+.3f}, {row.slope_hi:+.3f}]" in text
    assert f"{row.verdict} |" in text
    refresh(readme, tmp_path)
    assert readme.read_text() == text
