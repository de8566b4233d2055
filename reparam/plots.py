"""Every figure, drawn from tidy tables only (never from in-memory fit objects).

One color per structure across every figure (`color_for`) and one paper style (`PAPER_STYLE`, applied on
import): figures are sized for a paper's single column (`COLUMN_WIDTH`, 3.5 in) or full text width
(`TEXT_WIDTH`, 7 in) and read at that size (8 pt text, 7 pt legends), with mathtext labels. Only VALID
fits (optimality gap <= tolerance, `reparam.checks.valid_mask`) are averaged; study figures mark at each n
how many fits were excluded. Theory guides are drawn per curve (the THEORY slope of that curve, through
that curve's own points), never at one shared anchor. `redraw(folder)` draws every figure a folder has the tables
for (`reparam figures`, `reparam canonical`).
"""
from __future__ import annotations

import logging
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
# pdf.fonttype 42 embeds TrueType fonts; fontTools then warns, for every PDF, that the DejaVu fonts' header dates
# ("'created' timestamp seems very low") are odd. They are the font files' own, harmless to the figures.
logging.getLogger("fontTools.ttLib.tables._h_e_a_d").setLevel(logging.ERROR)

#: Colours of the synthetic structures (reparam.structures). The real-model structures declare theirs in their
#: registry (reparam.lm.structures `color`), read only for a name that is not one of these: a synthetic figure
#: never imports torch for its colours.
STRUCTURE_COLORS = {
    "shared_mlp": "#1b9e77",
    "shared_linear": "#7570b3",
    "independent": "#d95f02",
    "shared_learned": "#e7298a",
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
    """One colour per structure across every figure: a synthetic structure's (STRUCTURE_COLORS), else the colour
    its real-model class declares (reparam.lm.structures, looked up lazily), else one picked from its name."""
    if name in STRUCTURE_COLORS:
        return STRUCTURE_COLORS[name]
    from .lm.structures import STRUCTURES as LM_STRUCTURES  # imports torch: only for a name not synthetic

    declared = vars(LM_STRUCTURES[name]).get("color") if name in LM_STRUCTURES else None
    return declared or _EXTRA[sum(map(ord, str(name))) % len(_EXTRA)]


def _band(group: pd.DataFrame, error: str, level: float = 0.95) -> pd.DataFrame:
    """Mean and a confidence band of the mean per n (Student t with the replicates at that n; no band from
    fewer than 2 replicates)."""
    from .rates import t_half_width

    agg = group.groupby("n")[error].agg(["mean", "std", "count"]).sort_index()
    half = np.nan_to_num(t_half_width(agg["std"], agg["count"], level), nan=0.0)  # no band from one replicate
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
    if len(ns) == 1:  # autoscale would span only the dodged markers around the one n: give it room
        ax.set_xlim(ns[0] / 1.6, ns[0] * 1.6)


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


def save_figure(fig, stem: str | Path) -> list[Path]:
    """Write stem.png and stem.pdf and close the figure."""
    from .validation import writing

    stem = Path(stem)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    try:
        for path in paths:
            with writing(path):  # a refused write (disk full, permissions): one line naming the file
                path.parent.mkdir(parents=True, exist_ok=True)
                fig.savefig(path, bbox_inches="tight")
    finally:
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


def samples_needed(results: pd.DataFrame, regime: str = "over", error: str = "voronoi_prefix",
                   structures: tuple[str, ...] = ("shared_mlp", "shared_linear", "independent"),
                   reference: str = "independent") -> tuple[float, dict[str, float]]:
    """The headline comparison as numbers: the target error is what `reference` reaches (mean over valid fits) at
    its largest n; each structure's n to reach it (samples_to_reach: interpolated between measured n, NaN when
    never reached). Returns (target, {structure: n}); (NaN, {}) without the reference curve."""
    from .checks import valid_mask

    part = results[(results.regime == regime) & valid_mask(results) & results.structure.isin(structures)]
    curves = {}
    for structure in [s for s in structures if s in set(part.structure)]:
        g = part[(part.structure == structure) & np.isfinite(part[error].astype(float))]
        curves[structure] = g.groupby("n")[error].mean().sort_index()
    if reference not in curves:
        return float("nan"), {}
    target = float(curves[reference].iloc[-1])
    return target, {s: samples_to_reach(m, target) for s, m in curves.items()}


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
        target, needed = samples_needed(results, regime, error, structures, reference)
        ax.axhline(target, color="k", lw=0.7, ls=":")
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

def _ld_grid(n_rows: int, n_cols: int, width: float, row_height: float, **kw):
    return plt.subplots(n_rows, n_cols, figsize=(width, n_rows * row_height + 0.9), squeeze=False,
                        layout="constrained", **kw)


def _no_data(ax, text: str = "no finite values recorded") -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=7, color="0.4")


