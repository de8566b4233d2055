"""Every figure, drawn from tidy tables only (never from in-memory fit objects).

One color per structure across every figure (`color_for`) and one paper style (`PAPER_STYLE`, applied on
import): figures are sized for a paper's single column (`COLUMN_WIDTH`, 3.5 in) or full text width
(`TEXT_WIDTH`, 7 in) and read at that size (8 pt text, 7 pt legends), with mathtext labels. Only VALID
fits (optimality gap <= tolerance, `reparam.checks.valid_mask`) are averaged; study figures mark at each n
how many fits were excluded. Theory guides are drawn per curve (the THEORY slope of that curve, through
that curve's own points), never at one shared anchor.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

COLUMN_WIDTH = 3.5  # inches: one column of a two-column paper
TEXT_WIDTH = 7.0  # inches: the full text width
PANEL_HEIGHT = 2.6

PAPER_STYLE = {
    "font.size": 8, "axes.labelsize": 8, "axes.titlesize": 8.5, "legend.fontsize": 7,
    "xtick.labelsize": 7, "ytick.labelsize": 7, "figure.titlesize": 9,
    "lines.linewidth": 1.4, "lines.markersize": 3.5, "axes.linewidth": 0.6,
    "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False,
    "legend.handlelength": 1.8, "grid.linewidth": 0.4, "savefig.dpi": 200, "pdf.fonttype": 42, "ps.fonttype": 42,
    "mathtext.fontset": "dejavusans",
}
plt.rcParams.update(PAPER_STYLE)

STRUCTURE_COLORS = {
    "shared_mlp": "#1b9e77",
    "shared_linear": "#7570b3",
    "independent": "#d95f02",
    "shared_learned": "#e7298a",
    "shared": "#1b9e77",
    "shared_fixed": "#7570b3",
    "deep_shared": "#66a61e",
    "embedding_only": "#1f78b4",
}
_EXTRA = ["#e6ab02", "#a6761d", "#666666", "#1f78b4"]

#: Axis labels of the study's error columns (mathtext).
ERROR_LABELS = {
    "voronoi_prefix": r"$\mathcal{D}(\hat G, G^*)$, prefix space $(k, v)$",
    "voronoi_native": r"$\mathcal{D}(\hat G, G^*)$, native parameters",
    "voronoi_r1_prefix": r"$\mathcal{D}_{1,1}(\hat G, G^*)$, prefix space",
    "voronoi_r2_prefix": r"$\mathcal{D}_{1,2}(\hat G, G^*)$, prefix space",
    "atom_error_multi": r"$\max\,\|\hat\theta_i - \theta^*_j\|$, cells with $|V_j| > 1$",
    "atom_error_single": r"$\max\,\|\hat\theta_i - \theta^*_j\|$, cells with $|V_j| = 1$",
    "l2_error": r"$\|f_{\hat G} - f_{G^*}\|_{L^2(\mu)}$",
}

SHORT_LABELS = {"voronoi_prefix": r"$\mathcal{D}$", "voronoi_r1_prefix": r"$\mathcal{D}_{1,1}$",
                "voronoi_r2_prefix": r"$\mathcal{D}_{1,2}$", "atom_error_multi": "atom error (multi-atom cells)",
                "l2_error": r"$\|f_{\hat G} - f_{G^*}\|_{L^2}$"}


def color_for(name: str) -> str:
    if name in STRUCTURE_COLORS:
        return STRUCTURE_COLORS[name]
    return _EXTRA[sum(map(ord, str(name))) % len(_EXTRA)]


def _band(group: pd.DataFrame, error: str, level: float = 0.95) -> pd.DataFrame:
    """Mean and a confidence band of the mean per n (Student t with the replicates at that n; no band from
    fewer than 2 replicates)."""
    from scipy import stats

    agg = group.groupby("n")[error].agg(["mean", "std", "count"]).sort_index()
    dof = (agg["count"] - 1).clip(lower=1)
    t = stats.t.ppf(0.5 + level / 2, dof)
    half = np.where(agg["count"] >= 2, t * agg["std"].fillna(0) / np.sqrt(agg["count"]), 0.0)
    agg["lo"] = (agg["mean"] - half).clip(lower=agg["mean"] * 0.05)
    agg["hi"] = agg["mean"] + half
    return agg


def _log_n_axis(ax, ns) -> None:
    """Log x axis with ticks at the measured n, written as plain numbers (1k, 10k, ...)."""
    ax.set_xscale("log")
    ns = sorted(set(int(n) for n in ns))
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(ns))
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(_short_count))
    if len(ns) > 6:  # keep every other label so they never overlap at a column's width
        for i, label in enumerate(ax.get_xticklabels()):
            label.set_visible(i % 2 == 0)


def _short_count(x, _pos=None) -> str:
    x = float(x)
    for value, suffix in ((1e6, "M"), (1e3, "k")):
        if x >= value * 0.9995:
            v = round(x / value, 1)
            return f"{v:.0f}{suffix}" if v == int(v) else f"{v:.1f}{suffix}"
    return f"{x:.0f}"


def _guide(ax, ns, values, slope: float, color: str, style: str = "--") -> None:
    """A THEORY guide of `slope` through the geometric centre of one curve's own points."""
    ns, values = np.asarray(ns, dtype=float), np.asarray(values, dtype=float)
    keep = values > 0
    if keep.sum() < 2:
        return
    ln, lv = np.log(ns[keep]), np.log(values[keep])
    centre_n, centre_v = ln.mean(), lv.mean()
    x = np.array([ns[keep].min(), ns[keep].max()])
    ax.plot(x, np.exp(centre_v + slope * (np.log(x) - centre_n)), style, color=color, lw=0.9, alpha=0.75)


