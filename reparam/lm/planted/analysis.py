"""Tables and verdicts of the planted study, from the recorded fits only: estimates, the truths' scales, slopes
with their intervals (reparam.rates.DEFAULT_INTERVAL), and the markdown verdict table."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ...theory import claim
from ..prefix import head_atoms
from ..structures import STRUCTURES, get_structure
from .estimator import PlantedStudy, prefix_errors
from .model import make_base


@dataclass
class StudyConfig:
    """Sizes and replicates. A replicate r fixes the truth, the data stream and the starts (the base is shared).

    ns: sample sizes, distinct; nested: the n rows are the first n of the largest. What n counts is `axis`.
    axis: sequences (n = input sequences, every one with planted.draws sampled tokens per position) | draws
        (n = sampled tokens per position, on the first `sequences` input sequences; the first n draws of
        planted.draws, which must be >= max(ns)). Either way the sample has n x const x seq_len tokens, so the
        slopes in n are the slopes in the number of sampled tokens (column `tokens`).
    sequences: input sequences of every size when axis=draws (ignored for axis=sequences).
    replicates: replicate numbers, distinct, >= 0.
    min_replicates: fewer valid replicates at some n -> verdict "insufficient" (>= 2).
    min_sizes: fewer sizes -> verdict "insufficient" (>= 2).
    """

    ns: list[int] = field(default_factory=lambda: [2, 4, 8, 16, 32, 64])
    replicates: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    min_replicates: int = 5
    min_sizes: int = 5
    axis: str = "sequences"
    sequences: int = 64

    def __post_init__(self):
        if self.axis not in ("sequences", "draws"):
            raise ValueError(f"StudyConfig.axis={self.axis!r} must be sequences or draws")
        if int(self.sequences) < 1:
            raise ValueError(f"StudyConfig.sequences={self.sequences} must be >= 1")
        self.ns, self.replicates = [int(n) for n in self.ns], [int(r) for r in self.replicates]
        if not self.ns or min(self.ns) < 1 or len(set(self.ns)) != len(self.ns):
            raise ValueError(f"StudyConfig.ns={self.ns} must be distinct integers >= 1")
        if not self.replicates or min(self.replicates) < 0 or len(set(self.replicates)) != len(self.replicates):
            raise ValueError(f"StudyConfig.replicates={self.replicates} must be distinct integers >= 0")
        if self.min_replicates < 2 or self.min_sizes < 2:
            raise ValueError(f"StudyConfig.min_replicates={self.min_replicates} and min_sizes={self.min_sizes} "
                             f"must be >= 2 (a slope interval needs two sizes and two replicates)")


#: error columns of a fit: label for the tables (the figures' labels are reparam.plots.PLANTED_LABELS)
ERRORS = {
    "voronoi": "per-head Voronoi loss, prefix space",
    "rel_dist": "relative prefix distance (per head)",
    "kl": "held-out KL(teacher || student) [nats/token]",
    "inverse_ratio": "Voronoi loss / sqrt(held-out KL)",
}


#: THEORY section 5, first row (the theory table's `regression` rate, -1/2 for EVERY structure and regime); the
#: held-out KL is (locally) a squared distance of the outputs, so its slope is twice that, -1 (up to log factors)
KL_SLOPE = 2 * claim("regression").rate("l2_error").prediction.value


def predictions() -> dict[tuple[str, str, str], float]:
    """THEORY section 5 predictions checked here, {(structure, regime, error): slope}: the prefix-space slopes the
    registered structures declare (`planted_predictions`) and the KL slope -1 of every planted structure and
    regime (`KL_SLOPE`); the rest is measured and reported without a verdict."""
    out = {(name, regime, "kl"): KL_SLOPE for name, cls in STRUCTURES.items() if "planted" in cls.studies
           for regime in ("exact", "over")}
    out.update({(name, regime, error): slope for name, cls in STRUCTURES.items()
                for (regime, error), slope in cls.planted_predictions.items()})
    return out


def estimates(fits):
    """One row per fit: the selected start, with `inverse_ratio` = voronoi / sqrt(kl) (THEORY section 7: bounded
    in n where the inverse bound holds, growing where it fails) and the fit's count of valid starts."""
    import pandas as pd

    fits = pd.DataFrame(fits)
    key = ["structure", "regime", "n", "replicate"]
    n_valid = fits.groupby(key)["valid"].sum().rename("valid_starts").reset_index()
    est = fits[fits["selected"].astype(bool)].merge(n_valid, on=key, how="left")
    est["inverse_ratio"] = est["voronoi"] / np.sqrt(est["kl"].clip(lower=1e-300))
    return est.sort_values(key).reset_index(drop=True)


def truth_references(settings: dict):
    """The scale of each planted truth, recomputed from the configuration (no fit): one row per (truth family,
    replicate, student prefix length L) of the configured study.

    ``voronoi_zero`` = D(0_L, G*): the per-head Voronoi loss (`prefix_errors`) of the all-zero prefix with L
    positions against the truth, i.e. the truth's own size measured by the same loss; ``truth_atom_rms``: RMS norm of
    a true atom ([key; value] of one position in one head); ``kl_bare``: held-out KL(teacher || bare base model),
    the KL of using no prefix at all. ``kl_bare`` is what the fits recorded as ``kl_truth_vs_base``:
    `add_normalised_errors` checks the two agree, so a reference can only belong to the recorded truth.
    """
    import pandas as pd

    base_cfg, pc, fc, sc = (settings[k] for k in ("base", "planted", "fit", "study"))
    base = make_base(base_cfg)
    lengths = sorted({pc.prefix_len + (pc.extra if g == "over" else 0) for g in pc.regimes})
    rows = []
    for r in sc.replicates:
        study = PlantedStudy(base, pc, fc, r, n_max=1)  # truths and held-out set only (data of one row)
        for family, truth in study.truths.items():
            shape = list(truth.kv.shape)
            for L in lengths:
                zero = torch.zeros(shape[:3] + [L] + shape[4:], dtype=torch.float64)
                rows.append({"truth": family, "replicate": int(r), "prefix_len": L,
                             "voronoi_zero": prefix_errors(zero, truth.kv)["voronoi"],
                             "truth_atom_rms": float(head_atoms(truth.kv).pow(2).sum(-1).mean().sqrt()),
                             "kl_bare": study.truth_kl_base[family]})
    return pd.DataFrame(rows)