def low_data_scores_figure(summary: pd.DataFrame, metric: str, ylabel: str | None = None, title: str | None = None,
                           panel: str = "init", width: float = TEXT_WIDTH, bounds: tuple[float, float] | None = None):
    """Mean over replicates of `metric` against n, one line per structure, one panel per `panel` value (side by
    side at the text width, stacked at a column's width), one legend below.

    summary: `reparam.lm.compare.score_summary` output (columns panel, structure, n, <metric>_mean and, where
    there are at least 3 replicates, the Student-t interval <metric>_ci_low/_ci_high; `replicates`). The band
    is that interval; with fewer replicates there is none and the legend says "insufficient" (hollow markers).
    n on a log axis with ticks at the measured n; the score on a LINEAR axis, clipped to `bounds` (the score's
    range, e.g. (0, 100) for BLEU): a bounded score has no power law in n, so no log axis and no slope.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    panels = sorted(summary[panel].unique()) if len(summary) else [None]
    rows, cols = _lm_panels(len(panels), width)
    fig, axes = _ld_grid(rows, cols, width, PANEL_HEIGHT, sharey=True)
    ns = summary["n"].unique() if len(summary) else [1]
    handles, some_band, some_without = {}, False, False
    for ax, value in zip(axes.flat, panels):
        d = summary[summary[panel] == value] if value is not None else summary
        drew = False
        for structure, g in d.groupby("structure"):
            g = g.sort_values("n")
            mean = g[f"{metric}_mean"].to_numpy(dtype=float)
            if not np.isfinite(mean).any():
                continue
            lo = g.get(f"{metric}_ci_low", pd.Series(np.nan, index=g.index)).to_numpy(dtype=float)
            hi = g.get(f"{metric}_ci_high", pd.Series(np.nan, index=g.index)).to_numpy(dtype=float)
            has = np.isfinite(lo) & np.isfinite(hi)
            color = color_for(structure)
            handles[structure], = ax.plot(g["n"], mean, "-", color=color)
            ax.plot(g["n"][has], mean[has], "o", color=color)
            ax.plot(g["n"][~has], mean[~has], "o", color=color, mfc="white")
            if has.any():
                ax.fill_between(g["n"], np.where(has, lo, np.nan), np.where(has, hi, np.nan), color=color, alpha=0.15,
                                lw=0)
            some_band |= bool(has.any())
            some_without |= bool((~has).any())
            drew = True
        if not drew:
            _no_data(ax)
        _log_n_axis(ax, ns)
        ax.set_yscale("linear")
        ax.set_xlabel(r"training examples $n$")
        ax.set_ylabel(ylabel or metric)
        if value is not None:
            ax.set_title(f"{panel} = {value}")
        ax.grid(alpha=0.3)
    if bounds is not None:
        low, high = axes.flat[0].get_ylim()
        axes.flat[0].set_ylim(max(low, bounds[0]), min(high, bounds[1]))
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    if cols > 1:
        for ax in axes[0][1:]:
            ax.set_ylabel("")
            ax.tick_params(labelleft=True)
    if some_band:
        handles["band: 95% t-interval of the mean"] = Patch(color="0.6", alpha=0.4, lw=0)
    if some_without:
        handles["hollow: insufficient (< 3 replicates, no interval)"] = Line2D(
            [], [], marker="o", mfc="white", color="0.3", ls="none")
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=1 if width < TEXT_WIDTH else 3)
    reps = sorted(summary["replicates"].unique()) if "replicates" in summary.columns and len(summary) else []
    what = f"mean over {reps[0]} replicate{'s' if reps[0] != 1 else ''}" if len(reps) == 1 else "mean over replicates"
    _lm_suptitle(fig, f"{title}: {what}" if title else None, width)
    return fig


def low_data_paired_figure(paired: pd.DataFrame, metrics: list[str], labels: dict[str, str] | None = None,
                           title: str | None = None, panel: str = "init", width: float = TEXT_WIDTH):
    """Paired difference (structure - baseline) against n: its mean over replicates with the 95% paired t
    interval of `reparam.lm.compare.paired_differences` as error bars; where that gave none (fewer than
    3 replicates) a hollow marker and no bar, and the legend says "insufficient". One row of panels per metric,
    one column per `panel` value, one legend below. n on a log axis with ticks at the measured n, the difference
    on a linear axis; the solid line at 0 is "no difference"."""
    from matplotlib.lines import Line2D

    panels = sorted(paired[panel].unique()) if len(paired) else [None]
    fig, axes = _ld_grid(len(metrics), len(panels), width, 1.35, sharex=True)
    ns = paired["n"].unique() if len(paired) else [1]
    handles, some_bar, some_without = {}, False, False
    for i, metric in enumerate(metrics):
        for j, value in enumerate(panels):
            ax = axes[i][j]
            d = paired[(paired.metric == metric) & ((paired[panel] == value) if value is not None else True)]
            d = d[np.isfinite(d["mean_diff"].astype(float))]
            structures = sorted(d.structure.unique())
            for s_i, structure in enumerate(structures):
                g = d[d.structure == structure].sort_values("n")
                x = g["n"].to_numpy(dtype=float) * (1 + 0.04 * (s_i - (len(structures) - 1) / 2))  # dodge the bars
                y = g["mean_diff"].to_numpy(dtype=float)
                lo, hi = g["ci_low"].to_numpy(dtype=float), g["ci_high"].to_numpy(dtype=float)
                has = np.isfinite(lo) & np.isfinite(hi)
                color = color_for(structure)
                handles[f"{structure} \N{MINUS SIGN} {g['baseline'].iloc[0]}"], = ax.plot(x, y, "-", color=color, lw=1.0)
                if has.any():
                    ax.errorbar(x[has], y[has], yerr=np.vstack([y[has] - lo[has], hi[has] - y[has]]).clip(min=0),
                                fmt="o", ms=3, capsize=2, color=color, lw=0.9)
                ax.plot(x[~has], y[~has], "o", ms=3.5, color=color, mfc="white")
                some_bar |= bool(has.any())
                some_without |= bool((~has).any())
            if d.empty:
                _no_data(ax)
            ax.axhline(0.0, color="k", lw=0.7)
            _log_n_axis(ax, ns)
            ax.set_yscale("linear")
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_ylabel(f"\N{GREEK CAPITAL LETTER DELTA} {(labels or {}).get(metric, metric)}")
            if i == 0 and value is not None:
                ax.set_title(f"{panel} = {value}")
            if i == len(metrics) - 1:
                ax.set_xlabel(r"training examples $n$")
    if some_bar:
        handles["bars: 95% paired t interval"] = Line2D(
            [], [], marker="o", color="0.3", ms=3)
    if some_without:
        handles["hollow: insufficient (< 3 replicates, no interval)"] = Line2D(
            [], [], marker="o", mfc="white", color="0.3", ls="none")
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=1 if width < TEXT_WIDTH else 2)
    _lm_suptitle(fig, title, width)
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
                              r"$\mathcal{D} \,/\, \|f_{\hat G} - f_{G^*}\|_{L^2}$", "Inverse bound on the fits")


# ----------------------------------------------------------------------------- planted prefix (real transformers)

#: axis labels of the planted study's figures (reparam.lm.planted: voronoi_rel and inverse_ratio_rel are normalised
#: by the all-zero prefix's Voronoi loss against the same truth, `reparam.lm.planted.add_normalised_errors`)
PLANTED_LABELS = {
    "voronoi_rel": r"$\mathcal{D}(\hat G, G^*)\,/\,\mathcal{D}(0, G^*)$",
    "rel_dist": r"relative distance $\|\hat\theta - \theta^*\|\,/\,\|\theta^*\|$",
    "kl": r"held-out $\mathrm{KL}(p_{G^*}\,\|\,p_{\hat G})$ [nats/token]",
    "inverse_ratio_rel": r"$\mathcal{D}(\hat G, G^*)\,/\,\mathcal{D}(0, G^*)\,/\,\sqrt{\mathrm{KL}}$",
}
#: the reference line of each planted error (None: the bare model's KL, one line per truth family)
PLANTED_REFERENCES = {
    "voronoi_rel": (1.0, "1: the all-zero prefix's loss"),
    "rel_dist": (1.0, "1: an error as large as the truth"),
    "kl": None,
}
_FAMILY_STYLES = {"shared": (0, (5, 2)), "independent": (0, (5, 2)), "embedding": (0, (1, 1.5))}


def _minus(text: str) -> str:
    return text.replace("-", "\N{MINUS SIGN}")


def lm_slope_text(slope: float, lo: float, hi: float) -> str:
    """'-0.49 [-0.62, -0.37]' with as many decimals (2 to 4) as the interval needs to show its width, and one
    significant digit for a non-zero number that would print as 0.00 ('-0.02 [-0.04, -0.003]'), so nothing prints
    as '-0.00 [-0.00, -0.00]'; 'slope insufficient' without an interval (reparam.rates gives none from fewer than 3
    replicates)."""
    if not np.isfinite(slope):
        return "slope insufficient"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "slope insufficient (< 3 replicates)"
    digits = int(np.clip(np.ceil(-np.log10(max(hi - lo, 1e-4))), 2, 4))

    def f(x):
        d = digits if round(x, digits) != 0 or x == 0 else max(digits, int(np.ceil(-np.log10(abs(x)))))
        return _minus(f"{x:+.{d}f}")  # a non-zero number never prints as 0.00

    return f"{f(slope)} [{f(lo)}, {f(hi)}]"


def _lm_suptitle(fig, title: str | None, width: float) -> None:
    """A figure title wrapped to the figure's width (about 13 characters per inch at the title size)."""
    if title:
        import textwrap

        fig.suptitle(textwrap.fill(title, int(width * 13)))


def _plain_log_ticks(axis) -> None:
    """Ticks of a log axis written as plain numbers (0.05, 0.1, 0.2, 10): at 1, 2 and 5 times the powers of ten
    where the axis spans at most 2.5 decades, at the powers of ten beyond; unlabelled minor ticks in between.
    Call after the limits are final."""
    lo, hi = axis.get_view_interval()
    decades = np.log10(max(hi, 1e-300) / max(lo, 1e-300))
    axis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0) if decades <= 2.5 else (1.0,)))
    axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _pos: _minus(f"{x:g}")))
    axis.set_minor_locator(matplotlib.ticker.LogLocator(subs=np.arange(2, 10)))
    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _lm_panels(n: int, width: float) -> tuple[int, int]:
    """Panels side by side at the text width, stacked at a column's width."""
    return (1, n) if width >= TEXT_WIDTH - 1e-9 or n == 1 else (n, 1)


def planted_error_figure(est: pd.DataFrame, error: str, *, slopes: pd.DataFrame | None = None,
                         predictions: dict | None = None, width: float = TEXT_WIDTH, title: str | None = None):
    """One planted-study error against n: mean of the VALID fits with its 95% Student-t band, one panel per
    regime, one colour per structure (excluded invalid fits are counted in the legend). Legends give the slope
    [95% CI, reparam.rates.DEFAULT_INTERVAL] of each curve (`slopes`: reparam.lm.planted.slope_table rows of this error) and the
    verdict where THEORY predicts one (`predictions`: (structure, regime) -> slope, drawn as a dashed guide
    through that curve's points). Reference lines (`PLANTED_REFERENCES`): 1 for the normalised errors, the
    bare model's KL (mean of the recorded `kl_truth_vs_base` per truth family) for the KL.
    At `width` = TEXT_WIDTH the regimes sit side by side, at COLUMN_WIDTH they are stacked."""
    regimes = [r for r in ("exact", "over") if r in set(est.regime)]
    rows, cols = _lm_panels(len(regimes), width)
    fig, axes = plt.subplots(rows, cols, figsize=(width, rows * (PANEL_HEIGHT + 0.9)), squeeze=False,
                             sharey=cols > 1, layout="constrained")
    predictions = predictions or {}
    for ax, regime in zip(axes.flat, regimes):
        part = est[est.regime == regime]
        drew_guide = False
        for structure in sorted(part.structure.unique()):
            g_all = part[part.structure == structure]
            ok = g_all["valid"].astype(bool)
            g = g_all[ok & np.isfinite(g_all[error].astype(float)) & (g_all[error] > 0)]
            if g.empty:
                continue
            label = structure
            if slopes is not None:
                s = slopes[(slopes.structure == structure) & (slopes.regime == regime)]
                if len(s):
                    r = s.iloc[0]
                    label += ": " + lm_slope_text(r["slope"], r["slope_lo"], r["slope_hi"])
                    if (structure, regime) in predictions or r.get("verdict") == "insufficient":
                        label += f", {r['verdict']}"
            if (~ok).any():
                label += f"\n({int((~ok).sum())}/{len(g_all)} invalid fits excluded)"
            agg = _band(g, error)
            color = color_for(structure)
            ax.plot(agg.index, agg["mean"], "o-", color=color, label=label)
            ax.fill_between(agg.index, agg["lo"], agg["hi"], color=color, alpha=0.18, lw=0)
            if (structure, regime) in predictions:
                _guide(ax, agg.index, agg["mean"], predictions[(structure, regime)], color)
                drew_guide = True
        if drew_guide:
            slope = next(v for (s, g), v in predictions.items() if g == regime)
            ax.plot([], [], "k--", lw=0.9, label=_minus(f"THEORY slope {slope:+g}"))
        ref = PLANTED_REFERENCES.get(error, False)
        if ref:
            ax.axhline(ref[0], color="0.35", lw=0.9, ls=(0, (5, 2)), label=ref[1])
        elif ref is None and "kl_truth_vs_base" in part.columns:
            for family, kl0 in part.groupby("truth")["kl_truth_vs_base"].mean().items():
                ax.axhline(kl0, color="0.35", lw=0.9, ls=_FAMILY_STYLES.get(family, "-."),
                           label=f"no prefix (bare model), {family} truth: {kl0:.3f}")
        _log_n_axis(ax, part["n"].unique())
        ax.set_yscale("log")
        ax.set_xlabel(r"sample size $n$ (sequences)")
        ax.set_ylabel(PLANTED_LABELS.get(error, error))
        ax.set_title(_REGIME_TITLES.get(regime, regime))
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1)
    for ax in axes.flat[:len(regimes)]:
        _plain_log_ticks(ax.yaxis)
    if cols > 1:
        for ax in axes[0][1:]:
            ax.set_ylabel("")
            ax.tick_params(which="both", labelleft=True)
    _lm_suptitle(fig, title, width)
    return fig


def planted_valley_figure(est: pd.DataFrame, error: str = "rel_dist", kl: str = "kl", width: float = TEXT_WIDTH,
                          title: str | None = None):
    """THEORY section 7's "flat valley": prefix-space error against held-out KL, one point per valid fit, one colour
    per structure, one panel per regime (log-log), one legend below. Where the inverse bound holds the points fall
    along a line (error shrinks with KL); where it fails they stay high while KL goes to 0. Reference lines: error
    1 (as large as the truth) and the bare model's KL per truth family (mean of the recorded `kl_truth_vs_base`)."""
    regimes = [r for r in ("exact", "over") if r in set(est.regime)]
    rows, cols = _lm_panels(len(regimes), width)
    fig, axes = plt.subplots(rows, cols, figsize=(width, rows * PANEL_HEIGHT + 0.9), squeeze=False,
                             sharex=True, sharey=True, layout="constrained")
    handles = {}
    for ax, regime in zip(axes.flat, regimes):
        part = est[(est.regime == regime) & est["valid"].astype(bool) & np.isfinite(est[error]) & np.isfinite(est[kl])
                   & (est[kl] > 0)]
        for name, g in part.groupby("structure", sort=True):
            handles[str(name)] = ax.scatter(g[kl], g[error], s=9, alpha=0.75, lw=0, color=color_for(name))
        ref = PLANTED_REFERENCES.get(error)
        if ref:
            handles[ref[1]] = ax.axhline(ref[0], color="0.35", lw=0.9, ls=(0, (5, 2)))
        if "kl_truth_vs_base" in part.columns:
            for family, kl0 in part.groupby("truth")["kl_truth_vs_base"].mean().items():
                label = f"bare model's KL, {family} truth"
                handles[label] = ax.axvline(kl0, color="0.35", lw=0.9, ls=(0, (1, 1.5)) if family == "embedding"
                                            else (0, (4, 1.5, 1, 1.5)))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(_REGIME_TITLES.get(regime, regime))
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes.flat[:len(regimes)]:
        _plain_log_ticks(ax.xaxis)
        _plain_log_ticks(ax.yaxis)
        ax.set_xlabel(PLANTED_LABELS.get(kl, kl))
        ax.tick_params(which="both", labelbottom=True, labelleft=True)
    for ax in axes[:, 0]:
        ax.set_ylabel(PLANTED_LABELS.get(error, error))
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=2, markerscale=1.5)
    _lm_suptitle(fig, title, width)
    return fig


# ---- the benchmarks' scaling figure (reparam.bench writes its table, scaling.csv)

def scaling_figure(df: pd.DataFrame):
    """ms per solver iteration against n, L' and d (the scaling table), each with a linear-cost guide."""
    fig, axes = plt.subplots(1, 3, figsize=(TEXT_WIDTH, PANEL_HEIGHT))
    labels = {"n": r"sample size $n$ ($L'=3$, $d=2$)", "L": r"fitted atoms $L'$ ($n=10^4$, $d=2$)",
              "d": r"input dimension $d$ ($n=10^4$, $L'=3$)"}
    for ax, axis in zip(axes, ("n", "L", "d")):
        sub = df[df.axis == axis].sort_values("value")
        x = sub.value.to_numpy(float)
        ax.loglog(x, sub.seconds * 1e3, "o-", color="C0", label="measured")
        ax.loglog(x, sub.seconds.iloc[-1] * 1e3 * x / x[-1], ":", color="grey", label="linear in it")
        ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(x))
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(_short_count))
        ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _p: f"{v:g}"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(labels[axis])
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("ms per iteration (20 fits)")
    axes[0].legend(loc="upper left")
    fig.suptitle("Batched exact-Hessian solver: time per iteration")
    fig.tight_layout()
    return fig


# ---- every figure of a folder, redrawn from its tables (`reparam figures`, and `reparam canonical` after its runs)

