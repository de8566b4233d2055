"""The minimax figure: the local lower bound LB(n) (reparam.minimax) beside the package's estimator's measured error,
on the same log-log axes, one panel per structure (and latent dimension) and regime. Drawn from the tables only
(figures/minimax/minimax.csv and minimax_measured.csv), never from in-memory fits."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .plots import PANEL_HEIGHT, TEXT_WIDTH, color_for, plt
from .validation import DataError

#: What each line of the figure is (legend text).
LABELS = {
    "lower_bound": "Le Cam bound, C = 1",
    "lower_bound_proven": "Le Cam bound, proven C",
    "measured": "estimator's mean error (95% CI)",
}


def _panels(bounds: pd.DataFrame, study: str) -> list[tuple[str, float]]:
    """(structure, latent_dim) columns in table order."""
    b = bounds[bounds["study"] == study]
    seen = []
    for key in zip(b["structure"], b["latent_dim"]):
        key = (key[0], float(key[1]) if pd.notna(key[1]) else np.nan)
        if not any(k[0] == key[0] and (k[1] == key[1] or (np.isnan(k[1]) and np.isnan(key[1]))) for k in seen):
            seen.append(key)
    return seen


def _select(table: pd.DataFrame, structure: str, latent_dim: float, regime: str) -> pd.DataFrame:
    t = table[(table["structure"] == structure) & (table["regime"] == regime)]
    if np.isnan(latent_dim):
        return t
    return t[t["latent_dim"].astype(float) == latent_dim]


def _positive(x: pd.Series, y: pd.Series, floor: float):
    keep = np.isfinite(y.to_numpy(float)) & (y.to_numpy(float) > floor)
    return x.to_numpy(float)[keep], y.to_numpy(float)[keep]


def minimax_figure(bounds: pd.DataFrame, measured: pd.DataFrame, study: str, xlabel: str, ylabel: str,
                   title: str | None = None):
    """One panel per (structure, latent_dim) column and regime row: LB(n) with C = 1 (dashed; planted: one line
    per truth replicate and base, the constant-query base dotted), the proven bound (solid) where a constant is
    established, and the estimator's mean error with its interval (markers). Bounds below 1e-8 of the panel's
    largest bound are not drawn (the two-point method has collapsed there: every computed pair is told apart)."""
    if study not in set(bounds["study"]):
        raise DataError(f"study={study!r} has no rows in the bound table")
    columns = _panels(bounds, study)
    regimes = [r for r in ("exact", "over") if r in set(bounds.loc[bounds["study"] == study, "regime"])]
    fig, axes = plt.subplots(len(regimes), len(columns), figsize=(TEXT_WIDTH, PANEL_HEIGHT * len(regimes) * 0.8),
                             squeeze=False, sharex=True)
    b_all = bounds[bounds["study"] == study]
    m_all = measured[measured["study"] == study] if len(measured) else measured
    for i, regime in enumerate(regimes):
        for j, (structure, latent_dim) in enumerate(columns):
            ax = axes[i, j]
            color = color_for(structure)
            b = _select(b_all, structure, latent_dim, regime)
            top = float(np.nanmax(b["lower_bound"])) if len(b) and np.isfinite(b["lower_bound"]).any() else 1.0
            floor = 1e-8 * top
            for (base, replicate), g in b.groupby(["base", "replicate"], dropna=False):
                g = g.sort_values("n")
                base = "" if pd.isna(base) else str(base)  # synthetic rows have none (empty in the csv)
                style = ":" if base == "constant_query" else "--"
                x, y = _positive(g["n"], g["lower_bound"], floor)
                first = replicate == b["replicate"].min()
                label = LABELS["lower_bound"] + (f" ({base} base)" if base else "") if first else None
                ax.plot(x, y, style, color=color, lw=1.0, alpha=0.9, label=label)
                if g["lower_bound_proven"].notna().any():
                    x, y = _positive(g["n"], g["lower_bound_proven"], floor)
                    ax.plot(x, y, "-", color=color, lw=1.4, label=LABELS["lower_bound_proven"] if first else None)
            m = _select(m_all, structure, latent_dim, regime) if len(m_all) else m_all
            if len(m):
                m = m.sort_values("n")
                low = np.clip(m["mean"] - m["lo"], 0, None)
                ax.errorbar(m["n"], m["mean"], yerr=[np.minimum(low, m["mean"] * 0.999), m["hi"] - m["mean"]],
                            fmt="o", color="black", ms=3, lw=0.8, capsize=1.5, label=LABELS["measured"])
            ax.set_xscale("log")
            ax.set_yscale("log")
            dim = "" if np.isnan(latent_dim) else f", r = {int(latent_dim)}"
            ax.set_title(f"{structure}{dim}\n{regime}-specified", fontsize=7.5)
            if j == 0:
                ax.set_ylabel(ylabel)
            ax.grid(True, which="major", alpha=0.3)
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), bbox_to_anchor=(0.5, -0.02))
    fig.supxlabel(xlabel, y=0.07, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig
