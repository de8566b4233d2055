"""The low-data report from recorded rows only: re-reporting the committed top-6 study (and its all-layer check) gives
the committed tables, and the all-layer study's readout (sample efficiency, answer paragraph) says no more than
its verdicts."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "experiments" / "conf"
COMMITTED = ROOT / "figures" / "lm" / "low_data"


def _cfg(overrides):
    import reparam.experiments.low_data  # noqa: F401  (registers the app's Hydra config groups)

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="low_data", overrides=list(overrides))


@pytest.mark.skipif(not (COMMITTED / "cpu" / "low_data" / "results.jsonl").is_file(), reason="committed rows absent")
def test_re_reporting_the_committed_rows_gives_the_committed_tables(tmp_path):
    from reparam.lm.low_data.report import report_stage

    report_stage(_cfg(["setting=cpu", f"out_dir={tmp_path}"]))
    for name in ("", "_summary", "_lr_selection", "_budget", "_chunks", "_every_layer", "_variant_chunks", "_paired",
                 "_variant", "_diagnosis"):
        new, old = pd.read_csv(tmp_path / f"low_data_e2e{name}.csv"), pd.read_csv(COMMITTED / f"low_data_e2e{name}.csv")
        pd.testing.assert_frame_equal(new, old, check_exact=False, rtol=1e-9, obj=f"low_data_e2e{name}.csv")
    for name in ("paired", "variant", "diagnosis"):
        assert (tmp_path / f"low_data_e2e_{name}.md").read_text() == (COMMITTED / f"low_data_e2e_{name}.md").read_text()
    diag = pd.read_csv(tmp_path / "low_data_e2e_diagnosis.csv").set_index("structure")
    assert diag.loc["independent", "diagnosis"] == "optimisation-limited"  # its dev loss does not fall with n
    assert diag.loc["shared", "diagnosis"] == "uses the data"
    from reparam.lm.low_data.report import variant_paragraph

    text = variant_paragraph(tmp_path)
    assert "`independent` (selected dev loss 2.384 / 2.387 / 2.390 / 2.390" in text and "not the answer" in text


def _summary(means: dict[str, list[float]], ns=(50, 100, 200)) -> pd.DataFrame:
    rows = [{"init": "words", "structure": s, "n": n, "replicates": 3, "test_nll_mean": m, "test_nll_ci_low": m - 0.01,
             "test_nll_ci_high": m + 0.01} for s, ms in means.items() for n, m in zip(ns, ms)]
    return pd.DataFrame(rows)


def test_sample_efficiency_interpolates_the_n_to_reach_the_target():
    from reparam.lm.low_data.report import sample_efficiency

    eff = sample_efficiency(_summary({"independent": [2.0, 1.8, 1.6], "shared": [1.8, 1.6, 1.5]})).set_index("structure")
    assert eff.target.iloc[0] == pytest.approx(1.6)  # the level both reach: the higher end value
    assert eff.loc["independent", "n_needed"] == pytest.approx(200) and eff.loc["shared", "n_needed"] == pytest.approx(100)
    assert eff.loc["shared", "ratio_vs_independent"] == pytest.approx(2.0)
    assert not eff.loc["shared", "at_most"]
    # an n still being recorded (1 replicate so far) does not move the readout: the curves stop at n = 200
    partial = _summary({"independent": [1.0], "shared": [0.5]}, ns=(400,)).assign(replicates=1)
    again = sample_efficiency(pd.concat([_summary({"independent": [2.0, 1.8, 1.6], "shared": [1.8, 1.6, 1.5]}),
                                         partial])).set_index("structure")
    pd.testing.assert_frame_equal(again, eff)


def _tables(folder: Path, paired_rows, planned=(5, 3, 3), recorded=(5, 3, 3), ns=(50, 100, 200)):
    pd.DataFrame(paired_rows).to_csv(folder / "low_data_e2e_paired.csv", index=False)
    pd.DataFrame({"dataset": "e2e", "n": list(ns), "planned": planned, "recorded": recorded}).to_csv(
        folder / "low_data_e2e_cells.csv", index=False)
    pd.DataFrame({"model": "smollm2", "lr_interior": [True] * 4, "converged": [True, True, False, True]}).to_csv(
        folder / "low_data_e2e_study.csv", index=False)


def test_the_answer_paragraph_never_claims_more_than_the_verdicts(tmp_path):
    from reparam.lm.compare import paired_differences
    from reparam.lm.low_data.report import answer_paragraph

    rows = []
    for n, reps, diff in ((50, 5, [0.001, -0.002, 0.0015, -0.001, 0.0005]), (100, 2, [0.01, 0.02])):
        for r in range(reps):
            rows += [{"init": "words", "n": n, "replicate": r, "structure": "independent", "test_nll": 1.7},
                     {"init": "words", "n": n, "replicate": r, "structure": "shared", "test_nll": 1.7 + diff[r]}]
    paired = paired_differences(pd.DataFrame(rows), ["test_nll"])
    _tables(tmp_path, paired, planned=(5, 3, 3), recorded=(5, 2, 0))
    text = answer_paragraph(tmp_path)
    assert "SmolLM2-135M-Instruct (dequantised from its Q4_1 GGUF file)" in text
    assert "7 of 11 planned paired cells recorded" in text
    assert "equivalent within" in text and "insufficient" in text
    assert "do not need fewer examples" not in text  # one n is insufficient: no answer across n
    assert "3 converged" in text
    assert answer_paragraph(tmp_path / "nothing") == ""
    eq = paired[paired.n == 50]
    _tables(tmp_path, eq, planned=(5,), recorded=(5,), ns=(50,))
    assert "do not need fewer examples" in answer_paragraph(tmp_path)
    assert np.isfinite(eq.ci_low).all()


def test_a_mixed_answer_says_which_n_says_what_and_what_follows(tmp_path):
    from reparam.lm.compare import paired_differences
    from reparam.lm.low_data.report import answer_paragraph

    rows = []  # n = 50: shared clearly worse; n = 100: differences of both signs, wide interval
    for n, diff in ((50, [0.05, 0.06, 0.055]), (100, [0.08, -0.07, 0.01])):
        for r, d in enumerate(diff):
            rows += [{"init": "words", "n": n, "replicate": r, "structure": "independent", "test_nll": 1.7},
                     {"init": "words", "n": n, "replicate": r, "structure": "shared", "test_nll": 1.7 + d}]
    paired = paired_differences(pd.DataFrame(rows), ["test_nll"])
    _tables(tmp_path, paired, planned=(3, 3), recorded=(3, 3), ns=(50, 100))
    text = answer_paragraph(tmp_path)
    assert "`independent` better at n = 50; not resolved (no clear difference) at n = 100" in text
    assert "`shared` is better at no n recorded" in text and "does not support `shared`" in text
    assert "insufficient" not in text and "lower test NLL at every n" not in text
    # the mirror image: shared better where resolved
    flipped = paired.assign(verdict=paired.verdict.str.replace("independent better", "shared better"))
    _tables(tmp_path, flipped, planned=(3, 3), recorded=(3, 3), ns=(50, 100))
    text = answer_paragraph(tmp_path)
    assert "`shared` better at n = 50" in text and "`independent` is better at no n recorded" in text
    assert "does not support" not in text


ALL_LAYERS_REPORT = COMMITTED / "cpu_all_layers" / "report"


@pytest.mark.skipif(not (ALL_LAYERS_REPORT / "low_data_e2e_paired.csv").is_file(), reason="no committed report")
def test_the_all_layer_report_is_the_report_of_the_committed_rows(tmp_path):
    """The committed all-layer report (and so README's answer) is what `stage=report` makes of the committed rows:
    rows recorded after it and not reported, or a report edited by hand, fail here."""
    from reparam.lm.low_data.report import report_stage

    report_stage(_cfg(["setting=cpu_all_layers", f"out_dir={tmp_path}"]))
    for name in ("", "_summary", "_paired", "_study", "_cells", "_efficiency", "_lr_selection", "_budget", "_chunks"):
        new = pd.read_csv(tmp_path / f"low_data_e2e{name}.csv")
        old = pd.read_csv(ALL_LAYERS_REPORT / f"low_data_e2e{name}.csv")
        pd.testing.assert_frame_equal(new, old, check_exact=False, rtol=1e-9, obj=f"low_data_e2e{name}.csv")
    for name in ("paired", "study", "answer"):
        assert (tmp_path / f"low_data_e2e_{name}.md").read_text() == (ALL_LAYERS_REPORT / f"low_data_e2e_{name}.md").read_text()
