"""Every figure, drawn from tidy tables only (never from in-memory fit objects).

One color per structure across every figure (`color_for`). Only VALID fits (optimality gap <= tolerance,
`reparam.checks.valid_mask`) are averaged; study figures mark at each n how many fits were excluded.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

STRUCTURE_COLORS = {
    "shared_mlp": "#1b9e77",
    "shared_linear": "#7570b3",
    "independent": "#d95f02",
    "shared_learned": "#e7298a",
    "shared": "#1b9e77",
    "deep_shared": "#66a61e",
    "embedding_only": "#e6ab02",
    "infix": "#1f78b4",
}
_EXTRA = ["#e6ab02", "#a6761d", "#666666", "#1f78b4"]


def color_for(name: str) -> str:
    if name in STRUCTURE_COLORS:
        return STRUCTURE_COLORS[name]
    return _EXTRA[sum(map(ord, str(name))) % len(_EXTRA)]


def _band(group: pd.DataFrame, error: str, level: float = 0.95) -> pd.DataFrame:
    """Mean and a normal-approximation confidence band of the mean, per n."""
    from scipy import stats

    agg = group.groupby("n")[error].agg(["mean", "std", "count"]).sort_index()
    z = stats.norm.ppf(0.5 + level / 2)
    half = z * agg["std"].fillna(0) / np.sqrt(agg["count"])
    agg["lo"] = (agg["mean"] - half).clip(lower=agg["mean"] * 0.05)
    agg["hi"] = agg["mean"] + half
    return agg


def draw_error_vs_n(ax, df: pd.DataFrame, error: str, *, group: str = "structure", slopes: pd.DataFrame | None = None,
                    theory_slopes: dict[str, float] | None = None, ylabel: str | None = None, title: str | None = None):
    """Draw log-log mean error (with 95% band) against n on `ax`, one line per value of `group`."""
    for name, g in df.groupby(group, sort=True):
        g = g[np.isfinite(g[error])]
        if g.empty:
            continue
        agg = _band(g, error)
        label = str(name)
        if slopes is not None:
            s = slopes[slopes[group] == name]
            if len(s) and np.isfinite(s["slope"].iloc[0]):
                r = s.iloc[0]
                label += f": slope {r['slope']:+.2f} [{r['slope_lo']:+.2f}, {r['slope_hi']:+.2f}]"
        ax.plot(agg.index, agg["mean"], "o-", color=color_for(name), label=label, lw=1.8, ms=4)
        ax.fill_between(agg.index, agg["lo"], agg["hi"], color=color_for(name), alpha=0.18, lw=0)
    if theory_slopes and len(df):
        finite = df[np.isfinite(df[error])]
        n0 = finite["n"].min()
        y0 = finite.groupby("n")[error].mean().max()
        ns = np.array([finite["n"].min(), finite["n"].max()], dtype=float)
        for label, slope in theory_slopes.items():
            ax.plot(ns, y0 * (ns / n0) ** slope, "k--", lw=1, alpha=0.6)
            ax.annotate(label, (ns[-1], y0 * (ns[-1] / n0) ** slope), fontsize=8, alpha=0.8,
                        xytext=(3, 0), textcoords="offset points", va="center")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("sample size n")
    ax.set_ylabel(ylabel or error)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="best")
    return ax


def error_vs_n(df: pd.DataFrame, error: str, *, group: str = "structure", panel: str | None = None,
               slopes: pd.DataFrame | None = None, theory_slopes: dict[str, float] | None = None,
               ylabel: str | None = None, title: str | None = None):
    """A figure of log-log error against n; one panel per value of `panel` (if given). `slopes` is a table
    from rates.fit_slopes grouped by [panel, group] (or [group]) whose slopes go into the legends."""
    panels = sorted(df[panel].unique()) if panel else [None]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for ax, value in zip(axes[0], panels):
        part = df if value is None else df[df[panel] == value]
        part_slopes = slopes
        if slopes is not None and value is not None and panel in slopes.columns:
            part_slopes = slopes[slopes[panel] == value]
        sub = title if value is None else f"{title + ' - ' if title else ''}{panel} = {value}"
        draw_error_vs_n(ax, part, error, group=group, slopes=part_slopes, theory_slopes=theory_slopes,
                        ylabel=ylabel, title=sub)
    fig.tight_layout()
    return fig


def save_figure(fig, stem: str | Path) -> list[Path]:
    """Write stem.png and stem.pdf and close the figure."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for path in paths:
        fig.savefig(path, dpi=150 if path.suffix == ".png" else None, bbox_inches="tight")
    plt.close(fig)
    return paths


# --------------------------------------------------------------------------------------------------
# Study figures (sims/): drawn from results.csv and summary.csv only.

_REGIME_TITLES = {"exact": "exact-specified (L' = L*)", "over": "over-specified (L' > L*)"}


def _slope_label(summary: pd.DataFrame | None, structure: str, regime: str, error: str) -> str:
    if summary is None or summary.empty:
        return ""
    s = summary[(summary.structure == structure) & (summary.regime == regime) & (summary.error == error)]
    if s.empty or not np.isfinite(s["slope"].iloc[0]):
        return ""
    r = s.iloc[0]
    return f": slope {r['slope']:+.2f} [{r['slope_lo']:+.2f}, {r['slope_hi']:+.2f}]"


def draw_study_curves(ax, results: pd.DataFrame, error: str, regime: str, summary: pd.DataFrame | None = None,
                      guides: dict[str, float] | None = None, ylabel: str | None = None, title: str | None = None):
    """Mean of valid fits with a 95% band per structure; invalid fits (positive optimality gap) are excluded
    and marked (count written next to the point at that n, total in the legend); theory slopes as guides."""
    from .checks import valid_mask
    part = results[results.regime == regime]
    anchor = None
    for structure in sorted(part.structure.unique()):
        g_all = part[part.structure == structure]
        ok = valid_mask(g_all)
        g = g_all[ok & np.isfinite(g_all[error].astype(float))]
        failed = g_all[~ok].groupby("n").size()
        label = structure + _slope_label(summary, structure, regime, error)
        if len(failed):
            label += f"  ({int(failed.sum())}/{len(g_all)} invalid, excluded)"
        color = color_for(structure)
        if g.empty:
            continue
        agg = _band(g, error)
        ax.plot(agg.index, agg["mean"], "o-", color=color, label=label, lw=1.8, ms=4)
        ax.fill_between(agg.index, agg["lo"], agg["hi"], color=color, alpha=0.18, lw=0)
        for n, count in failed.items():
            if n in agg.index:
                ax.plot([n], [agg.loc[n, "mean"]], marker="x", color=color, ms=8, mew=1.5, ls="none")
                ax.annotate(f"{count} excl.", (n, agg.loc[n, "mean"]), xytext=(4, 4), textcoords="offset points",
                            fontsize=6, color=color)
        if anchor is None or agg["mean"].iloc[0] > anchor[1]:
            anchor = (agg.index[0], agg["mean"].iloc[0], agg.index[-1])
    if guides and anchor is not None:
        n0, y0, n1 = anchor
        ns = np.array([n0, n1], dtype=float)
        for text, slope in guides.items():
            ax.plot(ns, 1.3 * y0 * (ns / n0) ** slope, "k--", lw=1, alpha=0.6)
            ax.annotate(text, (ns[-1], 1.3 * y0 * (ns[-1] / n0) ** slope), fontsize=7, alpha=0.8,
                        xytext=(3, 0), textcoords="offset points", va="center")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("sample size n")
    ax.set_ylabel(ylabel or error)
    ax.set_title(title or _REGIME_TITLES.get(regime, regime), fontsize=9)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=6.5, loc="lower left")
    return ax


def study_error_figure(results: pd.DataFrame, summary: pd.DataFrame | None, error: str, regimes: list[str],
                       guides: dict[str, float], ylabel: str, suptitle: str):
    """One panel per regime of log-log `error` against n."""
    regimes = [r for r in regimes if r in set(results.regime)]
    fig, axes = plt.subplots(1, len(regimes), figsize=(5.6 * len(regimes), 4.4), squeeze=False, sharey=True)
    for ax, regime in zip(axes[0], regimes):
        draw_study_curves(ax, results, error, regime, summary, guides, ylabel=ylabel)
    fig.suptitle(suptitle + "   (mean of valid fits, 95% band; x = n where invalid fits were excluded)", fontsize=9)
    fig.tight_layout()
    return fig