#: Columns the figures read (a table without them is refused with a message, not a KeyError traceback).
RESULT_COLUMNS = ["structure", "regime", "n", "replicate", "truth", "voronoi_prefix"]
SUMMARY_COLUMNS = ["structure", "regime", "error", "slope", "slope_lo", "slope_hi", "prediction", "predicted"]
ROBUSTNESS_COLUMNS = ["structure", "regime", "error", "truth", "slope"]
INVERSE_BOUND_COLUMNS = ["structure", "regime", "latent_dim", "delta", "psi"]


def read_table(path: Path, columns: list[str], **kwargs) -> pd.DataFrame:
    """A CSV that must exist, parse and hold `columns`; DataError naming the file otherwise."""
    from .validation import read_csv_table

    return read_csv_table(path, columns, "the figures", "run `reparam canonical`, or point dir= at a run folder",
                          **kwargs)


def read_tables(directory: Path) -> dict[str, pd.DataFrame]:
    """Every table of `directory` that a figure is drawn from (DataError naming a file that cannot be drawn)."""
    tables = {"results": read_table(directory / "results.csv", RESULT_COLUMNS, numeric=["n", "replicate", "voronoi_prefix"]),
              "summary": read_table(directory / "summary.csv", SUMMARY_COLUMNS, keep_default_na=False,
                                    na_values=[""])}
    tables["summary"]["prediction"] = tables["summary"]["prediction"].fillna("")
    if (directory / "inverse-bound" / "inverse_bound.csv").exists():  # written by `reparam check names=[inverse-bound]`
        tables["inverse_bound"] = read_table(directory / "inverse-bound" / "inverse_bound.csv", INVERSE_BOUND_COLUMNS)
    if (directory / "robustness.csv").exists():
        tables["robustness"] = read_table(directory / "robustness.csv", ROBUSTNESS_COLUMNS)
    ratio = directory / "inverse-ratio"  # written by `reparam check names=[inverse-ratio]`
    if (ratio / "results.csv").exists() and (ratio / "summary.csv").exists():
        tables["inverse_ratio"] = read_table(ratio / "results.csv", RESULT_COLUMNS + ["inverse_ratio"])
        tables["inverse_ratio_summary"] = read_table(ratio / "summary.csv", SUMMARY_COLUMNS, keep_default_na=False,
                                                     na_values=[""])
        tables["inverse_ratio_summary"]["prediction"] = tables["inverse_ratio_summary"]["prediction"].fillna("")
    if (directory / "scaling.csv").exists():  # written by `reparam bench`
        tables["scaling"] = read_table(directory / "scaling.csv", ["axis", "value", "seconds"])
    return tables