def draw_error_vs_n(ax, df: pd.DataFrame, error: str, *, group: str = "structure", slopes: pd.DataFrame | None = None,
                    theory_slopes: dict[str, float] | None = None, ylabel: str | None = None, title: str | None = None):
    """Draw log-log mean error (with 95% band) against n on `ax`, one line per value of `group`; each curve
    gets the guides of `theory_slopes` through its own points (dashed, its colour)."""
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
                label += f": {_slope_text(r['slope'], r['slope_lo'], r['slope_hi'])}"
        color = color_for(name)
        ax.plot(agg.index, agg["mean"], "o-", color=color, label=label)
        ax.fill_between(agg.index, agg["lo"], agg["hi"], color=color, alpha=0.18, lw=0)
        for slope in (theory_slopes or {}).values():
            _guide(ax, agg.index, agg["mean"], slope, color)
    if theory_slopes:
        ax.plot([], [], "k--", lw=0.9, label="THEORY " + ", ".join(theory_slopes))
    _log_n_axis(ax, df["n"].unique())
    ax.set_yscale("log")
    ax.set_xlabel(r"sample size $n$")
    ax.set_ylabel(ylabel or ERROR_LABELS.get(error, error))
    if title:
        ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="best")
    return ax


def error_vs_n(df: pd.DataFrame, error: str, *, group: str = "structure", panel: str | None = None,
               slopes: pd.DataFrame | None = None, theory_slopes: dict[str, float] | None = None,
               ylabel: str | None = None, title: str | None = None):
    """A figure of log-log error against n; one panel per value of `panel` (if given). `slopes` is a table
    from rates.fit_slopes grouped by [panel, group] (or [group]) whose slopes go into the legends."""
    panels = sorted(df[panel].unique()) if panel else [None]
    width = COLUMN_WIDTH if len(panels) == 1 else TEXT_WIDTH
    fig, axes = plt.subplots(1, len(panels), figsize=(width, PANEL_HEIGHT + 0.4), squeeze=False)
    for ax, value in zip(axes[0], panels):
        part = df if value is None else df[df[panel] == value]
        part_slopes = slopes
        if slopes is not None and value is not None and panel in slopes.columns:
            part_slopes = slopes[slopes[panel] == value]
        sub = title if value is None else f"{title + ': ' if title else ''}{panel} = {value}"
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
        fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return paths


# --------------------------------------------------------------------------------------------------
# Study figures (sims/): drawn from results.csv and summary.csv only.

_REGIME_TITLES = {"exact": r"exact-specified ($L' = L^*$)", "over": r"over-specified ($L' > L^*$)"}


def _slope_text(slope: float, lo: float, hi: float) -> str:
    def f(x):
        return f"{x:+.2f}".replace("-", "\N{MINUS SIGN}")
    return f"{f(slope)} [{f(lo)}, {f(hi)}]" if np.isfinite(lo) and np.isfinite(hi) else f(slope)


def _slope_label(summary: pd.DataFrame | None, structure: str, regime: str, error: str) -> str:
    if summary is None or summary.empty:
        return ""
    s = summary[(summary.structure == structure) & (summary.regime == regime) & (summary.error == error)]
    if s.empty or not np.isfinite(s["slope"].iloc[0]):
        return ""
    r = s.iloc[0]
    return f": slope {_slope_text(r['slope'], r['slope_lo'], r['slope_hi'])}"


def draw_study_curves(ax, results: pd.DataFrame, error: str, regime: str, summary: pd.DataFrame | None = None,
                      guides: dict[str, float] | None = None, ylabel: str | None = None, title: str | None = None):
    """Mean of valid fits with a 95% band per structure; invalid fits (positive optimality gap) are excluded
    and marked (x at that n, count in the legend). Each curve gets ITS OWN THEORY guide (the prediction of
    reparam.checks.prediction_for: dashed = predicted slope, dotted = the 'flatter than' bound), drawn
    through its own points; `guides` (label -> slope) is used for curves without a THEORY row."""
    from .checks import prediction_for, valid_mask

    part = results[results.regime == regime]
    drew_guide = drew_bound = False
    for structure in sorted(part.structure.unique()):
        g_all = part[part.structure == structure]
        ok = valid_mask(g_all)
        g = g_all[ok & np.isfinite(g_all[error].astype(float))]
        failed = g_all[~ok].groupby("n").size()
        label = structure + _slope_label(summary, structure, regime, error)
        if len(failed):
            label += f" ({int(failed.sum())}/{len(g_all)} invalid, excluded)"
        color = color_for(structure)
        if g.empty:
            continue
        agg = _band(g, error)
        ax.plot(agg.index, agg["mean"], "o-", color=color, label=label)
        ax.fill_between(agg.index, agg["lo"], agg["hi"], color=color, alpha=0.18, lw=0)
        for n in failed.index:
            if n in agg.index:
                ax.plot([n], [agg.loc[n, "mean"]], marker="x", color=color, ms=6, mew=1.2, ls="none")
        pred, _ = prediction_for(structure, regime, error)
        if pred is not None:
            _guide(ax, agg.index, agg["mean"], pred.value, color, "--" if pred.kind == "equal" else ":")
            drew_guide |= pred.kind == "equal"
            drew_bound |= pred.kind != "equal"
        elif guides:
            for slope in guides.values():
                _guide(ax, agg.index, agg["mean"], slope, color)
                drew_guide = True
    if drew_guide:
        ax.plot([], [], "k--", lw=0.9, label="THEORY slope of that curve")
    if drew_bound:
        ax.plot([], [], "k:", lw=0.9, label="THEORY: flatter than this")
    _log_n_axis(ax, part["n"].unique())
    ax.set_yscale("log")
    ax.set_xlabel(r"sample size $n$")
    ax.set_ylabel(ylabel or ERROR_LABELS.get(error, error))
    ax.set_title(title or _REGIME_TITLES.get(regime, regime))
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=1)
    return ax