def sample_complexity_figure(results: pd.DataFrame, summary: pd.DataFrame, error: str = "voronoi_prefix",
                             regimes: tuple[str, ...] = ("exact", "over")):
    """n needed to reach a target error, from each fitted law mean = exp(intercept) * n^slope: solid inside
    the measured range of errors, dashed (and labelled) where it is an extrapolation; dots = measured means."""
    from .checks import valid_mask
    regimes = [r for r in regimes if r in set(results.regime)]
    fig, axes = plt.subplots(1, len(regimes), figsize=(5.6 * len(regimes), 4.4), squeeze=False)
    for ax, regime in zip(axes[0], regimes):
        part = results[(results.regime == regime) & valid_mask(results)]
        for structure in sorted(part.structure.unique()):
            s = summary[(summary.structure == structure) & (summary.regime == regime) & (summary.error == error)]
            g = part[part.structure == structure]
            means = g.groupby("n")[error].mean().dropna()
            if s.empty or means.empty:
                continue
            r, color = s.iloc[0], color_for(structure)
            ax.plot(means.to_numpy(), means.index.to_numpy(), "o", color=color, ms=4)
            if not (np.isfinite(r["slope"]) and r["slope"] < 0):
                ax.plot([], [], color=color, label=f"{structure}: slope {r['slope']:+.2f} >= 0, no finite n")
                continue
            lo, hi = means.min(), means.max()
            inside = np.geomspace(lo, hi, 50)
            outside = np.geomspace(lo / 10, lo, 50)
            n_of = lambda eps: np.exp((np.log(eps) - r["intercept"]) / r["slope"])  # noqa: E731
            ax.plot(inside, n_of(inside), "-", color=color, lw=1.8,
                    label=f"{structure}: n ~ eps^({1 / r['slope']:.1f})")
            ax.plot(outside, n_of(outside), "--", color=color, lw=1.4, alpha=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.invert_xaxis()
        ax.set_xlabel(f"target error eps ({error})")
        ax.set_ylabel("samples n needed")
        ax.set_title(f"sample complexity, {_REGIME_TITLES.get(regime, regime)}", fontsize=9)
        ax.grid(True, which="both", alpha=0.25)
        ax.plot([], [], "k--", label="dashed: EXTRAPOLATED beyond the measured n (fitted law)")
        ax.plot([], [], "ko", ms=4, label="dots: measured mean error at each n")
        ax.legend(fontsize=6.5, loc="upper left")
    fig.tight_layout()
    return fig


STUDY_FIGURES = {
    # stem: (error, regimes, guides, ylabel, title)
    "convergence_voronoi": ("voronoi_prefix", ["exact", "over"], {"-1/2": -0.5, "-1/4": -0.25},
                            "Voronoi loss D in prefix space (k, v)", "Parameter estimation"),
    "convergence_regression": ("l2_error", ["exact", "over"], {"-1/2": -0.5},
                               "||f_hat - f*||_L2", "Regression error (all structures ~ -1/2)"),
    "convergence_atoms_over": ("atom_error_multi", ["over"], {"-1/2": -0.5, "-1/4": -0.25},
                               "max distance of atoms in multi-atom cells", "Over-specified cells"),
    "convergence_d1r_over": ("voronoi_r1_prefix", ["over"], {"-1/2": -0.5, "-1/4": -0.25},
                             "D_{1,1} in prefix space", "D_{1,r}, r = 1"),
}


def study_figures(results: pd.DataFrame, summary: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Every figure of a study (PNG and PDF) into out_dir; returns the paths written."""
    out_dir = Path(out_dir)
    paths = []
    if results["n"].nunique() < 2:
        return paths
    for stem, (error, regimes, guides, ylabel, title) in STUDY_FIGURES.items():
        if error not in results.columns or not (set(regimes) & set(results.regime)):
            continue
        paths += save_figure(study_error_figure(results, summary, error, regimes, guides, ylabel, title), out_dir / stem)
    paths += save_figure(sample_complexity_figure(results, summary), out_dir / "sample_complexity")
    return paths


ROBUSTNESS_PANELS = [  # (error, regime, theory slope, kind)
    ("voronoi_prefix", "exact", -0.5, "equal"),
    ("voronoi_prefix", "over", -0.5, "equal"),
    ("atom_error_multi", "over", -0.25, "equal"),
    ("l2_error", "over", -0.5, "equal"),
]


def robustness_figure(slopes: pd.DataFrame):
    """Distribution over random truths of the fitted slope, per structure (one dot per truth, box = quartiles);
    dashed line = THEORY slope for the shared structures."""
    fig, axes = plt.subplots(1, len(ROBUSTNESS_PANELS), figsize=(4.2 * len(ROBUSTNESS_PANELS), 4.0), squeeze=False)
    structures = sorted(slopes.structure.unique())
    rng = np.random.default_rng(0)
    for ax, (error, regime, theory, _) in zip(axes[0], ROBUSTNESS_PANELS):
        part = slopes[(slopes.error == error) & (slopes.regime == regime)]
        data = [part[part.structure == s]["slope"].dropna().to_numpy() for s in structures]
        ax.boxplot([d if len(d) else [np.nan] for d in data], positions=range(len(structures)), widths=0.5,
                   showfliers=False)
        lo_lim, hi_lim = -2.0, 1.0  # slopes outside are drawn at the edge as triangles and counted
        for i, (s, d) in enumerate(zip(structures, data)):
            inside = d[(d >= lo_lim) & (d <= hi_lim)]
            ax.plot(i + rng.uniform(-0.15, 0.15, len(inside)), inside, "o", color=color_for(s), ms=3.5, alpha=0.8)
            for edge, marker, sel in ((lo_lim, "v", d < lo_lim), (hi_lim, "^", d > hi_lim)):
                if sel.any():
                    ax.plot([i], [edge], marker, color=color_for(s), ms=6)
                    ax.annotate(f"{int(sel.sum())} off-scale ({d[sel].min():+.1f})" if edge == lo_lim
                                else f"{int(sel.sum())} off-scale ({d[sel].max():+.1f})", (i, edge),
                                xytext=(5, 4 if edge == lo_lim else -10), textcoords="offset points", fontsize=6)
        ax.set_ylim(lo_lim - 0.1, hi_lim + 0.1)
        ax.axhline(theory, color="k", ls="--", lw=1, alpha=0.6)
        ax.axhline(0, color="grey", lw=0.6, alpha=0.6)
        ax.set_xticks(range(len(structures)))
        ax.set_xticklabels(structures, fontsize=7)
        ax.set_ylabel("fitted log-log slope")
        n_truths = part.truth.nunique() if "truth" in part.columns else 0
        ax.set_title(f"{error}, {regime}\n({n_truths} random truths; dashed = THEORY {theory:+.2f})", fontsize=8)
        ax.grid(True, axis="y", alpha=0.25)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- low-data protocol (real transformers)

def low_data_scores_figure(summary: pd.DataFrame, metric: str, ylabel: str | None = None, title: str | None = None,
                           panel: str = "init"):
    """Mean +- sd over replicates of `metric` against n, one line per structure, one panel per `panel` value.

    summary: columns panel, structure, n, <metric>_mean, <metric>_sd, replicates. n on a log axis, the score
    on a LINEAR axis (scores are bounded; a log axis would stretch the small differences at the top).
    """
    panels = sorted(summary[panel].unique())
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False, sharey=True)
    for ax, value in zip(axes[0], panels):
        d = summary[summary[panel] == value]
        for structure, g in d.groupby("structure"):
            g = g.sort_values("n")
            mean, sd = g[f"{metric}_mean"].to_numpy(), g[f"{metric}_sd"].fillna(0).to_numpy()
            ax.plot(g["n"], mean, "o-", color=color_for(structure), label=f"{structure}")
            ax.fill_between(g["n"], mean - sd, mean + sd, color=color_for(structure), alpha=0.15, lw=0)
        ax.set_xscale("log")
        ax.set_xticks(sorted(d["n"].unique()))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("training examples n")
        ax.set_title(f"{panel} = {value}", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel or metric)
    axes[0][-1].legend(fontsize=7)
    if title:
        fig.suptitle(f"{title} (mean +- sd over replicates)", fontsize=10)
    fig.tight_layout()
    return fig


def low_data_paired_figure(paired: pd.DataFrame, metrics: list[str], labels: dict[str, str] | None = None,
                           title: str | None = None, panel: str = "init"):
    """Paired difference (structure - baseline) against n with its bootstrap interval; one row of panels per
    metric, one column per `panel` value. paired: `reparam.lm.compare.paired_differences` output. n on a
    log axis, the difference on a linear axis; the zero line is "no difference"."""
    panels = sorted(paired[panel].unique())
    fig, axes = plt.subplots(len(metrics), len(panels), figsize=(4.2 * len(panels), 2.6 * len(metrics)),
                             squeeze=False, sharex=True)
    for i, metric in enumerate(metrics):
        for j, value in enumerate(panels):
            ax = axes[i][j]
            d = paired[(paired.metric == metric) & (paired[panel] == value)]
            structures = sorted(d.structure.unique())
            for s_i, (structure, g) in enumerate(d.groupby("structure")):
                g = g.sort_values("n")
                x = g["n"].to_numpy() * (1 + 0.04 * (s_i - (len(structures) - 1) / 2))  # dodge overlapping bars
                err = np.vstack([g["mean_diff"] - g["ci_low"], g["ci_high"] - g["mean_diff"]]).clip(min=0)
                ax.errorbar(x, g["mean_diff"], yerr=np.nan_to_num(err), fmt="o-", ms=3, capsize=2,
                            color=color_for(structure), label=f"{structure} - {g['baseline'].iloc[0]}")
            ax.axhline(0.0, color="k", lw=0.8)
            ax.set_xscale("log")
            if len(d):
                ax.set_xticks(sorted(d["n"].unique()))
                ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_ylabel(f"diff. {(labels or {}).get(metric, metric)}", fontsize=8)
            if i == 0:
                ax.set_title(f"{panel} = {value}", fontsize=9)
            if i == len(metrics) - 1:
                ax.set_xlabel("training examples n")
    axes[0][-1].legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- identifiability (THEORY section 7)

def inverse_bound_figure(curve: pd.DataFrame, floor: float = 1e-10):
    """psi(delta) = min ||f_G - f*|| s.t. D(G, G*) = delta against delta, log-log, from the curve table of
    reparam.identifiability.inverse_bound_study: one panel per regime, one colour per structure, solid = injective
    key map (latent_dim <= d), dashed = latent_dim > d; the grey band is round-off (psi <= floor, psi = 0 there),
    the dotted line psi = delta is the reference slope 1."""
    regimes = [r for r in ("exact", "over") if r in set(curve.regime)]
    fig, axes = plt.subplots(1, len(regimes), figsize=(5.6 * len(regimes), 4.4), squeeze=False, sharey=True)
    lowest = max(float(curve["psi"][curve["psi"] > 0].min()) / 10, 1e-18)
    for ax, regime in zip(axes[0], regimes):
        part = curve[curve.regime == regime]
        for (structure, latent_dim), g in part.groupby(["structure", "latent_dim"], sort=True):
            g = g.sort_values("delta")
            injective = structure == "independent" or latent_dim <= 2
            label = structure + ("" if structure == "independent" else f", r = {latent_dim}")
            ax.plot(g["delta"], g["psi"].clip(lower=lowest), "o-" if injective else "s--", color=color_for(structure),
                    label=label, lw=1.6, ms=4, mfc=None if injective else "none")
        deltas = np.array([part["delta"].min(), part["delta"].max()])
        ax.plot(deltas, deltas, "k:", lw=1, label="psi = delta (slope 1)")
        ax.axhspan(lowest, floor, color="grey", alpha=0.15, lw=0)
        ax.annotate(f"round-off (psi <= {floor:g}): psi = 0", (deltas[0], floor), xytext=(2, -10),
                    textcoords="offset points", fontsize=7, color="dimgrey")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("D(G, G*) = delta")
        ax.set_ylabel("psi(delta) = min ||f_G - f_G*||_L2(mu)")
        ax.set_title(_REGIME_TITLES.get(regime, regime), fontsize=9)
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=6.5, loc="center right")
    fig.suptitle("Inverse bound: psi / delta bounded away from 0 where it holds, psi = 0 where it fails", fontsize=9)
    fig.tight_layout()
    return fig


def inverse_ratio_figure(results: pd.DataFrame, summary: pd.DataFrame | None = None):
    """D / ||f_hat - f*|| of valid fits against n (the column `inverse_ratio`, reparam.identifiability.add_inverse_ratio),
    one panel per regime, with its slope from `summary` in the legend: flat where the inverse bound holds."""
    return study_error_figure(results, summary, "inverse_ratio", ["exact", "over"], {"flat": 0.0},
                              "D / ||f_hat - f*||", "Inverse bound on the fits")


# ----------------------------------------------------------------------------- planted prefix (real transformers)

def prefix_error_vs_kl_figure(df: pd.DataFrame, error: str, kl: str = "kl", panel: str = "regime",
                              group: str = "structure"):
    """THEORY section 7's "flat valley": prefix-space error against held-out KL, one point per fit, one color per
    structure, one panel per `panel` value (log-log). Where the inverse bound holds the points fall along a line
    (error shrinks with KL); where it fails they stay high while KL goes to 0."""
    panels = sorted(df[panel].unique())
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 4.0), squeeze=False, sharey=True)
    for ax, value in zip(axes[0], panels):
        part = df[(df[panel] == value) & np.isfinite(df[error]) & np.isfinite(df[kl]) & (df[kl] > 0)]
        for name, g in part.groupby(group, sort=True):
            ax.scatter(g[kl], g[error], s=14, alpha=0.7, color=color_for(name), label=str(name))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"held-out {kl}")
        ax.set_title(f"{panel} = {value}", fontsize=10)
        ax.grid(True, which="both", alpha=0.25)
    axes[0][0].set_ylabel(error)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig
