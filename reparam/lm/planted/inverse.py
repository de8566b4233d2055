"""The inverse bound inside attention (THEORY section 7, last paragraph): the attention witness and psi(delta).

A prefix position has no bias of its own, so the synthetic witness (split one true atom into two with the SAME key
and weights alpha, 1 - alpha) needs a direction e of the key space on which every query of the head has the same
component, e . q = c0 != 0: shifting a key by t e multiplies that position's attention weight by
exp(t c0 / sqrt(head_dim)) for every query, i.e. it acts as a bias.

* `query_constancy(base, inputs)`: per (layer, head), how close the queries come to such a direction:
  min over unit e of std(e . q) / |mean(e . q)| on a sample of inputs (0: an exact constant component; the
  direction is the minimiser of the generalised Rayleigh quotient e^T C e / e^T m m^T e).
* `constant_query_base(base, c0)`: a copy of a GPT-2 base whose every head HAS one (its query weights lose the
  direction e_{layer, head} and its query bias gets c0 along it): the base on which the witness exists.
* `attention_witness(...)`: the over-specified prefix (L* + 1 positions) that splits true position j in every
  (layer, head): keys k*_j + log(alpha) s e and k*_j + log(1 - alpha) s e (s = sqrt(head_dim) / c0), values
  v*_j + (1 - alpha) u and v*_j - alpha u. It reproduces the teacher's logits exactly (round-off) while its
  prefix stays at a distance ~ |u| from the truth.
* `psi_curve(...)`: psi(delta) = min { sqrt(KL(teacher || student)) on a fixed input sample : rel_dist(student,
  truth) = delta }, per structure and regime: for every delta (largest first) a penalised L-BFGS solve from the
  previous delta's best point (continuation), from random perturbations of the truth's parameters and (where one is
  given) from the witness, then every solution is moved along the ray from the base point (the truth's parameters;
  over-specified: the truth plus a copy of its last position) until the EXACT rel_dist equals delta, so every
  reported psi is attained at a feasible prefix. The distance is the relative prefix distance (the headline's
  error): the unit-weight Voronoi loss of an over-specified prefix is >= 1 per head whatever it is (a cell holds two
  positions or none), so it cannot go to 0; it is recorded for every solution.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from ..prefix import PrefixModel, fixed_prefix, head_atoms
from ..structures import to_flat
from .estimator import prefix_errors
from .model import logits
from .truth import PlantedConfig, Truth, make_student, seed_of


# ------------------------------------------------------------------------------------------------ queries


def _gpt2_blocks(base: nn.Module):
    if getattr(base.config, "model_type", "") != "gpt2":
        raise ValueError(f"the attention witness is built for GPT-2 bases (got {base.config.model_type!r})")
    return base.transformer.h


@torch.no_grad()
def head_queries(base: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """(layers, heads, n * T, head_dim) queries of every head of a GPT-2 base on `inputs` (n, T), without prefix."""
    blocks = _gpt2_blocks(base)
    d, H = base.config.n_embd, base.config.n_head
    out = base(inputs, output_hidden_states=True)
    qs = []
    for layer, block in enumerate(blocks):
        h = block.ln_1(out.hidden_states[layer])
        q = block.attn.c_attn(h)[..., :d]  # (n, T, d)
        qs.append(q.reshape(-1, H, d // H).transpose(0, 1))
    return torch.stack(qs)


@torch.no_grad()
def query_constancy(base: nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (layer, head): min over unit e of std(e . q) / |mean(e . q)| and the minimising e. Returns
    (ratio (layers, heads), e (layers, heads, head_dim)); ratio 0 = an exact constant query component."""
    q = head_queries(base, inputs).double()  # (layers, heads, N, hd)
    mean = q.mean(2)
    cov = torch.einsum("lhni,lhnj->lhij", q - mean[:, :, None], q - mean[:, :, None]) / q.shape[2]
    ratios, dirs = torch.zeros(q.shape[:2], dtype=torch.float64), torch.zeros(mean.shape, dtype=torch.float64)
    for l in range(q.shape[0]):
        for h in range(q.shape[1]):
            # min e^T C e / (m . e)^2: with C = U S U^T (C is full rank on a generic base), e ∝ C^-1 m and the
            # minimum is 1 / (m^T C^-1 m); a (near-)singular C with m outside its range gives ~0
            c, m = cov[l, h], mean[l, h]
            evals, evecs = torch.linalg.eigh(c)
            floor = evals.max() * 1e-14
            inv = evecs @ torch.diag(1.0 / evals.clamp(min=floor)) @ evecs.T
            e = inv @ m
            e = e / e.norm()
            ratios[l, h] = float((e @ c @ e).clamp(min=0).sqrt() / (m @ e).abs())
            dirs[l, h] = e
    return ratios, dirs