def _robust_ylim(results: pd.DataFrame, error: str, regimes: list[str]) -> tuple[float, float] | None:
    """y limits from the per-n means and band edges of valid fits: one outlying replicate can not stretch the
    axis by orders of magnitude beyond what the curves show."""
    from .checks import valid_mask

    part = results[results.regime.isin(regimes) & valid_mask(results)]
    vals = []
    for _, g in part.groupby(["regime", "structure"]):
        g = g[np.isfinite(g[error].astype(float))]
        if len(g):
            agg = _band(g, error)
            vals += list(agg["lo"]) + list(agg["hi"])
    vals = np.asarray([v for v in vals if v > 0])
    if not len(vals):
        return None
    return vals.min() / 1.6, vals.max() * 1.6


def study_error_figure(results: pd.DataFrame, summary: pd.DataFrame | None, error: str, regimes: list[str],
                       guides: dict[str, float], ylabel: str | None, suptitle: str):
    """One panel per regime of log-log `error` against n (a column wide per panel)."""
    regimes = [r for r in regimes if r in set(results.regime)]
    fig, axes = plt.subplots(1, len(regimes), figsize=(COLUMN_WIDTH * len(regimes), PANEL_HEIGHT + 1.2),
                             squeeze=False, sharey=True)
    for ax, regime in zip(axes[0], regimes):
        draw_study_curves(ax, results, error, regime, summary, guides, ylabel=ylabel)
    limits = _robust_ylim(results, error, regimes)
    if limits:
        axes[0][0].set_ylim(*limits)
    for ax in axes[0][1:]:
        ax.set_ylabel("")
    fig.suptitle(suptitle + r" (mean of valid fits, 95% band)")
    fig.tight_layout()
    return fig


def samples_to_reach(means: pd.Series, target: float) -> float:
    """Smallest n from which the measured mean error stays <= target, interpolated log-linearly between the
    last measured n above the target and the next; NaN when the curve never gets there (no extrapolation)."""
    means = means.sort_index()
    above = np.flatnonzero(means.to_numpy() > target)
    if not len(above):
        return float(means.index[0]) if len(means) else np.nan
    i = above[-1]
    if i == len(means) - 1:
        return np.nan
    (n0, n1), (e0, e1) = means.index[i:i + 2].astype(float), means.to_numpy()[i:i + 2]
    t = (np.log(target) - np.log(e0)) / (np.log(e1) - np.log(e0))
    return float(np.exp(np.log(n0) + t * (np.log(n1) - np.log(n0))))


def sample_complexity_figure(results: pd.DataFrame, summary: pd.DataFrame, error: str = "voronoi_prefix",
                             regimes: tuple[str, ...] = ("exact", "over")):
    """n needed to reach a target error, from each fitted law mean = exp(intercept) * n^slope: solid inside
    the measured range of errors, dashed for at most a factor 3 below it (an extrapolation); dots = measured
    means; the exponent n ~ eps^(1/slope) with its 95% interval from the slope's."""
    from .checks import valid_mask

    regimes = [r for r in regimes if r in set(results.regime)]
    fig, axes = plt.subplots(1, len(regimes), figsize=(COLUMN_WIDTH * len(regimes), PANEL_HEIGHT + 0.6),
                             squeeze=False, sharey=True)
    for ax, regime in zip(axes[0], regimes):
        part = results[(results.regime == regime) & valid_mask(results)]
        for structure in sorted(part.structure.unique()):
            s = summary[(summary.structure == structure) & (summary.regime == regime) & (summary.error == error)]
            g = part[part.structure == structure]
            means = g.groupby("n")[error].mean().dropna()
            if s.empty or means.empty:
                continue
            r, color = s.iloc[0], color_for(structure)
            ax.plot(means.to_numpy(), means.index.to_numpy(), "o", color=color)
            if not (np.isfinite(r["slope"]) and r["slope"] < 0):
                ax.plot([], [], color=color, label=f"{structure}: slope {r['slope']:+.2f} $\\geq 0$")
                continue
            lo, hi = means.min(), means.max()
            inside = np.geomspace(lo, hi, 50)
            outside = np.geomspace(lo / 3, lo, 20)
            n_of = lambda eps: np.exp((np.log(eps) - r["intercept"]) / r["slope"])  # noqa: E731
            exps = sorted(1 / x for x in (r["slope_lo"], r["slope_hi"]) if np.isfinite(x) and x < 0)
            interval = f" [{exps[0]:.1f}, {exps[1]:.1f}]" if len(exps) == 2 else ""
            ax.plot(inside, n_of(inside), "-", color=color,
                    label=f"{structure}: $n \\propto \\varepsilon^{{{1 / r['slope']:.1f}}}${interval}")
            ax.plot(outside, n_of(outside), "--", color=color, lw=1.0, alpha=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.invert_xaxis()
        ax.set_xlabel(r"target error $\varepsilon$ (mean $\mathcal{D}$)" if error == "voronoi_prefix"
                      else f"target error ({error})")
        ax.set_title(_REGIME_TITLES.get(regime, regime))
        ax.grid(True, which="major", alpha=0.3)
        ax.plot([], [], "k--", lw=1.0, label="dashed: extrapolated (fitted law)")
        ax.plot([], [], "ko", label="dots: measured means")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.36))
    axes[0][0].set_ylabel(r"samples $n$ needed")
    fig.tight_layout()
    return fig


def headline_figure(results: pd.DataFrame, regime: str = "over", error: str = "voronoi_prefix",
                    structures: tuple[str, ...] = ("shared_mlp", "shared_linear", "independent"),
                    reference: str = "independent"):
    """The figure a reader wants first: shared vs independent prefixes (one column wide). Mean error of valid
    fits against n with 95% bands; the target error is what `reference` reaches at its largest n, and each
    structure's marker shows the n at which its measured mean gets there (interpolated between measured n,
    never extrapolated), with the ratio of sample sizes."""
    from .checks import valid_mask

    part = results[(results.regime == regime) & valid_mask(results) & results.structure.isin(structures)]
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, PANEL_HEIGHT + 0.5))
    curves = {}
    for structure in [s for s in structures if s in set(part.structure)]:
        g = part[(part.structure == structure) & np.isfinite(part[error].astype(float))]
        agg = _band(g, error)
        curves[structure] = agg["mean"]
        color = color_for(structure)
        ax.plot(agg.index, agg["mean"], "o-", color=color, label=structure)
        ax.fill_between(agg.index, agg["lo"], agg["hi"], color=color, alpha=0.18, lw=0)
    if reference in curves:
        target = float(curves[reference].iloc[-1])
        ax.axhline(target, color="k", lw=0.7, ls=":")
        needed = {s: samples_to_reach(m, target) for s, m in curves.items()}
        ref_n = needed[reference]
        for structure, n in needed.items():
            if np.isfinite(n):
                ax.plot([n], [target], marker="v", color=color_for(structure), ms=7, ls="none", zorder=5)
        lines = [f"target $\\varepsilon$ = {target:.2f} (what {reference} reaches at n = {_short_count(ref_n)})"]
        for structure, n in needed.items():
            if structure != reference:
                lines.append(f"{structure}: n $\\approx$ {_short_count(n)} ({ref_n / n:.0f}x fewer)" if np.isfinite(n)
                             else f"{structure}: not reached within the measured n")
        ax.text(0.02, 0.03, "\n".join(lines), transform=ax.transAxes, fontsize=6.5, va="bottom")
    _log_n_axis(ax, part["n"].unique())
    ax.set_yscale("log")
    ax.set_xlabel(r"sample size $n$")
    ax.set_ylabel(ERROR_LABELS.get(error, error))
    ax.set_title(f"Shared vs independent prefixes, {_REGIME_TITLES.get(regime, regime)}")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


