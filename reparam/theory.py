"""The theory table: every prediction the package checks, in one place (docs/theory.md, sections 5 and 7).

One `Claim` per citable check (reparam.checks.CHECKS). A claim holds its `Rate`s: for the structures a rate
selects, in its regimes, the curves named by its error columns have the predicted log-log slope (reparam.rates
.Prediction: "equal" up to a tolerance, or "flatter_than" a value), or no slope at all (the inverse-bound curve
psi(delta), judged by reparam.identifiability). Each rate names its source (the theorem or section it comes from)
and whose claim it is: the paper's (Le et al., ICLR 2025) or this package's.

A rate selects structures by what their class declares (reparam.structures), never by name, so a newly
registered structure gets its predictions without an edit here:
    theory_rows     the family of rates of THEORY section 5 it belongs to: "shared" or "independent" (or None)
    inverse_bound   THEORY section 7 per regime: "holds" or "fails" (or undeclared)

Everything that states a prediction reads this table: the checks (their THEORY row, curves and descriptions), the
summary tables' `theory_row` / `predicted` columns (`prediction_for`), the figures' guides, the inverse-ratio
prediction on fits (reparam.identifiability.inverse_ratio_prediction) and the table in docs/theory.md
(`theory_table_markdown`, written into its `<!-- generated:theory_table -->` block).
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from .rates import Prediction
from .structures import STRUCTURES, StructureSelection, Structure

#: The regimes a rate can be predicted for: exact-specified (L' = L*) and over-specified (L' > L*).
REGIMES = ("exact", "over")
#: Who makes a claim: the paper's theorems, or this package (its own analysis or its operationalisation).
PAPER = "paper"
PACKAGE = "package"


@dataclass(frozen=True)
class Rate:
    """One prediction: for every registered structure whose class matches `theory_rows` (its declared family;
    None: any) and `inverse_bound` (its declaration for the regime; None: any), in each of `regimes`, the curve of
    each error column in `errors` has `prediction` as its slope against n, or, with `prediction` None, what `note`
    says (no slope). `label` is the `theory_row` the summary tables write for such a curve."""

    errors: tuple[str, ...]
    prediction: Prediction | None
    label: str
    source: str
    origin: str
    regimes: tuple[str, ...] = REGIMES
    theory_rows: tuple[str, ...] | None = None
    inverse_bound: str | None = None
    note: str = ""

    def __post_init__(self):
        if self.origin not in (PAPER, PACKAGE):
            raise ValueError(f"origin={self.origin!r} is invalid: must be {PAPER!r} or {PACKAGE!r}")
        if (self.prediction is None) == (not self.note):
            raise ValueError(f"rate {self.label!r}: give a prediction (a slope) or a note (no slope), exactly one")
        unknown = set(self.regimes) - set(REGIMES)
        if unknown:
            raise ValueError(f"regimes={self.regimes!r} is invalid: {sorted(unknown)} not in {REGIMES}")

    def applies(self, cls: type[Structure], regime: str) -> bool:
        """Whether this rate predicts the curves of structure class `cls` in `regime`."""
        return (regime in self.regimes
                and (self.theory_rows is None or cls.theory_rows in self.theory_rows)
                and (self.inverse_bound is None or cls.inverse_bound.get(regime) == self.inverse_bound))

    def structures(self, regime: str) -> list[str]:
        """The registered structures this rate predicts in `regime`, in registry order."""
        return [name for name, cls in STRUCTURES.items() if self.applies(cls, regime)]


@dataclass(frozen=True)
class Claim:
    """One row of the theory as a citable check measures it: `quantity` and its `headline` form the check's THEORY
    row (the headline defaults to the first rate's slope, "slope -1/2"); `section` is the section of docs/theory.md
    that states it."""

    check: str
    quantity: str
    section: int
    rates: tuple[Rate, ...]
    headline: str = ""

    @property
    def statement(self) -> str:
        """The check's THEORY row, e.g. "||f_hat - f*||_L2, all structures: slope -1/2"."""
        return f"{self.quantity}: {self.headline or 'slope ' + slope_text(self.rates[0].prediction.value)}"

    @property
    def regimes(self) -> list[str]:
        """The regimes of its rates, in table order."""
        return _unique(regime for rate in self.rates for regime in rate.regimes)

    @property
    def errors(self) -> list[str]:
        """The error columns of its rates, in table order."""
        return _unique(error for rate in self.rates for error in rate.errors)

    def selection(self) -> StructureSelection:
        """The registered structures some rate of this claim predicts, looked up at every use."""
        return StructureSelection(lambda cls: any(rate.applies(cls, regime) for rate in self.rates
                                                  for regime in rate.regimes), f"claim {self.check!r}")

    def rate(self, error: str) -> Rate:
        """The (first) rate of this claim for `error`."""
        for rate in self.rates:
            if error in rate.errors:
                return rate
        raise ValueError(f"error={error!r} is not predicted by claim {self.check!r}; its errors are {self.errors}")


def _unique(items) -> list:
    out: list = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


def slope_text(value: float) -> str:
    """A slope as the fraction the theory writes: -0.5 -> '-1/2', -0.25 -> '-1/4', 0 -> '0'."""
    return str(Fraction(value).limit_denominator(64))


def prediction_text(prediction: Prediction) -> str:
    """A prediction as the reports print it: '-0.50 +- 0.10' or 'flatter than -0.25'."""
    if prediction.kind == "equal":
        return f"{prediction.value:+.2f} +- {prediction.tolerance:.2f}"
    return f"flatter than {prediction.value:+.2f}"


_SHARED, _INDEPENDENT = ("shared",), ("independent",)
#: Theorem 1's rate is a lower bound; the slope it is compared with is the package's choice (docs/theory.md, section 5).
_THEOREM_1 = "Theorem 1; bound = the shared slope (package's choice)"

#: The theory table: check name -> claim (docs/theory.md renders it, section 5).
THEORY_TABLE: dict[str, Claim] = {claim.check: claim for claim in [
    Claim("regression", "||f_hat - f*||_L2, all structures", 5, (
        Rate(("l2_error",), Prediction(-0.5), "regression: all structures", theory_rows=_SHARED + _INDEPENDENT,
             source="Theorems 1-3 via section 3", origin=PAPER),)),
    Claim("shared-exact", "D, exact-specified cells, shared_linear and shared_mlp", 5, (
        Rate(("voronoi_prefix",), Prediction(-0.5), "D, exact-specified: shared", regimes=("exact",),
             theory_rows=_SHARED, source="Theorems 2, 3", origin=PAPER),)),
    Claim("shared-over", "atoms in over-specified cells, shared_linear and shared_mlp", 5, (
        Rate(("atom_error_multi",), Prediction(-0.25), "atoms in over-specified cells: shared", regimes=("over",),
             theory_rows=_SHARED, source="Theorems 2, 3 (squared terms of D)", origin=PAPER),
        Rate(("voronoi_prefix",), Prediction(-0.5), "D, over-specified: shared", regimes=("over",),
             theory_rows=_SHARED, source="Theorems 2, 3", origin=PAPER))),
    Claim("independent-over", "D_{1,r}, over-specified, independent", 5, (
        Rate(("voronoi_r1_prefix",), Prediction(-0.25, kind="flatter_than"), "D_{1,r} over-specified: independent",
             regimes=("over",), theory_rows=_INDEPENDENT, source=_THEOREM_1, origin=PAPER),
        Rate(("voronoi_r2_prefix",), Prediction(-0.5, kind="flatter_than"), "D_{1,r} over-specified: independent",
             regimes=("over",), theory_rows=_INDEPENDENT, source=_THEOREM_1, origin=PAPER),
        Rate(("atom_error_multi",), Prediction(-0.25, kind="flatter_than"), "D_{1,r} over-specified: independent",
             regimes=("over",), theory_rows=_INDEPENDENT, source=_THEOREM_1, origin=PAPER)),
        headline="slower than any polynomial"),
    Claim("inverse-ratio", "D / ||f_hat - f*|| against n", 7, (
        Rate(("inverse_ratio",), Prediction(0.0, tolerance=0.1), "D / ||f_hat - f*||: inverse bound holds",
             inverse_bound="holds", source="section 7", origin=PACKAGE),
        Rate(("inverse_ratio",), Prediction(0.0, kind="flatter_than"), "D / ||f_hat - f*||: inverse bound fails",
             inverse_bound="fails", source="section 7", origin=PACKAGE)),
        headline="flat where the inverse bound holds, growing where it fails"),
    Claim("inverse-bound", "psi(delta) = min ||f_G - f*|| s.t. D(G, G*) = delta", 7, (
        Rate(("psi",), None, "psi(delta): inverse bound holds", inverse_bound="holds", source="section 7",
             origin=PACKAGE, note="psi(delta) / delta stays away from 0 as delta -> 0"),
        Rate(("psi",), None, "psi(delta): inverse bound fails", inverse_bound="fails", source="section 7",
             origin=PACKAGE, note="psi(delta) = 0 up to round-off")),
        headline="psi/delta bounded as delta -> 0 where the inverse bound holds, psi = 0 where it fails"),
]}


def claim(check: str) -> Claim:
    """The claim behind the citable check `check`."""
    if check not in THEORY_TABLE:
        raise ValueError(f"check={check!r} has no claim in the theory table; choose one of {list(THEORY_TABLE)}")
    return THEORY_TABLE[check]


def prediction_for(structure: str, regime: str, error: str) -> tuple[Prediction | None, str]:
    """The predicted slope of one curve and the label of the rate it comes from; (None, '') where the table
    predicts no slope (an unregistered structure, a regime outside REGIMES, an error no rate names)."""
    cls = STRUCTURES.get(structure)
    if cls is None:
        return None, ""
    for entry in THEORY_TABLE.values():
        for rate in entry.rates:
            if rate.prediction is not None and error in rate.errors and rate.applies(cls, regime):
                return rate.prediction, rate.label
    return None, ""


def _structures_cell(rate: Rate) -> list[tuple[str, str]]:
    """(structures, regimes) cells of one rate: the regimes whose registered structures coincide are merged."""
    cells: list[tuple[list[str], list[str]]] = []
    for regime in rate.regimes:
        names = rate.structures(regime)
        if not names:
            continue
        for members, regimes in cells:
            if members == names:
                regimes.append(regime)
                break
        else:
            cells.append((names, [regime]))
    return [(", ".join(f"`{name}`" for name in members), ", ".join(regimes)) for members, regimes in cells]


def _expected_text(rate: Rate) -> str:
    if rate.prediction is None:
        return f"no slope; {rate.note}"
    if rate.prediction.kind == "equal":
        return f"slope {slope_text(rate.prediction.value)} ± {rate.prediction.tolerance:g}"
    return f"slope flatter than {slope_text(rate.prediction.value)}"


def theory_table_markdown() -> str:
    """The theory table as markdown, one row per rate and group of regimes, with the structures registered now
    (docs/theory.md holds it between `<!-- generated:theory_table -->` markers)."""
    lines = ["| check | structures | regime | error column | prediction | source |",
             "|---|---|---|---|---|---|"]
    for entry in THEORY_TABLE.values():
        for rate in entry.rates:
            errors = ", ".join(f"`{error}`" for error in rate.errors)
            for structures, regimes in _structures_cell(rate):
                lines.append(f"| `{entry.check}` | {structures} | {regimes} | {errors} | {_expected_text(rate)} "
                             f"| {rate.origin}: {rate.source} |")
    return "\n".join(lines)
