"""The theory table (reparam.theory) is the one place a prediction is written: the checks, the summaries' THEORY
rows, the inverse-ratio prediction and docs/theory.md read it, and the modules that used to carry copies do not."""
from __future__ import annotations

import dataclasses
import itertools
import re
from pathlib import Path

import pytest

from reparam import theory
from reparam.checks import CHECKS, SUMMARY_ERRORS, prediction_for
from reparam.identifiability import inverse_ratio_prediction
from reparam.rates import Prediction
from reparam.structures import STRUCTURES
from reparam.theory import (PACKAGE, PAPER, REGIMES, THEORY_TABLE, Rate, claim, prediction_text, slope_text,
                            theory_table_markdown)

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- generated:theory_table -->\n(.*?)\n<!-- /generated:theory_table -->", re.S)
#: Error columns that are not study columns: derived on fits (inverse_ratio) or of the no-data study (psi).
DERIVED_ERRORS = {"inverse_ratio", "psi"}


def test_docs_theory_page_holds_the_rendered_table():
    found = BLOCK.findall((ROOT / "docs" / "theory.md").read_text(encoding="utf-8"))
    assert len(found) == 1, "docs/theory.md needs exactly one generated:theory_table block"
    assert found[0] == theory_table_markdown(), "rerun `reparam readme-tables` to refresh docs/theory.md"


def test_the_rendered_table_has_one_row_per_rate_and_regime_group():
    rows = theory_table_markdown().splitlines()[2:]
    assert all(row.startswith("| `") and row.endswith(" |") for row in rows)
    assert {row.split(" | ")[0][3:-1] for row in rows} == set(THEORY_TABLE)
    # a cell never carries a bare pipe (it would split the markdown row): every row has the header's 6 cells
    assert all(row.count(" | ") == 5 for row in rows), rows


def test_at_most_one_slope_per_curve():
    for name, regime, error in itertools.product(STRUCTURES, REGIMES, SUMMARY_ERRORS + sorted(DERIVED_ERRORS)):
        cls = STRUCTURES[name]
        matching = [rate.label for entry in THEORY_TABLE.values() for rate in entry.rates
                    if rate.prediction is not None and error in rate.errors and rate.applies(cls, regime)]
        assert len(matching) <= 1, (name, regime, error, matching)


def test_every_rate_names_a_recorded_error_a_source_and_whose_it_is():
    for entry in THEORY_TABLE.values():
        assert entry.check in CHECKS and entry.section in (5, 7)
        for rate in entry.rates:
            assert set(rate.errors) <= set(SUMMARY_ERRORS) | DERIVED_ERRORS, rate.errors
            assert rate.source and rate.origin in (PAPER, PACKAGE)


def test_checks_read_their_row_curves_and_numbers_from_the_table():
    for name, check in CHECKS.items():
        entry = claim(name)
        assert check.theory_row == entry.statement
        assert (check.regimes, check.errors) == (entry.regimes, entry.errors)
    assert CHECKS["regression"].theory_row == "||f_hat - f*||_L2, all structures: slope -1/2"
    assert list(CHECKS["shared-over"].structures) == ["shared_linear", "shared_mlp"]
    assert CHECKS["independent-over"].description.endswith("for the same quantity (-1/4, -1/2, -1/4).")
    assert CHECKS["inverse-ratio"].description.endswith(
        "slope 0 +- 0.1 for shared_linear and shared_mlp (exact and over) and independent exact; slope > 0 for "
        "independent over.")


def test_predictions_follow_the_table(monkeypatch):
    """Change one slope in the table: the summaries' prediction and the inverse-ratio prediction follow."""
    assert prediction_for("shared_mlp", "over", "atom_error_multi") == (Prediction(-0.25),
                                                                          "atoms in over-specified cells: shared")
    entry = THEORY_TABLE["shared-over"]
    moved = dataclasses.replace(entry.rates[0], prediction=Prediction(-0.3))
    monkeypatch.setitem(THEORY_TABLE, "shared-over", dataclasses.replace(entry, rates=(moved, *entry.rates[1:])))
    assert prediction_for("shared_mlp", "over", "atom_error_multi")[0] == Prediction(-0.3)
    assert claim("shared-over").statement.endswith("slope -3/10")

    ratio = THEORY_TABLE["inverse-ratio"]
    holds = dataclasses.replace(ratio.rates[0], prediction=Prediction(0.0, tolerance=0.2))
    monkeypatch.setitem(THEORY_TABLE, "inverse-ratio", dataclasses.replace(ratio, rates=(holds, *ratio.rates[1:])))
    assert inverse_ratio_prediction("shared_linear", "exact") == Prediction(0.0, tolerance=0.2)
    assert prediction_for("shared_linear", "exact", "inverse_ratio")[0].tolerance == 0.2


def test_no_prediction_outside_the_table():
    assert prediction_for("shared_learned", "over", "l2_error") == (None, "")  # outside the theorems
    assert prediction_for("not_registered", "exact", "l2_error") == (None, "")
    assert prediction_for("shared_mlp", "both", "l2_error") == (None, "")  # not a regime
    assert prediction_for("independent", "over", "psi") == (None, "")  # the psi rates predict no slope
    assert inverse_ratio_prediction("shared_learned", "exact") is None


def test_the_modules_that_carried_copies_write_no_prediction():
    """Slopes are constructed in reparam/theory.py only; the checks, the structures and the identifiability module
    keep no literal prediction of their own."""
    for module in ("checks.py", "structures.py", "identifiability.py"):
        source = (ROOT / "reparam" / module).read_text(encoding="utf-8")
        assert "Prediction(" not in source, module
        assert not re.search(r"slope -1/[24]|-1/4\b|at -1/2", source), module


@pytest.mark.parametrize("value, text", [(-0.5, "-1/2"), (-0.25, "-1/4"), (0.0, "0"), (-1.0, "-1")])
def test_slope_text(value, text):
    assert slope_text(value) == text


def test_prediction_text():
    assert prediction_text(Prediction(-0.5)) == "-0.50 +- 0.10"
    assert prediction_text(Prediction(-0.25, kind="flatter_than")) == "flatter than -0.25"


@pytest.mark.parametrize("kwargs, message", [
    (dict(origin="someone"), "origin='someone' is invalid"),
    (dict(regimes=("both",)), "regimes=\\('both',\\) is invalid"),
    (dict(note="no slope either"), "exactly one"),
])
def test_a_malformed_rate_is_refused(kwargs, message):
    base = dict(errors=("l2_error",), prediction=Prediction(-0.5), label="x", source="s", origin=PAPER)
    with pytest.raises(ValueError, match=message):
        Rate(**{**base, **kwargs})


def test_an_unknown_claim_names_the_checks():
    with pytest.raises(ValueError, match="check='nope' has no claim"):
        claim("nope")
    with pytest.raises(ValueError, match="error='psi' is not predicted"):
        theory.claim("regression").rate("psi")
