"""The estimator of the planted study and the errors it is scored by.

* estimator: float64 full-batch L-BFGS (strong Wolfe) from several random starts; the estimate is the start
  with the lowest training NLL. VALID when its relative gap (NLL_hat - NLL_truth) / NLL_truth <= gap_tol
  (the basic inequality; the truth is a feasible point for every student of its family); iterations and the
  final gradient norm are diagnostics.
* errors (`prefix_errors`): per-(layer, key-value head) Voronoi loss in prefix space (atom = [key; value] of
  one position in one head, weight 1: prefix positions have no bias), mean over heads; relative distance to
  the nearest true atom of the same head; held-out KL(teacher || student) per token (exact, over the vocab).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from reparam.losses import voronoi_loss

from ..prefix import PrefixModel, fixed_prefix, head_atoms
from ..structures import get_structure
from .model import logits, natural_kv_rms
from .truth import PlantedConfig, PlantedData, make_student, plant_truth, sample_data, seed_of


@dataclass
class LBFGSConfig:
    """The estimator (the `fit` block of reparam planted-prefix): float64 full-batch L-BFGS from random starts.

    starts: random starts per fit; the estimate is the one with the lowest training NLL.
    max_iter: L-BFGS iterations per start.
    history: L-BFGS memory.
    grad_tol: stop when the max |gradient| entry is below this; a fit is `converged` when its final max |gradient|
        is <= grad_tol (a diagnostic: validity is the gap).
    gap_tol: validity: relative gap (NLL_hat - NLL_truth) / NLL_truth <= gap_tol.
    warm_start: one more start per fit from the estimate kept at the next smaller size of the same (replicate,
        structure, regime) (continuation in n: the start is computed from a subset of the same data, so the
        result is still an estimator of the fit's sample); the kept estimates are saved beside the logs, so a
        resumed run continues the same chain. The smallest size has the random starts only.
    """

    starts: int = 2
    max_iter: int = 60
    history: int = 50
    grad_tol: float = 1e-9
    gap_tol: float = 1e-8
    warm_start: bool = False

    def __post_init__(self):
        for name in ("starts", "max_iter", "history"):
            if getattr(self, name) < 1:
                raise ValueError(f"LBFGSConfig.{name}={getattr(self, name)} must be >= 1")
        if not isinstance(self.warm_start, bool):
            raise ValueError(f"LBFGSConfig.warm_start={self.warm_start!r} must be true or false")
        if self.grad_tol < 0 or self.gap_tol < 0:
            raise ValueError(f"LBFGSConfig.grad_tol={self.grad_tol} and gap_tol={self.gap_tol} must be >= 0")


def token_counts(targets: torch.Tensor, vocab: int) -> torch.Tensor:
    """(n, T, vocab) float64 counts of the sampled targets (n, draws, T) per (sequence, position, token)."""
    n, _, T = targets.shape
    counts = torch.zeros(n, T, vocab, dtype=torch.float64)
    counts.scatter_add_(-1, targets.transpose(1, 2), torch.ones(targets.transpose(1, 2).shape, dtype=torch.float64))
    return counts


def nll(model: PrefixModel, inputs: torch.Tensor, targets: torch.Tensor, counts: torch.Tensor | None = None
        ) -> torch.Tensor:
    """Mean negative log-likelihood per sampled token. inputs (n, T), targets (n, draws, T). Computed from the
    token counts (`counts`, or counted here), so its cost does not grow with the draws per position."""
    logp = logits(model, inputs)  # (n, T, vocab)
    if counts is None:
        counts = token_counts(targets, logp.shape[-1])
    return -(counts * logp).sum() / targets.numel()


@torch.no_grad()
def heldout_kl(model: nn.Module, data: PlantedData) -> float:
    """KL(teacher || model) per token on the held-out inputs (exact over the vocabulary); `model` is a student
    or the bare base (the KL of using no prefix at all)."""
    logp = logits(model, data.test_inputs)
    return float((data.test_logp.exp() * (data.test_logp - logp)).sum(-1).mean())


def prefix_errors(kv_hat: torch.Tensor, kv_true: torch.Tensor) -> dict:
    """Prefix-space errors, positions matched per (layer, key-value head) Voronoi-style.

    kv_*: (layers, 2, kv_heads, L, head_dim); L may differ (over-specified). Returns
    ``voronoi``: Voronoi loss (THEORY section 4, weights 1) per (layer, head), averaged over heads;
    ``rel_dist``: sqrt(sum ||atom_hat - nearest true atom of its head||^2 / sum ||true atom||^2).
    Both are invariant to permuting positions separately in every head, as attention is.
    """
    a_hat, a_true = head_atoms(kv_hat.detach().double().cpu()), head_atoms(kv_true.detach().double().cpu())
    w_hat = torch.ones(a_hat.shape[:-1], dtype=torch.float64)  # (layers, heads, L_hat)
    w_true = torch.ones(a_true.shape[:-1], dtype=torch.float64)
    vor = torch.as_tensor(voronoi_loss(a_hat, w_hat, a_true, w_true))  # (layers, heads)
    d2 = torch.cdist(a_hat, a_true).pow(2).min(dim=-1).values.sum()  # nearest true atom = its Voronoi cell
    return {"voronoi": float(vor.mean()), "rel_dist": float((d2 / a_true.pow(2).sum()).sqrt())}


def fit_lbfgs(model: PrefixModel, inputs: torch.Tensor, targets: torch.Tensor, fc: LBFGSConfig) -> dict:
    """Full-batch L-BFGS on the training NLL. Returns the final NLL, iterations and max |gradient|."""
    counts = token_counts(targets, model.base.config.vocab_size)
    params = [p for p in model.prefix.parameters() if p.requires_grad]
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=fc.max_iter, max_eval=int(fc.max_iter * 1.25),
                            history_size=fc.history, tolerance_grad=fc.grad_tol, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nll(model, inputs, targets, counts)
        loss.backward()
        return loss

    t0 = time.perf_counter()
    opt.step(closure)
    wall = time.perf_counter() - t0
    opt.zero_grad()
    loss = nll(model, inputs, targets, counts)
    loss.backward()
    grad = max(float(p.grad.abs().max()) for p in params)
    state = opt.state[params[0]]
    return {"train_nll": float(loss.detach()), "iterations": int(state.get("n_iter", 0)), "evals": int(state.get("func_evals", 0)),
            "grad_max": grad, "converged": bool(grad <= fc.grad_tol), "max_iter": fc.max_iter, "fit_s": wall,
            "finite": bool(math.isfinite(float(loss.detach())))}


class PlantedStudy:
    """Everything of one replicate that does not depend on the student: base, truths, data."""

    def __init__(self, base: nn.Module, pc: PlantedConfig, fc: LBFGSConfig, replicate: int, n_max: int):
        self.base, self.pc, self.fc, self.replicate = base, pc, fc, replicate
        g = torch.Generator().manual_seed(seed_of("rms", 0))
        self.kv_rms = natural_kv_rms(base, torch.randint(0, base.config.vocab_size, (64, pc.seq_len), generator=g))
        families = sorted({pc.family(s) for s in pc.structures})
        self.truths = {f: plant_truth(base, f, pc, replicate, self.kv_rms) for f in families}
        self.data = {}
        self.truth_kl_base = {}
        for f, truth in self.truths.items():
            teacher = fixed_prefix(base, truth.kv)
            self.data[f] = sample_data(teacher, pc, n_max, replicate)
            self.truth_kl_base[f] = heldout_kl(self.base, self.data[f])

    def fit(self, structure: str, regime: str, n: int, draws: int | None = None,
            warm: dict | None = None) -> tuple[list[dict], dict]:
        """All starts of one fit on the first n sequences with the first `draws` sampled tokens per position (None:
        all of them): one row per start; the selected start (lowest training NLL) is flagged. `warm`: trainable
        parameters of a student of the same structure and length (the kept estimate of a smaller size), one more
        start. Returns (rows, the selected start's trainable parameters)."""
        family = self.pc.family(structure)
        truth, data = self.truths[family], self.data[family]
        L = self.pc.prefix_len + (self.pc.extra if regime == "over" else 0)
        d = data.targets.shape[1] if draws is None else int(draws)
        if not 1 <= d <= data.targets.shape[1]:
            raise ValueError(f"draws={d} is outside 1..{data.targets.shape[1]} (planted.draws)")
        inputs, targets = data.inputs[:n], data.targets[:n, :d]
        teacher = fixed_prefix(self.base, truth.kv)
        with torch.no_grad():
            nll_truth = float(nll(teacher, inputs, targets))
        rows, states = [], []
        starts = [("random", s) for s in range(self.fc.starts)] + ([("warm", self.fc.starts)] if warm else [])
        for kind, start in starts:
            student = make_student(self.base, structure, L, self.pc, truth,
                                   seed_of("start", structure, L, self.replicate, start), self.kv_rms)
            if kind == "warm":
                with torch.no_grad():
                    for name, p in student.prefix.named_parameters():
                        if p.requires_grad:
                            p.copy_(warm[name])
            diag = fit_lbfgs(student, inputs, targets, self.fc)
            rel_gap = (diag["train_nll"] - nll_truth) / abs(nll_truth)
            with torch.no_grad():
                kv_hat = student.prefix()
            errs = prefix_errors(kv_hat, truth.kv) if diag["finite"] else {"voronoi": np.nan, "rel_dist": np.nan}
            kl = heldout_kl(student, data) if diag["finite"] else np.nan
            states.append({name: p.detach().clone() for name, p in student.prefix.named_parameters() if p.requires_grad})
            rows.append({"structure": structure, "regime": regime, "n": int(n), "replicate": int(self.replicate),
                         "start": start, "start_kind": kind, "sequences": int(n), "draws": d,
                         "tokens": int(n * d * self.pc.seq_len), "truth": family, "prefix_len": L,
                         "true_prefix_len": self.pc.prefix_len,
                         "in_theorems": get_structure(structure).in_theorems, "nll_truth": nll_truth,
                         "rel_gap": rel_gap, "valid": bool(diag["finite"] and rel_gap <= self.fc.gap_tol),
                         **diag, **errs, "kl": kl, "kl_truth_vs_base": self.truth_kl_base[family],
                         "trainable": sum(p.numel() for p in student.prefix.parameters() if p.requires_grad)})
        best = int(np.nanargmin([r["train_nll"] if r["finite"] else np.inf for r in rows]))
        for i, r in enumerate(rows):
            r["selected"] = i == best
        return rows, states[best]

    def continue_fit(self, structure: str, regime: str, n: int, draws: int | None, state: dict, fc: LBFGSConfig,
                     start: int) -> tuple[dict, dict]:
        """One more start of a recorded fit: L-BFGS from `state` (the kept estimate's trainable parameters) for
        fc.max_iter more iterations (`reparam planted-prefix mode=polish`). Returns (row, its parameters); the row's
        ``iterations`` counts this run only, the caller adds the earlier budget."""
        family = self.pc.family(structure)
        truth, data = self.truths[family], self.data[family]
        L = self.pc.prefix_len + (self.pc.extra if regime == "over" else 0)
        d = data.targets.shape[1] if draws is None else int(draws)
        inputs, targets = data.inputs[:n], data.targets[:n, :d]
        with torch.no_grad():
            nll_truth = float(nll(fixed_prefix(self.base, truth.kv), inputs, targets))
        student = make_student(self.base, structure, L, self.pc, truth, seed_of("start", structure, L, self.replicate, 0),
                               self.kv_rms)
        with torch.no_grad():
            for name, p in student.prefix.named_parameters():
                if p.requires_grad:
                    p.copy_(state[name])
        diag = fit_lbfgs(student, inputs, targets, fc)
        rel_gap = (diag["train_nll"] - nll_truth) / abs(nll_truth)
        with torch.no_grad():
            kv_hat = student.prefix()
        errs = prefix_errors(kv_hat, truth.kv) if diag["finite"] else {"voronoi": np.nan, "rel_dist": np.nan}
        kl = heldout_kl(student, data) if diag["finite"] else np.nan
        row = {"structure": structure, "regime": regime, "n": int(n), "replicate": int(self.replicate), "start": start,
               "start_kind": "continued", "sequences": int(n), "draws": d, "tokens": int(n * d * self.pc.seq_len),
               "truth": family, "prefix_len": L, "true_prefix_len": self.pc.prefix_len,
               "in_theorems": get_structure(structure).in_theorems, "nll_truth": nll_truth, "rel_gap": rel_gap,
               "valid": bool(diag["finite"] and rel_gap <= self.fc.gap_tol), **diag, **errs, "kl": kl,
               "kl_truth_vs_base": self.truth_kl_base[family],
               "trainable": sum(p.numel() for p in student.prefix.parameters() if p.requires_grad)}
        return row, {name: p.detach().clone() for name, p in student.prefix.named_parameters() if p.requires_grad}
