"""The planted study's headline (the synthetic study's `figures/headline.png` transposed to attention) and the
psi(delta) figure: the n each structure needs to reach a target prefix error and a target KL, from the recorded
estimates only (measured means, interpolated between measured sizes, never extrapolated)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from reparam.rates import interval_label

#: the errors of the headline: column -> label
HEADLINE_ERRORS = {"rel_dist": "relative prefix distance", "kl": "held-out KL [nats/token]"}


def _means(valid: pd.DataFrame, error: str) -> dict[str, pd.Series]:
    return {s: g.groupby("n")[error].mean().sort_index() for s, g in valid.groupby("structure")}


def n_to_target(est: pd.DataFrame, reference: str = "independent", fixed: dict[str, float] | None = None
                ) -> pd.DataFrame:
    """Per (regime, error, target): the n each structure's mean of VALID estimates needs to stay at or below the
    target (`reparam.plots.samples_to_reach`: interpolated log-linearly between measured n, NaN when never
    reached), and ratio = n(reference) / n(structure). Targets: what `reference` reaches at its largest n
    ("reference") and the `fixed` ones ({error: value}, e.g. rel_dist 0.5)."""
    from reparam.plots import samples_to_reach

    fixed = fixed if fixed is not None else {"rel_dist": 0.5}
    valid = est[est["valid"].astype(bool)]
    rows = []
    for regime, part in valid.groupby("regime"):
        for error in HEADLINE_ERRORS:
            curves = _means(part, error)
            targets = []
            if reference in curves and len(curves[reference]):
                targets.append((f"{reference} at n = {int(curves[reference].index[-1])}",
                                float(curves[reference].iloc[-1])))
            if error in fixed:
                targets.append(("fixed", float(fixed[error])))
            for kind, target in targets:
                needed = {s: samples_to_reach(m, target) for s, m in curves.items()}
                ref = needed.get(reference, np.nan)
                for s, n in needed.items():
                    # already at the target at the smallest measured n: n_needed is an upper bound
                    first = bool(len(curves[s]) and curves[s].iloc[0] <= target)
                    rows.append({"regime": regime, "error": error, "target_kind": kind, "target": target,
                                 "structure": s, "n_needed": n, "reached_at_smallest_n": first,
                                 "ratio_reference_over_structure": ref / n if np.isfinite(n) and np.isfinite(ref)
                                 else np.nan})
    return pd.DataFrame(rows)


def headline_figure(est: pd.DataFrame, regime: str = "exact", reference: str = "independent",
                    structures=("shared_fixed", "embedding_only", "shared", "independent"), xlabel: str = "n"):
    """Two panels (relative prefix distance, held-out KL) of one regime: mean of valid estimates against n with a
    95% Student-t band; the target is what `reference` reaches at its largest n, each structure's marker is the n
    where its measured mean gets there, and the text gives the ratio n(reference) / n(structure)."""
    import matplotlib.pyplot as plt

    from reparam.plots import COLUMN_WIDTH, PANEL_HEIGHT, color_for, samples_to_reach
    from reparam.rates import t_half_width

    part = est[(est.regime == regime) & est["valid"].astype(bool) & est.structure.isin(structures)]
    fig, axes = plt.subplots(1, 2, figsize=(2 * COLUMN_WIDTH, PANEL_HEIGHT + 0.7))
    for ax, (error, label) in zip(axes, HEADLINE_ERRORS.items()):
        curves = {}
        for s in [s for s in structures if s in set(part.structure)]:
            g = part[part.structure == s].groupby("n")[error]
            mean, sd, k = g.mean(), g.std(), g.count()
            half = t_half_width(sd, k)
            curves[s] = mean
            c = color_for(s)
            ax.plot(mean.index, mean, "o-", color=c, label=s)
            ax.fill_between(mean.index, (mean - half).clip(lower=mean * 0.05), mean + half, color=c, alpha=0.18, lw=0)
        if reference in curves:
            target = float(curves[reference].iloc[-1])
            ax.axhline(target, color="k", lw=0.7, ls=":")
            needed = {s: samples_to_reach(m, target) for s, m in curves.items()}
            ref_n = needed[reference]
            lines = [f"target = {target:.3g} ({reference} at n = {int(curves[reference].index[-1])})"]
            for s, n in needed.items():
                if np.isfinite(n):
                    ax.plot([n], [target], marker="v", color=color_for(s), ms=7, ls="none", zorder=5)
                if s != reference:
                    lines.append(f"{s}: n = {n:.3g} ({ref_n / n:.0f}x fewer)" if np.isfinite(n)
                                 else f"{s}: not reached")
            ax.text(0.02, 0.03, "\n".join(lines), transform=ax.transAxes, fontsize=6, va="bottom")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
        ax.grid(True, which="major", alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(loc="upper right", fontsize=7)
    fig.suptitle(f"Planted prefix in attention: structures compared, {regime}-specified (mean of valid fits, 95% band)",
                 fontsize=9)
    fig.tight_layout()
    return fig


def psi_figure(curves: pd.DataFrame, verdicts: pd.DataFrame):
    """psi(delta) / delta against delta, one panel per base (random-init; constant query component), one line per
    (structure, regime); the legend carries the verdict."""
    import matplotlib.pyplot as plt

    from reparam.plots import COLUMN_WIDTH, PANEL_HEIGHT, color_for

    bases = sorted(dict.fromkeys(curves["base"]), key=lambda b: (b != "random_init", b))  # the study's base first
    fig, axes = plt.subplots(1, len(bases), figsize=(COLUMN_WIDTH * len(bases), PANEL_HEIGHT + 0.9), squeeze=False,
                             sharey=True)
    for ax, b in zip(axes[0], bases):
        part = curves[curves.base == b]
        part = part.assign(replicate=part["replicate"].fillna(0).astype(int))
        for (s, g, rep), c in part.groupby(["structure", "regime", "replicate"]):
            c = c.sort_values("delta")
            v = verdicts[(verdicts.base == b) & (verdicts.structure == s) & (verdicts.regime == g)
                         & (verdicts.replicate == rep)]
            label = (f"{s} {g}: {v.iloc[0].verdict}" if len(v) else f"{s} {g}") if rep == part["replicate"].min() \
                else None
            ratio = (c["psi"] / c["delta"]).clip(lower=1e-10)
            ax.plot(c["delta"], ratio, "o-" if g == "exact" else "s--", color=color_for(s), label=label, ms=4)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(r"$\delta$ = relative prefix distance to the truth")
        ax.set_title(b, fontsize=8)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=5.5, loc="lower left")
    axes[0][0].set_ylabel(r"$\psi(\delta)/\delta$,  $\psi$ = min $\sqrt{\mathrm{KL}}$ at distance $\delta$")
    fig.suptitle(r"Inverse bound inside attention: $\psi(\delta)/\delta$ (round-off floored at $10^{-10}$)", fontsize=9)
    fig.tight_layout()
    return fig


def largest_n_table(est: pd.DataFrame) -> pd.DataFrame:
    """Per (structure, regime) at its largest n: mean relative distance and KL of the VALID estimates with 95%
    Student-t intervals, and how many fits were valid, converged and at the iteration cap."""
    from reparam.rates import mean_half_width

    rows = []
    for (s, g), part in est.groupby(["structure", "regime"]):
        n = part["n"].max()
        at = part[part["n"] == n]
        v = at[at["valid"].astype(bool)]
        row = {"structure": s, "regime": g, "n": int(n), "fits": len(at), "valid": len(v),
               "converged": int(at["converged"].sum()) if "converged" in at else np.nan,
               "at_cap": int((at["iterations"] >= at["max_iter"]).sum()) if "max_iter" in at else np.nan,
               "grad_max_median": float(at["grad_max"].median())}
        for error in ("rel_dist", "kl"):
            x = v[error].to_numpy(float)
            mean = x.mean() if len(x) else np.nan
            half = mean_half_width(x)
            row.update({f"{error}_mean": mean, f"{error}_lo": mean - half, f"{error}_hi": mean + half})
        rows.append(row)
    return pd.DataFrame(rows)


def report_markdown(est: pd.DataFrame, slopes: pd.DataFrame, n2t: pd.DataFrame) -> str:
    """The closing note of a planted study, rendered from its tables (README block generated:planted-asymptotic)."""
    big = largest_n_table(est)
    lines = ["| structure | regime | n | rel. distance [95% CI] | held-out KL [95% CI] | valid | converged | at cap |",
             "|---|---|---|---|---|---|---|---|"]
    for _, r in big.sort_values(["regime", "structure"]).iterrows():
        if r.valid:
            cells = (f"{r.rel_dist_mean:.3g} [{r.rel_dist_lo:.3g}, {r.rel_dist_hi:.3g}] | "
                     f"{r.kl_mean:.2e} [{r.kl_lo:.2e}, {r.kl_hi:.2e}]")
        else:
            cells = "no valid fit | no valid fit"
        lines.append(f"| `{r.structure}` | {r.regime} | {r.n} | {cells} | {r.valid}/{r.fits} | "
                     f"{r.converged}/{r.fits} | {r.at_cap}/{r.fits} |")
    out = "\n".join(lines)
    lines = ["| structure | regime | rel. distance | Voronoi | held-out KL (THEORY: -1) |", "|---|---|---|---|---|"]
    for (s, g), part in (slopes.groupby(["structure", "regime"]) if len(slopes) else []):
        cells = []
        for error in ("rel_dist", "voronoi", "kl"):
            r = part[part.error == error]
            if r.empty:
                cells.append("-")
                continue
            r = r.iloc[0]
            verdict = f" **{r.verdict}**" if r.verdict not in ("measured",) else ""
            cells.append(f"{r.slope:+.2f} [{r.slope_lo:+.2f}, {r.slope_hi:+.2f}]{verdict}")
        lines.append(f"| `{s}` | {g} | " + " | ".join(cells) + " |")
    out += (f"\n\nSlopes in n [{interval_label()}] over the valid fits (verdicts where THEORY predicts a slope; "
            "'insufficient': fewer than 5 valid replicates at some n):\n\n")
    out += "\n".join(lines)
    lines = ["| regime | error | target | structure | n needed | n(independent) / n(structure) |",
             "|---|---|---|---|---|---|"]
    for _, r in (n2t.sort_values(["regime", "error", "target_kind", "structure"]).iterrows() if len(n2t) else []):
        first = bool(r.get("reached_at_smallest_n", False)) and r.structure != "independent"
        n = (("<= " if first else "") + f"{r.n_needed:.3g}") if np.isfinite(r.n_needed) else "not reached"
        ratio = ((">= " if first else "") + f"{r.ratio_reference_over_structure:.3g}"
                 if np.isfinite(r.ratio_reference_over_structure) else "-")
        lines.append(f"| {r.regime} | {r.error} | {r.target:.3g} ({r.target_kind}) | `{r.structure}` | {n} | {ratio} |")
    out += ("\n\nThe n each structure's mean of valid fits needs to reach a target (interpolated between measured "
            "sizes, never extrapolated; '<=': already there at the smallest n, so the ratio is a lower bound):\n\n"
            + "\n".join(lines))
    return out