def redraw(directory: Path) -> list[Path]:
    """Draw every figure of `directory` from its tables; the paths written."""
    directory = Path(directory)
    tables = read_tables(directory)
    paths = study_figures(tables["results"], tables["summary"], directory)
    if "inverse_bound" in tables:
        paths += save_figure(inverse_bound_figure(tables["inverse_bound"]),
                             directory / "inverse-bound" / "inverse_bound")
    if "robustness" in tables:
        paths += save_figure(robustness_figure(tables["robustness"]), directory / "robustness")
    if "inverse_ratio" in tables:
        paths += save_figure(inverse_ratio_figure(tables["inverse_ratio"], tables["inverse_ratio_summary"]),
                             directory / "inverse-ratio" / "inverse_ratio")
    if "scaling" in tables:
        paths += save_figure(scaling_figure(tables["scaling"]), directory / "scaling")
    return paths


def low_data_efficiency_figure(summary: pd.DataFrame, paired: pd.DataFrame, efficiency: pd.DataFrame,
                               metric: str = "test_nll", title: str | None = None, width: float = TEXT_WIDTH):
    """The low-data sample-efficiency readout, drawn from its tables only (like the headline figure).

    Left: each structure's mean `metric` against n with its 95% Student-t interval over replicates
    (`reparam.lm.compare.score_summary`; hollow markers: fewer than 3 replicates, no interval), the target level
    (dotted) and where each structure's mean curve reaches it (`efficiency`: `reparam.lm.low_data.report.
    sample_efficiency`; the ratio in the legend). Right: the paired difference against the baseline with its
    paired t interval (`reparam.lm.compare.paired_differences`), the equivalence margin shaded around 0.
    n on a log axis with ticks at the measured n."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig, axes = _ld_grid(1, 2, width, PANEL_HEIGHT)
    left, right = axes[0]
    ns = summary["n"].unique() if len(summary) else [1]
    eff = efficiency.set_index("structure") if len(efficiency) else pd.DataFrame()
    ratio_col = next((c for c in efficiency.columns if c.startswith("ratio_vs_")), None) if len(efficiency) else None
    handles = {}
    for structure, g in summary.groupby("structure"):
        g = g.sort_values("n")
        mean = g[f"{metric}_mean"].to_numpy(dtype=float)
        lo, hi = g[f"{metric}_ci_low"].to_numpy(dtype=float), g[f"{metric}_ci_high"].to_numpy(dtype=float)
        has = np.isfinite(lo) & np.isfinite(hi)
        color = color_for(structure)
        label = structure
        if structure in eff.index and np.isfinite(eff.loc[structure, "n_needed"]):
            at_most = bool(eff.loc[structure, "at_most"]) if "at_most" in eff else False
            label += (f": reaches the target at n {'≤' if at_most else chr(0x2248)} "
                      f"{eff.loc[structure, 'n_needed']:.0f}")
            if ratio_col and np.isfinite(eff.loc[structure, ratio_col]) and eff.loc[structure, ratio_col] != 1:
                label += f" (ratio {eff.loc[structure, ratio_col]:.2f})"
            left.plot([eff.loc[structure, "n_needed"]], [eff.loc[structure, "target"]], "v", color=color, ms=6)
        handles[label], = left.plot(g["n"], mean, "-", color=color)
        if has.any():
            left.errorbar(g["n"][has], mean[has], yerr=np.vstack([mean[has] - lo[has], hi[has] - mean[has]]).clip(min=0),
                          fmt="o", ms=3, capsize=2, color=color, lw=0.9)
        left.plot(g["n"][~has], mean[~has], "o", ms=3.5, color=color, mfc="white")
    if len(efficiency):
        target = float(efficiency.target.iloc[0])
        left.axhline(target, color="0.4", ls=":", lw=0.9)
        handles[f"target {target:.3f}"] = Line2D([], [], color="0.4", ls=":")
    if not len(summary):
        _no_data(left)
    _log_n_axis(left, ns)
    left.set_yscale("linear")
    left.set_xlabel(r"training examples $n$")
    left.set_ylabel(f"{'test NLL (nats/token)' if metric == 'test_nll' else metric}")
    left.set_title("mean over replicates, 95% t interval")
    left.grid(alpha=0.3)
    d = paired[paired.metric == metric].sort_values("n") if len(paired) else paired
    for structure, g in (d.groupby("structure") if len(d) else []):
        y = g["mean_diff"].to_numpy(dtype=float)
        lo, hi = g["ci_low"].to_numpy(dtype=float), g["ci_high"].to_numpy(dtype=float)
        has = np.isfinite(lo) & np.isfinite(hi)
        color = color_for(structure)
        right.plot(g["n"], y, "-", color=color, lw=1.0)
        if has.any():
            right.errorbar(g["n"][has], y[has], yerr=np.vstack([y[has] - lo[has], hi[has] - y[has]]).clip(min=0),
                           fmt="o", ms=3, capsize=2, color=color, lw=0.9)
        right.plot(g["n"][~has], y[~has], "o", ms=3.5, color=color, mfc="white")
        handles[f"{structure} \N{MINUS SIGN} {g['baseline'].iloc[0]}: paired t interval"] = Line2D(
            [], [], color=color, marker="o", ms=3)
    if len(d) and "margin" in d and np.isfinite(d["margin"].astype(float)).any():
        m = float(d["margin"].dropna().iloc[0])
        right.axhspan(-m, m, color="0.85", lw=0)
        handles[f"equivalence margin \N{PLUS-MINUS SIGN}{m:g}"] = Patch(color="0.85", lw=0)
    if not len(d):
        _no_data(right)
    right.axhline(0.0, color="k", lw=0.7)
    _log_n_axis(right, ns)
    right.set_yscale("linear")
    right.set_xlabel(r"training examples $n$")
    right.set_ylabel(f"\N{GREEK CAPITAL LETTER DELTA} {'test NLL' if metric == 'test_nll' else metric}")
    right.set_title("paired difference")
    right.grid(alpha=0.3)
    handles["hollow: insufficient (< 3 replicates, no interval)"] = Line2D([], [], marker="o", mfc="white",
                                                                           color="0.3", ls="none")
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=2, fontsize=7)
    _lm_suptitle(fig, title, width)
    return fig