@torch.no_grad()
def query_halfspace(base: nn.Module, inputs: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Per (layer, head): min over the sampled queries of (e . q) / mean(e . q) along the head's direction e
    (`query_constancy`). > 0 in a head: every query has a positive component along e, so a prefix position whose key
    moves along -e loses its attention weight in that head (weight ~ exp(-t e.q / sqrt(head_dim)) -> 0): an extra
    position can be switched off, but only by moving it arbitrarily far from the truth."""
    q = head_queries(base, inputs).double()  # (layers, heads, N, hd)
    proj = torch.einsum("lhni,lhi->lhn", q, dirs.double())
    return proj.min(-1).values / proj.mean(-1)


def constant_query_base(base: nn.Module, c0: float = 1.0, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """A copy of a GPT-2 base whose every (layer, head) has an exact constant query component: a random unit
    direction e of the head's query space is projected out of its query weights and the query bias is set to c0
    along it, so e . q = c0 for every input. Returns (the base, e (layers, heads, head_dim))."""
    new = copy.deepcopy(base)
    blocks = _gpt2_blocks(new)
    d, H = new.config.n_embd, new.config.n_head
    hd = d // H
    g = torch.Generator().manual_seed(seed)
    dirs = torch.zeros(len(blocks), H, hd, dtype=torch.float64)
    with torch.no_grad():
        for layer, block in enumerate(blocks):
            W, b = block.attn.c_attn.weight, block.attn.c_attn.bias  # Conv1D: x @ W + b, W (d, 3d)
            for h in range(H):
                e = torch.randn(hd, generator=g, dtype=torch.float64)
                e = (e / e.norm()).to(W.dtype)
                cols = slice(h * hd, (h + 1) * hd)
                P = torch.eye(hd, dtype=W.dtype) - torch.outer(e, e)
                W[:, cols] = W[:, cols] @ P
                b[cols] = b[cols] @ P + c0 * e
                dirs[layer, h] = e
    return new, dirs


def attention_witness(truth_kv: torch.Tensor, dirs: torch.Tensor, c0: float, position: int = 0, alpha: float = 0.3,
                      scale: float = 1.0, seed: int = 0) -> torch.Tensor:
    """The split of true `position` in every (layer, head) into two positions: (layers, 2, heads, L* + 1, head_dim).

    With e . q = c0 for every query (dirs: the heads' directions e), the two positions' weights are alpha and
    1 - alpha times the true one's, and their values average to the true value: f is unchanged. `scale` is
    |u| / (RMS norm of a true value), u a random direction per head."""
    layers, _, heads, L, hd = truth_kv.shape
    g = torch.Generator().manual_seed(seed)
    kv = torch.cat([truth_kv, truth_kv[:, :, :, position:position + 1]], dim=3).clone()
    s = math.sqrt(hd) / c0
    v_rms = float(truth_kv[:, 1].pow(2).sum(-1).mean().sqrt())
    for layer in range(layers):
        for h in range(heads):
            e = dirs[layer, h].to(kv.dtype)
            u = torch.randn(hd, generator=g, dtype=kv.dtype)
            u = u / u.norm() * scale * v_rms
            kv[layer, 0, h, position] += math.log(alpha) * s * e
            kv[layer, 0, h, L] += math.log(1 - alpha) * s * e
            kv[layer, 1, h, position] += (1 - alpha) * u
            kv[layer, 1, h, L] -= alpha * u
    return kv


@torch.no_grad()
def kl_on(model: nn.Module, inputs: torch.Tensor, teacher_logp: torch.Tensor) -> float:
    """KL(teacher || model) per token on `inputs` (exact over the vocabulary)."""
    logp = logits(model, inputs)
    return float((teacher_logp.exp() * (teacher_logp - logp)).sum(-1).mean())


# ------------------------------------------------------------------------------------------------ psi(delta)


@dataclass
class PsiConfig:
    """psi(delta) of the planted model (`reparam planted-prefix mode=inverse`).

    deltas: relative prefix distances, solved from the largest down (continuation).
    sequences: input sequences (of planted.seq_len tokens) the KL is averaged over (a fixed sample of mu).
    random_starts: random perturbations of the truth's parameters per delta (besides continuation).
    max_iter: L-BFGS iterations per solve.
    penalty: weight of (rel_dist / delta - 1)^2 relative to the KL of the start (the exact constraint is then met by
        moving along the ray from the base point).
    structures, regimes: the cases (structures registered for the planted study).
    c0: the constant query component of the witness base (`constant_query_base`).
    bases: random_init (the study's base) and/or constant_query (the same base with a constant query component in
        every head, `constant_query_base`: the base on which the attention witness exists).
    witness_structures: the structures whose psi is also measured on the constant_query base.
    replicate: the truth's replicate.
    holds_ratio: verdict "holds" when psi/delta at the smallest delta is >= holds_ratio x its value at the largest
        delta (bounded away from 0 over the grid); "fails" when psi/delta at some delta is below round_off;
        otherwise "decreasing" (the grid cannot tell a slower bound from a failure); "unmeasured" when the rays
        from the base point reach fewer than two deltas (an over-specified embedding_only prefix: its extra
        virtual token is not a copy of a true position, so the base point is already at some distance).
    round_off: psi below this is round-off (an f-equivalent prefix).
    """

    deltas: list[float] = field(default_factory=lambda: [3.0, 1.0, 0.3, 0.1, 0.03, 0.01])
    sequences: int = 16
    random_starts: int = 1
    max_iter: int = 40
    penalty: float = 10.0
    structures: list[str] = field(default_factory=lambda: ["independent", "shared_fixed", "shared", "embedding_only"])
    regimes: list[str] = field(default_factory=lambda: ["exact", "over"])
    c0: float = 4.0
    bases: list[str] = field(default_factory=lambda: ["random_init", "constant_query"])
    witness_structures: list[str] = field(default_factory=lambda: ["independent", "shared_fixed"])
    replicate: int = 0
    holds_ratio: float = 0.25
    round_off: float = 1e-6

    def __post_init__(self):
        self.deltas = sorted((float(d) for d in self.deltas), reverse=True)
        if not self.deltas or min(self.deltas) <= 0:
            raise ValueError(f"PsiConfig.deltas={self.deltas} must be positive")
        for name in ("sequences", "max_iter"):
            if getattr(self, name) < 1:
                raise ValueError(f"PsiConfig.{name}={getattr(self, name)} must be >= 1")
        bad = [b for b in self.bases if b not in ("random_init", "constant_query")]
        if bad or not self.bases:
            raise ValueError(f"PsiConfig.bases={self.bases} must be a non-empty subset of [random_init, constant_query]")
        if self.random_starts < 0 or self.penalty <= 0 or self.c0 == 0:
            raise ValueError("PsiConfig.random_starts must be >= 0, penalty > 0 and c0 != 0")


def _trainable(student: PrefixModel) -> list[tuple[str, torch.Tensor]]:
    return [(n, p) for n, p in student.prefix.named_parameters() if p.requires_grad]


def truth_point(student: PrefixModel, truth: Truth) -> dict[str, torch.Tensor]:
    """The student's parameters at the truth (exact: its prefix IS the truth; over-specified: the truth plus a copy
    of its last position): the base point of the rays. Position-indexed parameters (a free prefix tensor, latents,
    input embeddings) take the truth's rows; a learned map takes the truth's map."""
    src = dict(truth.encoder.named_parameters())
    out = {}
    for name, p in _trainable(student):
        if name == "flat":
            value = to_flat(truth.kv)
        elif name in src:
            value = src[name].detach()
        else:
            raise ValueError(f"no truth value for the student's parameter {name!r}")
        value = value.to(p.dtype)
        if value.shape[0] < p.shape[0] and value.shape[1:] == p.shape[1:]:  # over-specified: copy the last row
            value = torch.cat([value, value[-1:].expand(p.shape[0] - value.shape[0], *value.shape[1:])])
        if value.shape != p.shape:
            raise ValueError(f"truth value of {name!r} has shape {tuple(value.shape)}, the student {tuple(p.shape)}")
        out[name] = value.clone()
    return out


def _set(student: PrefixModel, point: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, p in _trainable(student):
            p.copy_(point[name])


def _rel(student: PrefixModel, truth_kv: torch.Tensor) -> torch.Tensor:
    """Differentiable relative prefix distance (prefix_errors' rel_dist)."""
    a_hat, a_true = head_atoms(student.prefix()), head_atoms(truth_kv)
    d2 = torch.cdist(a_hat, a_true).pow(2).min(dim=-1).values.sum()
    return (d2 / a_true.pow(2).sum()).sqrt()


def _ray(student, base_pt, point, truth_kv, delta, t_max: float = 1e3) -> dict | None:
    """The point base + t (point - base) whose exact rel_dist is delta (bisection on t; None when unreachable)."""
    diff = {k: point[k] - base_pt[k] for k in point}

    def rel_at(t):
        _set(student, {k: base_pt[k] + t * diff[k] for k in diff})
        with torch.no_grad():
            return float(_rel(student, truth_kv))

    lo, hi = 0.0, 1.0
    if rel_at(lo) > delta:
        return None
    while rel_at(hi) < delta:
        hi *= 2
        if hi > t_max:
            return None
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if rel_at(mid) < delta else (lo, mid)
    t = 0.5 * (lo + hi)
    return {k: base_pt[k] + t * diff[k] for k in diff}


def _solve(student, point, truth_kv, inputs, teacher_logp, delta, cfg: PsiConfig) -> dict:
    _set(student, point)
    params = [p for _, p in _trainable(student)]
    weight = cfg.penalty * max(kl_on(student, inputs, teacher_logp), 1e-12)
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=cfg.max_iter, history_size=30, tolerance_grad=1e-12,
                            tolerance_change=1e-16, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logp = logits(student, inputs)
        kl = (teacher_logp.exp() * (teacher_logp - logp)).sum(-1).mean()
        loss = kl + weight * (_rel(student, truth_kv) / delta - 1) ** 2
        loss.backward()
        return loss

    opt.step(closure)
    return {k: p.detach().clone() for k, p in _trainable(student)}


def witness_at_delta(truth_kv: torch.Tensor, dirs: torch.Tensor, c0: float, delta: float, position: int | None = None,
                     alpha: float = 0.5, seed: int = 0) -> torch.Tensor | None:
    """The member of the witness family (`attention_witness`, split of the last true position) whose rel_dist is
    `delta` (bisection on |u|); None when delta is below the family's smallest distance (the key shift
    log(alpha) sqrt(head_dim) / c0 alone)."""
    position = truth_kv.shape[3] - 1 if position is None else position

    def rel(scale):
        return prefix_errors(attention_witness(truth_kv, dirs, c0, position, alpha, scale, seed), truth_kv)["rel_dist"]

    lo, hi = 0.0, 1.0
    if rel(lo) > delta:
        return None
    while rel(hi) < delta:
        hi *= 2
        if hi > 1e4:
            return None
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if rel(mid) < delta else (lo, mid)
    return attention_witness(truth_kv, dirs, c0, position, alpha, 0.5 * (lo + hi), seed)


def psi_curve(base: nn.Module, truth: Truth, structure: str, regime: str, pc: PlantedConfig, kv_rms: torch.Tensor,
              cfg: PsiConfig, witness=None, replicate: int = 0) -> list[dict]:
    """psi(delta) for one structure and regime (module docstring): one row per delta with the best feasible point's
    sqrt(KL), rel_dist (= delta), its Voronoi loss, and which start won."""
    L = pc.prefix_len + (pc.extra if regime == "over" else 0)
    g = torch.Generator().manual_seed(seed_of("psi-inputs", replicate))
    inputs = torch.randint(0, base.config.vocab_size, (cfg.sequences, pc.seq_len), generator=g)
    teacher_logp = logits(fixed_prefix(base, truth.kv), inputs).detach()
    student = make_student(base, structure, L, pc, truth, seed_of("psi", structure, L, replicate), kv_rms)
    base_pt = truth_point(student, truth)
    _set(student, base_pt)
    with torch.no_grad():
        rel0 = float(_rel(student, truth.kv))
    psi0 = math.sqrt(max(kl_on(student, inputs, teacher_logp), 0.0))
    rng = torch.Generator().manual_seed(seed_of("psi-starts", structure, regime, replicate))
    use_witness = witness is not None and structure == "independent" and regime == "over"
    rows, previous = [], []
    for delta in cfg.deltas:
        starts = [("continuation", p) for p in previous]
        for _ in range(cfg.random_starts):
            starts.append(("random", {k: v + torch.randn(v.shape, generator=rng, dtype=v.dtype) * (v.std() + 1e-3)
                                      for k, v in base_pt.items()}))
        results = []
        if use_witness:  # witness(delta): the f-equivalent prefix at distance delta, or None (`witness_at_delta`)
            kv = witness(delta)
            if kv is not None:
                starts.append(("witness", {"flat": to_flat(kv).to(torch.float64)}))
        for kind, start in starts:
            start = start if kind == "witness" else _ray(student, base_pt, start, truth.kv, delta)
            if start is None:
                continue
            sol = _ray(student, base_pt, _solve(student, start, truth.kv, inputs, teacher_logp, delta, cfg),
                       truth.kv, delta) if kind != "witness" else None  # the witness is already at psi = round-off
            for name, pt in ((kind, start), (kind + "+solve", sol)):
                if pt is None:
                    continue
                _set(student, pt)
                with torch.no_grad():
                    errs = prefix_errors(student.prefix(), truth.kv)
                kl = max(kl_on(student, inputs, teacher_logp), 0.0)
                results.append((math.sqrt(kl), name, pt, errs))
        if not results:
            rows.append({"structure": structure, "regime": regime, "delta": delta, "psi": np.nan, "ratio": np.nan,
                         "start": "none", "rel_dist": np.nan, "voronoi": np.nan, "rel0": rel0, "psi0": psi0,
                         "replicate": replicate})
            continue
        results.sort(key=lambda r: r[0])
        psi, kind, pt, errs = results[0]
        previous = [r[2] for r in results[:2]]
        rows.append({"structure": structure, "regime": regime, "delta": delta, "psi": psi, "ratio": psi / delta,
                     "start": kind, "rel_dist": errs["rel_dist"], "voronoi": errs["voronoi"], "rel0": rel0,
                     "psi0": psi0, "replicate": replicate})
    return rows


def psi_verdicts(curves, cfg: PsiConfig):
    """Per (base, structure, regime): psi/delta at the largest and smallest delta and the verdict (PsiConfig)."""
    import pandas as pd

    rows = []
    curves = curves.assign(replicate=curves["replicate"].fillna(0).astype(int)) if "replicate" in curves else \
        curves.assign(replicate=0)
    for key, part in curves.groupby(["base", "structure", "regime", "replicate"]):
        reached = part[np.isfinite(part["psi"].astype(float))].sort_values("delta")
        r_small = reached["ratio"].iloc[0] if len(reached) else np.nan
        r_large = reached["ratio"].iloc[-1] if len(reached) else np.nan
        if len(reached) < 2:
            v = "unmeasured"  # the rays from the base point reach fewer than two of the deltas
        elif (reached["psi"] < cfg.round_off).any():
            v = "fails"
        elif r_small >= cfg.holds_ratio * r_large:
            v = "holds"
        else:
            v = "decreasing"
        rows.append({"base": key[0], "structure": key[1], "regime": key[2], "replicate": key[3],
                     "deltas_reached": len(reached),
                     "smallest_delta_reached": reached["delta"].min() if len(reached) else np.nan,
                     "ratio_smallest_delta": r_small,
                     "ratio_largest_delta": r_large, "min_psi": part["psi"].min(), "psi_at_base_point": part["psi0"].iloc[0],
                     "rel_dist_at_base_point": part["rel0"].iloc[0], "verdict": v})
    return pd.DataFrame(rows)
