"""Every figure, drawn from tidy tables only (never from in-memory fit objects).

One color per structure across every figure (`color_for`). Fits that failed the optimality certificate
are never averaged in: callers pass certified rows, and `error_vs_n` marks how many were dropped.
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
