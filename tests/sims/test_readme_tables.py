"""README's generated tables are rendered from the committed tables, idempotently, and only between markers."""
from reparam.checks import summarize
from reparam.sims.readme_tables import refresh

from .conftest import run_cli
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


def test_readme_tables_cli_refreshes_like_refresh_and_refuses_a_missing_readme(tmp_path):
    results = synthetic({("shared_mlp", "exact"): -0.5, ("independent", "over"): -0.1})
    results.to_csv(tmp_path / "results.csv", index=False)
    summarize(results, n_boot=100).to_csv(tmp_path / "summary.csv", index=False)
    stale = ("<!-- generated:canonical-summary -->\nstale\n<!-- /generated:canonical-summary -->\n"
             "<!-- generated:canonical-largest-n -->\n<!-- /generated:canonical-largest-n -->\n")
    by_cli, in_process = tmp_path / "cli.md", tmp_path / "direct.md"
    by_cli.write_text(stale)
    in_process.write_text(stale)
    proc = run_cli(["sims.readme_tables", f"figures={tmp_path}", f"readme={by_cli}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == "refreshed generated:canonical-summary\nrefreshed generated:canonical-largest-n\n"
    refresh(in_process, tmp_path)
    assert by_cli.read_text() == in_process.read_text() != stale
    names = sorted(p.name for p in tmp_path.iterdir())
    proc = run_cli(["sims.readme_tables", f"figures={tmp_path}", f"readme={tmp_path / 'nope.md'}"])
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"config error: readme='{tmp_path / 'nope.md'}' is invalid: must be an existing file"
    assert sorted(p.name for p in tmp_path.iterdir()) == names  # no log, no .hydra, no outputs/ anywhere here


def test_wall_times_block_says_which_steps_ran_fits(tmp_path):
    """The wall-time table is generated from wall_times.csv: every step's command and time, and a step whose fits
    were all in its log already is marked as such (its time is not a fitting time)."""
    import pandas as pd

    from reparam.sims.canonical import _fits_recorded

    log_dir = tmp_path / "job" / "0"
    log_dir.mkdir(parents=True)
    (log_dir / "results.jsonl").write_text('{"a": 1}\n{"a": 2}\n\n')
    assert _fits_recorded(tmp_path) == 2 and _fits_recorded(tmp_path / "nowhere") == 0
    pd.DataFrame([
        {"command": "reparam convergence hydra.run.dir=w/main figures=false", "wall_seconds": 131.4, "fits_run": 360,
         "fits_recorded": 360, "cpu_count": 2, "load_1min_at_end": 1.9, "date_utc": "2026-01-02", "git_commit": "abc"},
        {"command": "reparam sensitivity out=w/sensitivity", "wall_seconds": 4.0, "fits_run": 0,
         "fits_recorded": 720, "cpu_count": 2, "load_1min_at_end": 1.2, "date_utc": "2026-01-02", "git_commit": "abc"},
    ]).to_csv(tmp_path / "wall_times.csv", index=False)
    pd.DataFrame({"truth": ["random-0"] * 4, "structure": ["shared_mlp"] * 4, "regime": ["over"] * 4,
                  "n": [300, 300, 1000, 1000], "seconds": [1.0, 1.0, 2.5, 2.5]}).to_csv(
        tmp_path / "robustness_results.csv", index=False)
    readme = tmp_path / "README.md"
    readme.write_text("<!-- generated:wall-times -->\n<!-- /generated:wall-times -->\n")
    assert refresh(readme, tmp_path) == ["wall-times"]
    text = readme.read_text()
    assert "| `reparam convergence hydra.run.dir=w/main figures=false` | 131 s | 360 (360) | 2, 1.9 |" in text
    assert "| `reparam sensitivity out=w/sensitivity` | 4 s | none: all 720 already in its log |" in text
    assert "7 s of fitting summed over its 2 cells" in text  # robustness not among the steps: its recorded cell times


def test_low_data_block_says_insufficient_below_three_replicates_and_sums_the_chunks(tmp_path):
    """The real-model block is rendered from the committed low-data tables: a paired difference from 2 replicates
    reads "insufficient" with no interval, one from 3 gets its interval, and the chunk log's CPU time is summed."""
    import pandas as pd

    from reparam.lm.compare import paired_differences

    rows = []
    for n, reps in ((50, 3), (100, 2)):
        for r in range(reps):
            for s, nll in (("independent", 2.0), ("shared", 1.9 - 0.01 * r)):
                rows.append({"dataset": "e2e", "init": "words", "n": n, "replicate": r, "structure": s,
                             "test_nll": nll, "bleu": 40.0 + r})
    table = pd.DataFrame(rows)
    low = tmp_path / "lm" / "low_data"
    low.mkdir(parents=True)
    table.to_csv(low / "low_data_e2e.csv", index=False)
    paired_differences(table, ["test_nll", "bleu"]).to_csv(low / "low_data_e2e_paired.csv", index=False)
    pd.DataFrame({"wall_s": [1800.0, 3600.0], "cpu_s": [3600.0, 5400.0], "cpu_count": [2, 2],
                  "load_avg_end": ["[2.0, 1.0, 1.0]", "[3.5, 2.0, 1.0]"]}).to_csv(low / "low_data_e2e_chunks.csv", index=False)
    readme = tmp_path / "README.md"
    readme.write_text("<!-- generated:low-data-cpu -->\n(no rows)\n<!-- /generated:low-data-cpu -->\n")
    assert refresh(readme, tmp_path) == ["low-data-cpu"]
    text = readme.read_text()
    assert "| test NLL [nats/token] | shared | 100 | 2 | -0.105 (insufficient: 2 replicates, no interval) |" in text
    assert "| test NLL [nats/token] | shared | 50 | 3 | -0.1" in text and "| shared better |" in text
    assert "n = 50: 3 of 3, n = 100: 2 of 3" in text
    # the one-sentence answer never claims more than the verdicts: mixed here (n = 100 is insufficient)
    assert ("**Summary.** `shared` - `independent` in test NLL: n = 50: shared better; n = 100: insufficient (2 < 3 "
            "replicates): the difference is -0.1") in text and "at n = 100 (2 paired replicates); in BLEU, " in text
    from reparam.sims.readme_tables import low_data_answer

    paired = pd.read_csv(low / "low_data_e2e_paired.csv")
    assert low_data_answer(paired[paired.n == 50]).startswith(
        "`shared` has a lower test NLL than `independent` at every n recorded (50): the difference is -0.1")
    assert "1.50 hours of wall time and 2.50 CPU-hours (2 chunks" in text and "2.0 to 3.5 on 2 cores" in text
    assert "every layer" not in text  # no all-layer rows yet: no variant table

    from reparam.lm.compare import variant_agreement

    every = table[table.n == 50].assign(test_nll=lambda d: d.test_nll + 0.3 * (d.structure == "shared"))
    variant_agreement({"top 6 layers": table, "every layer": every}, ["test_nll", "bleu"]).to_csv(
        low / "low_data_e2e_variant.csv", index=False)
    pd.DataFrame({"wall_s": [7200.0], "cpu_s": [9000.0], "cpu_count": [2],
                  "load_avg_end": ["[1.9, 1.0, 1.0]"]}).to_csv(low / "low_data_e2e_variant_chunks.csv", index=False)
    every.assign(top_layers=30).to_csv(low / "low_data_e2e_every_layer.csv", index=False)
    table.assign(top_layers=6).to_csv(low / "low_data_e2e.csv", index=False)
    refresh(readme, tmp_path)
    text = readme.read_text()
    assert "| top 6 layers | shared | 50 | 3 | 1.890 | 41.00 |" in text and "| every layer | shared | 50 | 3 | 2.190 | 41.00 |" in text
    assert "| top 6 layers | independent | 100 |" not in text  # only the cells the all-layer rows cover
    assert "| test NLL [nats/token] | 50 | top 6 layers | 3 | -0.1" in text
    assert "| test NLL [nats/token] | 50 | every layer | 3 | +0.19" in text and "| independent better |" in text
    assert "| test NLL [nats/token] | 100 | every layer" not in text  # n=100 has no all-layer rows
    assert "The all-layer runs took 2.00 hours of wall time and 2.50 CPU-hours (1 chunk;" in text


def test_budget_check_block_sets_shared_against_both_budgets(tmp_path):
    """The budget-check block renders each budget's shared - independent with its interval, and where the check's
    own runs stopped, from the report's tables."""
    import pandas as pd

    from reparam.lm.compare import budget_diagnostics, variant_agreement

    rows, sel = [], []
    for r in range(3):
        for s, nll in (("independent", 2.4), ("shared", 1.9 + 0.01 * r)):
            rows.append({"init": "words", "n": 500, "replicate": r, "structure": s, "test_nll": nll, "bleu": 30.0 + r})
        sel.append({"n": 500, "replicate": r, "structure": "independent", "init": "words", "lr": 0.03, "selected": True,
                    "best_dev": 2.1, "best_step": 300 if r else 240, "dev_curve": "[[0, 3.0], [240, 2.1]]"})
    own = pd.DataFrame(rows)
    larger = own.assign(test_nll=lambda d: d.test_nll - 0.3 * (d.structure == "independent"))
    low = tmp_path / "lm" / "low_data"
    low.mkdir(parents=True)
    variant_agreement({"independent: 100 steps": own, "independent: 300 steps": larger}, ["test_nll", "bleu"]).to_csv(
        low / "low_data_e2e_budget_check.csv", index=False)
    budget_diagnostics(pd.DataFrame(sel), 300).to_csv(low / "low_data_e2e_budget_check_lr.csv", index=False)
    readme = tmp_path / "README.md"
    readme.write_text("<!-- generated:low-data-budget-check -->\n<!-- /generated:low-data-budget-check -->\n")
    refresh(readme, tmp_path)
    text = readme.read_text()
    assert "| test NLL [nats/token] | 500 | independent: 100 steps | 3 | -0.49" in text and "| shared better |" in text
    assert "| test NLL [nats/token] | 500 | independent: 300 steps | 3 | -0.19" in text
    assert "selected the largest lr in 3 of 3 cells, reached its best dev loss at the step cap in 2 of 3" in text


def test_head_like_blocks_give_the_sample_sizes_of_the_headline_per_dimension(tmp_path):
    """independent at n^-0.2, shared_mlp at n^s (c = 1): the target is independent's mean at its largest n,
    n_max^-0.2, which shared_mlp reaches at n = n_max^(0.2 / -s) (interpolated between measured n); the d = 8 study
    (truth canonical-d8-m4) gets its own row and its own verdict column. Tolerance: the means of 10 replicates with
    5% lognormal noise are off by ~1.6% each, so log n is off by ~0.022 / |s| (< 0.08): 0.25 is 3 sigma."""
    import numpy as np

    from .test_checks_and_figures import NS

    for folder, truth, shared in ((tmp_path, "canonical", -0.35), (tmp_path / "head_like" / "d8", "canonical-d8-m4", -0.3)):
        folder.mkdir(parents=True, exist_ok=True)
        results = synthetic({("shared_mlp", "over"): shared, ("independent", "over"): -0.2}, truth=truth)
        results.to_csv(folder / "results.csv", index=False)
        summarize(results, n_boot=100).to_csv(folder / "summary.csv", index=False)
    readme = tmp_path / "README.md"
    readme.write_text("<!-- generated:head-like-separation -->\n<!-- /generated:head-like-separation -->\n"
                      "<!-- generated:head-like-verdicts -->\n<!-- /generated:head-like-verdicts -->\n")
    assert {"head-like-separation", "head-like-verdicts"} <= set(refresh(readme, tmp_path))
    lines = readme.read_text().splitlines()
    rows = {ln.split("|")[1].strip(): ln for ln in lines if ln.startswith("| canonical")}
    assert set(rows) == {"canonical", "canonical-d8-m4"}
    n_max = max(NS)
    for name, shared in (("canonical", -0.35), ("canonical-d8-m4", -0.3)):
        cells = [c.strip() for c in rows[name].split("|")[1:-1]]
        needed = float(cells[6].replace(",", ""))
        expected = n_max ** (0.2 / -shared)  # n^shared = n_max^-0.2
        assert abs(np.log(needed / expected)) < 0.25, (name, needed, expected)
        assert cells[1] == ("2" if name == "canonical" else "8") and cells[2] == ("1" if name == "canonical" else "4")
    header = next(ln for ln in lines if ln.startswith("| structure | regime | error | predicted |"))
    assert header.rstrip(" |").endswith("canonical | canonical-d8-m4")


def test_large_n_block_shows_a_slope_that_turns_toward_minus_one_half(tmp_path):
    """A truth whose mean D falls as n^-0.2 up to n = 3e4 and as n^-0.5 beyond (a pre-asymptotic curve), and one
    that stays at n^-0.2: the first reads disagree then agree, the second disagree in both windows, and the
    count says 1 of 2 curves moved toward -1/2. 5% lognormal noise over 10 replicates: slopes within ~0.03."""
    import numpy as np
    import pandas as pd

    from reparam.sims.readme_tables import large_n_table

    rng = np.random.default_rng(1)
    ns = [300, 1000, 3000, 10_000, 30_000, 100_000, 300_000, 1_000_000]
    rows = []
    for truth, late in (("random-1", -0.5), ("random-5", -0.2)):
        for n in ns:
            mean = n ** -0.2 if n <= 30_000 else 30_000 ** -0.2 * (n / 30_000) ** late
            for r in range(10):
                rows.append(dict(truth=truth, structure="shared_mlp", regime="over", n=n, replicate=r,
                                 voronoi_prefix=mean * np.exp(0.05 * rng.standard_normal()), rel_gap=-1e-4,
                                 valid=True))
    original = pd.DataFrame([dict(truth=t, structure="shared_mlp", regime="over", error="voronoi_prefix",
                                  verdict="disagree") for t in ("random-1", "random-5")])
    text = large_n_table(pd.DataFrame(rows), original)
    line = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[1:-1]] for ln in text.splitlines()
            if ln.startswith("| random-")}
    assert line["random-1"][3].endswith("disagree") and line["random-1"][4].endswith(" agree")
    assert line["random-5"][3].endswith("disagree") and line["random-5"][4].endswith("disagree")
    assert line["random-1"][2] == "disagree" and line["random-1"][-1] == "80/80"
    assert "Of 2 curves, 1 have a large-n slope" in text
    assert "Of the 2 truths where `shared_mlp` disagreed in the sweep, on n >= 3e4: 1 agree, 1 disagree (random-5)." in text