def add_normalised_errors(est, refs, rtol: float = 1e-6):
    """`est` with ``voronoi_rel`` = voronoi / c and ``inverse_ratio_rel`` = voronoi_rel / sqrt(kl), where c is the
    mean over the study's replicates of D(0_L, G*) for the row's truth family and prefix length (`truth_references`):
    the Voronoi loss in units of the all-zero prefix's (1 = no closer to the truth than the origin). c is one
    number per (structure, regime) curve, so every log-log slope is the one of the unnormalised column.
    Raises DataError when a recorded ``kl_truth_vs_base`` differs from the recomputed truth's ``kl_bare``."""
    from reparam.validation import DataError

    check = est[["truth", "replicate", "kl_truth_vs_base"]].drop_duplicates(["truth", "replicate"]).merge(
        refs[["truth", "replicate", "kl_bare"]].drop_duplicates(["truth", "replicate"]), how="left")
    bad = check[~np.isclose(check["kl_truth_vs_base"], check["kl_bare"], rtol=rtol, atol=0)]
    if len(bad):
        r = bad.iloc[0]
        raise DataError(f"the recomputed {r.truth} truth of replicate {r.replicate} is not the recorded one "
                        f"(KL of the bare model {r.kl_bare} vs recorded {r.kl_truth_vs_base}): draw with the "
                        "settings of the recorded study")
    scale = refs.groupby(["truth", "prefix_len"])["voronoi_zero"].mean().rename("voronoi_scale").reset_index()
    out = est.merge(scale, on=["truth", "prefix_len"], how="left")
    out["voronoi_rel"] = out["voronoi"] / out["voronoi_scale"]
    out["inverse_ratio_rel"] = out["voronoi_rel"] / np.sqrt(out["kl"].clip(lower=1e-300))
    return out


def slope_table(est, sc: StudyConfig, n_boot: int = 2000, level: float = 0.95):
    """Slopes with intervals (reparam.rates.DEFAULT_INTERVAL) on VALID estimates, per (structure, regime, error), and verdicts.

    verdict: 'insufficient' when fewer than `sc.min_sizes` sizes or, at some size, fewer than
    `sc.min_replicates` valid replicates; else reparam.rates.verdict against THEORY's slope where the structure
    declares one (`predictions`), and 'measured' elsewhere.
    """
    import pandas as pd

    from reparam.rates import Prediction, fit_slopes, verdict

    valid = est[est["valid"].astype(bool)]
    declared = predictions()
    rows = []
    for error in ERRORS:
        sl = fit_slopes(valid, error, ["structure", "regime"], n_boot=n_boot, level=level)
        for _, r in sl.iterrows():
            part = valid[(valid.structure == r.structure) & (valid.regime == r.regime)]
            per_n = part.groupby("n")["replicate"].nunique()
            allf = est[(est.structure == r.structure) & (est.regime == r.regime)]
            pred = declared.get((r.structure, r.regime, error))
            enough = len(per_n) >= sc.min_sizes and per_n.min() >= sc.min_replicates if len(per_n) else False
            if not enough:
                v = "insufficient"
            elif pred is None:
                v = "measured"
            else:
                v = verdict(r.slope_lo, r.slope_hi, Prediction(pred), slope=r.slope)
            rows.append({**r.to_dict(), "predicted": pred if pred is not None else np.nan, "verdict": v,
                         "valid_share": float(allf["valid"].mean()) if len(allf) else np.nan,
                         "min_valid_replicates": int(per_n.min()) if len(per_n) else 0,
                         "in_theorems": get_structure(r.structure).in_theorems})
    if not rows:  # no valid fits anywhere: an empty table with the columns the figures and reports read
        return pd.DataFrame(columns=["structure", "regime", "error", "slope", "slope_lo", "slope_hi", "predicted",
                                     "verdict", "valid_share", "min_valid_replicates", "in_theorems"])
    return pd.DataFrame(rows)


def check_lines(slopes) -> str:
    """The printed verdict table (markdown)."""
    from reparam.rates import interval_label

    lines = [f"| structure | regime | error | slope [{interval_label()}] | predicted | verdict | valid fits "
             "| in theorems |",
             "|---|---|---|---|---|---|---|---|"]
    for _, r in slopes.sort_values(["error", "regime", "structure"]).iterrows():
        pred = f"{r.predicted:+.2f}" if np.isfinite(r.predicted) else "-"
        lines.append(f"| {r.structure} | {r.regime} | {r.error} | {r.slope:+.2f} [{r.slope_lo:+.2f}, {r.slope_hi:+.2f}] "
                     f"| {pred} | {r.verdict} | {r.valid_share:.0%} | {'yes' if r.in_theorems else 'no'} |")
    return "\n".join(lines)