STUDY_FIGURES = {
    # stem: (error, regimes, guides for curves without a THEORY row, ylabel (None: ERROR_LABELS), title)
    "convergence_voronoi": ("voronoi_prefix", ["exact", "over"], {}, None, "Parameter estimation"),
    "convergence_regression": ("l2_error", ["exact", "over"], {}, None, "Regression error"),
    "convergence_atoms_over": ("atom_error_multi", ["over"], {}, None, "Atoms in over-specified cells"),
    "convergence_d1r_over": ("voronoi_r1_prefix", ["over"], {}, None, r"$\mathcal{D}_{1,1}$, over-specified"),
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
    if "over" in set(results.regime) and {"independent"} <= set(results.structure) and len(set(results.structure)) > 1:
        paths += save_figure(headline_figure(results), out_dir / "headline")
    return paths


ROBUSTNESS_PANELS = [  # (error, regime)
    ("voronoi_prefix", "exact"),
    ("voronoi_prefix", "over"),
    ("atom_error_multi", "over"),
    ("l2_error", "over"),
]


def robustness_figure(slopes: pd.DataFrame):
    """Distribution over random truths of the fitted slope, per structure (one dot per truth, black box =
    quartiles and median); the THEORY slope is drawn only over the structures it is predicted for (dashed:
    predicted value; dotted: 'flatter than' bound)."""
    from .checks import prediction_for

    n_panels = len(ROBUSTNESS_PANELS)
    fig, axes = plt.subplots(2, n_panels // 2, figsize=(TEXT_WIDTH, 2 * PANEL_HEIGHT + 0.4), squeeze=False)
    structures = sorted(slopes.structure.unique())
    rng = np.random.default_rng(0)
    black = dict(color="k", lw=0.8)
    for ax, (error, regime) in zip(axes.flat, ROBUSTNESS_PANELS):
        part = slopes[(slopes.error == error) & (slopes.regime == regime)]
        data = [part[part.structure == s]["slope"].dropna().to_numpy() for s in structures]
        ax.boxplot([d if len(d) else [np.nan] for d in data], positions=range(len(structures)), widths=0.5,
                   showfliers=False, boxprops=black, whiskerprops=black, capprops=black, medianprops=black)
        lo_lim, hi_lim = -2.0, 1.0  # slopes outside are drawn at the edge as triangles and counted
        for i, (s, d) in enumerate(zip(structures, data)):
            inside = d[(d >= lo_lim) & (d <= hi_lim)]
            ax.plot(i + rng.uniform(-0.15, 0.15, len(inside)), inside, "o", color=color_for(s), ms=2.5, alpha=0.8)
            for edge, marker, sel in ((lo_lim, "v", d < lo_lim), (hi_lim, "^", d > hi_lim)):
                if sel.any():
                    ax.plot([i], [edge], marker, color=color_for(s), ms=5)
                    ax.annotate(f"{int(sel.sum())} off-scale", (i, edge), xytext=(5, 3 if edge == lo_lim else -9),
                                textcoords="offset points", fontsize=6)
            pred, _ = prediction_for(s, regime, error)
            if pred is not None:
                ax.plot([i - 0.35, i + 0.35], [pred.value] * 2, "--" if pred.kind == "equal" else ":", color="k",
                        lw=1.0)
        ax.set_ylim(lo_lim - 0.1, hi_lim + 0.1)
        ax.axhline(0, color="grey", lw=0.5, alpha=0.6)
        ax.set_xticks(range(len(structures)))
        ax.set_xticklabels([s.replace("_", "\n") for s in structures], fontsize=6.5)
        ax.set_ylabel("fitted log-log slope")
        n_truths = part.truth.nunique() if "truth" in part.columns else 0
        ax.set_title(f"{SHORT_LABELS.get(error, error)}, {regime} ({n_truths} truths)")
        ax.grid(True, axis="y", alpha=0.25)
    fig.text(0.5, -0.01, "dashed: THEORY slope of that structure; dotted: THEORY says flatter than this",
             ha="center", fontsize=7)
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
        ax.get_xaxis().set_minor_formatter(matplotlib.ticker.NullFormatter())
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
                ax.get_xaxis().set_minor_formatter(matplotlib.ticker.NullFormatter())
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
        ax.grid(True, which="major", alpha=0.3)
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
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].set_ylabel(error)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig
