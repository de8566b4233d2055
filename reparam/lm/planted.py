"""The planted-prefix rate check in a real transformer (THEORY section 6), small enough for a CPU.

A frozen transformer plus a TRUE prefix is the teacher. Students with each prefix structure are fitted by
maximum likelihood to tokens SAMPLED from the teacher (so the data are noisy and n matters, as in the
synthetic study), and the learned prefix is compared with the true one in prefix space.

* base: a random-init transformer of the real Hugging Face architecture (``GPT2LMHeadModel`` or
  ``LlamaForCausalLM``), frozen, in float64. Its init std (`BaseConfig.init_std`) is larger than the
  library default 0.02 so that attention scores and logits are O(1), as in a trained model: with 0.02 every
  attention row is nearly uniform and the prefix keys would hardly matter. Inputs are uniform random tokens
  from its (small) vocabulary.
* truth (`plant_truth`), one of three families:
    - ``shared``: keys and values of L* positions are ONE fixed map of latents, k_i, v_i = MLP(p_i)
      (Linear(r, hidden) -> tanh -> Linear(hidden, layers*2*kv_dim), the Li & Liang layout), p_i ~ N(0, I_r);
      the last Linear is rescaled per (layer, key|value) so the prefix has `scale` times the RMS of the
      model's own cached keys/values (rescaling keeps the truth inside the family);
    - ``independent``: i.i.d. N(0, 1) keys/values rescaled the same way;
    - ``embedding``: L* input embeddings ~ N(0, s^2), s = RMS of the model's token embeddings, run through
      the frozen network (the truth of the ``embedding_only`` student).
* students (`STUDENTS`): ``independent`` (free keys/values), ``shared_fixed`` (the true map frozen, only
  latents learned: the theorems' setting), ``shared`` (Li & Liang's learned MLP: OUTSIDE the theorems, a
  learned MLP with hidden >= L can produce any prefix), ``embedding_only`` (prompt-tuning: learned input
  embeddings through the frozen network, fitted to the ``embedding`` truth); exact (L = L*) or
  over-specified (L = L* + `extra`).
* positions: every sequence sits at positions 0..T-1 whatever the prefix length (prefix keys carry no
  position), so an over-specified student's family contains the exact one's.
* estimator: float64 full-batch L-BFGS (strong Wolfe) from several random starts; the estimate is the start
  with the lowest training NLL. VALID when its relative gap (NLL_hat - NLL_truth) / NLL_truth <= gap_tol
  (the basic inequality; the truth is a feasible point for every student of its family); iterations and the
  final gradient norm are diagnostics.
* errors (`prefix_errors`): per-(layer, key-value head) Voronoi loss in prefix space (atom = [key; value] of
  one position in one head, weight 1: prefix positions have no bias), mean over heads; relative distance to
  the nearest true atom of the same head; held-out KL(teacher || student) per token (exact, over the vocab).
"""
from __future__ import annotations

import dataclasses
import math
import time
import zlib
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn as nn

from reparam.losses import voronoi_loss

from .prefix import KVDims, PrefixConfig, PrefixEncoder, PrefixModel, fixed_prefix, head_atoms

ARCHS = ("gpt2", "llama")
TRUTHS = ("shared", "independent")
STUDENTS = ("independent", "shared_fixed", "shared", "embedding_only")
REGIMES = ("exact", "over")
# which truth family each student is fitted to ("config" = PlantedConfig.truth)
STUDENT_TRUTH = {"independent": "config", "shared_fixed": "shared", "shared": "config", "embedding_only": "embedding"}
IN_THEOREMS = {"independent": True, "shared_fixed": True, "shared": False, "embedding_only": True}


@dataclass
class BaseConfig:
    """The frozen random-init transformer (real Hugging Face architecture)."""

    arch: str = "gpt2"  # gpt2 (GPT2LMHeadModel) | llama (LlamaForCausalLM, grouped-query attention)
    n_layer: int = 2
    n_head: int = 4  # query heads
    n_kv_head: int | None = None  # llama only: key-value heads (None = n_head)
    d_model: int = 64
    vocab: int = 128  # small vocabulary: exact KL and float64 logits stay cheap
    max_positions: int = 64
    init_std: float = 0.1  # initializer_range; 0.1 makes attention scores and logits O(1) (see module docstring)
    seed: int = 0  # the base is the same for every replicate

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"BaseConfig.arch={self.arch!r} is not one of {ARCHS}")
        for name in ("n_layer", "n_head", "d_model", "vocab", "max_positions"):
            if getattr(self, name) < 1:
                raise ValueError(f"BaseConfig.{name}={getattr(self, name)} must be >= 1")
        if self.d_model % self.n_head:
            raise ValueError(f"BaseConfig.d_model={self.d_model} must be divisible by n_head={self.n_head}")
        if self.n_kv_head is not None and (self.arch != "llama" or self.n_head % self.n_kv_head):
            raise ValueError(f"BaseConfig.n_kv_head={self.n_kv_head} needs arch=llama and must divide n_head")
        if not self.init_std > 0:
            raise ValueError(f"BaseConfig.init_std={self.init_std} must be > 0")


@dataclass
class PlantedConfig:
    """Truth, data and students of the planted study."""

    truth: str = "shared"  # family of the prefix-space truth: shared | independent (embedding_only: always embedding)
    prefix_len: int = 3  # L*: true prefix positions
    extra: int = 1  # over-specified students have L* + extra positions
    latent_dim: int = 8  # r: latent size of the shared map (r <= key dimension: injective key map)
    hidden: int = 32  # hidden width of the shared map (truth and `shared` students)
    scale: float = 1.0  # planted key/value RMS = scale x the model's own cached key/value RMS, per (layer, k|v)
    seq_len: int = 8  # T: tokens per input sequence
    draws: int = 1  # sampled target tokens per input position (several draws: less noise per sequence)
    n_test: int = 256  # held-out sequences for the KL
    structures: list[str] = field(default_factory=lambda: list(STUDENTS))
    regimes: list[str] = field(default_factory=lambda: list(REGIMES))

    def __post_init__(self):
        if self.truth not in TRUTHS:
            raise ValueError(f"PlantedConfig.truth={self.truth!r} is not one of {TRUTHS}")
        for name in ("prefix_len", "extra", "latent_dim", "hidden", "seq_len", "draws", "n_test"):
            if getattr(self, name) < 1:
                raise ValueError(f"PlantedConfig.{name}={getattr(self, name)} must be >= 1")
        if not self.scale > 0:
            raise ValueError(f"PlantedConfig.scale={self.scale} must be > 0")
        bad = [s for s in self.structures if s not in STUDENTS]
        if bad or not self.structures:
            raise ValueError(f"PlantedConfig.structures={self.structures} must be a non-empty subset of {STUDENTS}")
        bad = [r for r in self.regimes if r not in REGIMES]
        if bad or not self.regimes:
            raise ValueError(f"PlantedConfig.regimes={self.regimes} must be a non-empty subset of {REGIMES}")


@dataclass
class FitConfig:
    """The estimator: float64 full-batch L-BFGS from random starts."""

    starts: int = 2  # random starts per fit; the estimate is the one with the lowest training NLL
    max_iter: int = 60  # L-BFGS iterations per start
    history: int = 50  # L-BFGS memory
    grad_tol: float = 1e-9  # stop when the max |gradient| entry is below this
    gap_tol: float = 1e-8  # validity: relative gap (NLL_hat - NLL_truth) / NLL_truth <= gap_tol

    def __post_init__(self):
        for name in ("starts", "max_iter", "history"):
            if getattr(self, name) < 1:
                raise ValueError(f"FitConfig.{name}={getattr(self, name)} must be >= 1")
        if self.grad_tol < 0 or self.gap_tol < 0:
            raise ValueError(f"FitConfig.grad_tol={self.grad_tol} and gap_tol={self.gap_tol} must be >= 0")


# --------------------------------------------------------------------------------------------- base


def make_base(cfg: BaseConfig) -> nn.Module:
    """The frozen random-init base model in float64 (eval mode: no dropout)."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(cfg.seed)
    if cfg.arch == "gpt2":
        config = GPT2Config(vocab_size=cfg.vocab, n_positions=cfg.max_positions, n_embd=cfg.d_model,
                            n_layer=cfg.n_layer, n_head=cfg.n_head, initializer_range=cfg.init_std,
                            bos_token_id=0, eos_token_id=0, pad_token_id=0)
        model = GPT2LMHeadModel(config)
    else:
        config = LlamaConfig(vocab_size=cfg.vocab, hidden_size=cfg.d_model, intermediate_size=4 * cfg.d_model,
                             num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head,
                             num_key_value_heads=cfg.n_kv_head or cfg.n_head, max_position_embeddings=cfg.max_positions,
                             initializer_range=cfg.init_std, bos_token_id=0, eos_token_id=0, pad_token_id=0)
        model = LlamaForCausalLM(config)
    model = model.double().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _positions(inputs: torch.Tensor) -> torch.Tensor:
    return torch.arange(inputs.shape[1]).expand_as(inputs)  # (batch, T): 0..T-1 whatever the prefix length


def logits(model: PrefixModel, inputs: torch.Tensor) -> torch.Tensor:
    """(batch, T, vocab) log-probabilities of the next token, positions 0..T-1."""
    out = model(inputs, position_ids=_positions(inputs)).logits
    return torch.log_softmax(out, dim=-1)


@torch.no_grad()
def natural_kv_rms(base: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """RMS of the model's own cached keys and values per (layer, key|value): (layers, 2)."""
    cache = base(input_ids=inputs, use_cache=True).past_key_values
    return torch.tensor([[t.pow(2).mean().sqrt().item() for t in (layer.keys, layer.values)] for layer in cache.layers],
                        dtype=torch.float64)


def embedding_rms(base: nn.Module) -> float:
    """RMS of the model's token embeddings (scale of the embedding truth and of embedding_only starts)."""
    return float(base.get_input_embeddings().weight.pow(2).mean().sqrt())


# --------------------------------------------------------------------------------------------- truth and students


def _seed(*parts) -> int:
    return zlib.crc32("-".join(map(str, parts)).encode())


def _kv_view(flat: torch.Tensor, dims: KVDims) -> torch.Tensor:
    return flat.view(flat.shape[0], dims.n_layers, 2, dims.kv_dim)  # (L, layers, k|v, kv_dim)


@torch.no_grad()
def rescale_map(encoder: PrefixEncoder, target_rms: torch.Tensor) -> None:
    """Scale the last Linear of a shared encoder so its prefix has RMS `target_rms` (layers, 2) per (layer, k|v)."""
    cur = _kv_view(encoder.flat_prefix(), encoder.dims).pow(2).mean(dim=(0, 3)).sqrt()  # (layers, 2)
    factor = (target_rms.to(cur) / cur)[:, :, None].expand(-1, -1, encoder.dims.kv_dim).reshape(-1)  # (out,)
    last = encoder.transform[-1]
    last.weight.mul_(factor[:, None])
    last.bias.mul_(factor)


@dataclass
class Truth:
    family: str  # shared | independent | embedding
    kv: torch.Tensor  # (layers, 2, kv_heads, L*, head_dim)
    encoder: PrefixEncoder  # holds the true map (shared), the free tensor (independent) or the embeddings


def _encoder(base: nn.Module, structure: str, L: int, pc: PlantedConfig, seed: int, init_std: float) -> PrefixEncoder:
    dims = KVDims.from_config(base.config)
    cfg = PrefixConfig(structure=structure, prefix_len=L, embed_dim=pc.latent_dim, hidden=pc.hidden, init="normal",
                       init_std=init_std, seed=seed)
    return PrefixEncoder(cfg, dims, network=base).double()


def plant_truth(base: nn.Module, family: str, pc: PlantedConfig, replicate: int, kv_rms: torch.Tensor) -> Truth:
    """The true prefix of one replicate (see the module docstring for the three families)."""
    seed = _seed("truth", family, replicate)
    target = pc.scale * kv_rms
    if family == "shared":
        enc = _encoder(base, "shared_fixed", pc.prefix_len, pc, seed, init_std=1.0)  # latents p_i ~ N(0, I_r)
        rescale_map(enc, target)
    elif family == "independent":
        enc = _encoder(base, "independent", pc.prefix_len, pc, seed, init_std=1.0)
        with torch.no_grad():
            flat = _kv_view(enc.flat, enc.dims)
            flat.mul_((target / flat.pow(2).mean(dim=(0, 3)).sqrt())[None, :, :, None])
    elif family == "embedding":
        enc = _encoder(base, "embedding_only", pc.prefix_len, pc, seed, init_std=embedding_rms(base))
    else:
        raise ValueError(f"family={family!r} is not one of shared, independent, embedding")
    with torch.no_grad():
        kv = enc().detach().clone()
    return Truth(family=family, kv=kv, encoder=enc)


def make_student(base: nn.Module, structure: str, L: int, pc: PlantedConfig, truth: Truth, seed: int,
                 kv_rms: torch.Tensor) -> PrefixModel:
    """A student with a random start drawn like its truth (same scales); shared_fixed gets the true map."""
    if structure not in STUDENTS:
        raise ValueError(f"structure={structure!r} is not one of {STUDENTS}")
    target = pc.scale * kv_rms
    if structure == "embedding_only":
        enc = _encoder(base, structure, L, pc, seed, init_std=embedding_rms(base))
    elif structure == "independent":
        enc = _encoder(base, structure, L, pc, seed, init_std=1.0)
        with torch.no_grad():
            flat = _kv_view(enc.flat, enc.dims)
            flat.mul_((target / flat.pow(2).mean(dim=(0, 3)).sqrt())[None, :, :, None])
    elif structure == "shared_fixed":
        if truth.family != "shared":
            raise ValueError("shared_fixed needs a shared truth (it learns latents of the TRUE map)")
        enc = _encoder(base, structure, L, pc, seed, init_std=1.0)
        enc.set_map(truth.encoder.transform)
    else:  # shared: a learned MLP, started at the model's key/value scale
        enc = _encoder(base, structure, L, pc, seed, init_std=1.0)
        rescale_map(enc, target)
    return PrefixModel(base, enc.cfg, prefix=enc)


# --------------------------------------------------------------------------------------------- data


@dataclass
class PlantedData:
    inputs: torch.Tensor  # (n_max, T) uniform random tokens
    targets: torch.Tensor  # (n_max, draws, T) tokens sampled from the teacher
    test_inputs: torch.Tensor  # (n_test, T)
    test_logp: torch.Tensor  # (n_test, T, vocab) teacher log-probabilities on the held-out inputs


@torch.no_grad()
def sample_data(teacher: PrefixModel, pc: PlantedConfig, n_max: int, replicate: int) -> PlantedData:
    """Nested data: the first n rows are the sample of size n whatever n_max is (row-ordered draws, and the
    held-out set has its own stream), so fits recorded with another largest n stay comparable."""
    vocab = teacher.base.config.vocab_size
    g_in, g_u = (torch.Generator().manual_seed(_seed(role, replicate)) for role in ("inputs", "targets"))
    inputs = torch.randint(0, vocab, (n_max, pc.seq_len), generator=g_in)
    uniforms = torch.rand(n_max, pc.draws, pc.seq_len, generator=g_u, dtype=torch.float64)
    cdf = logits(teacher, inputs).exp().cumsum(-1)  # (n_max, T, vocab)
    # inverse-CDF sampling: target = first token whose cumulative probability exceeds u
    targets = torch.searchsorted(cdf.unsqueeze(1).expand(-1, pc.draws, -1, -1).contiguous(),
                                 (uniforms * cdf[:, None, :, -1]).unsqueeze(-1)).squeeze(-1).clamp(max=vocab - 1)
    gt = torch.Generator().manual_seed(_seed("test", replicate))
    test_inputs = torch.randint(0, vocab, (pc.n_test, pc.seq_len), generator=gt)
    return PlantedData(inputs, targets, test_inputs, logits(teacher, test_inputs))  # targets (n_max, draws, T)


def nll(model: PrefixModel, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood per sampled token. inputs (n, T), targets (n, draws, T)."""
    logp = logits(model, inputs)  # (n, T, vocab)
    picked = torch.gather(logp.unsqueeze(1).expand(-1, targets.shape[1], -1, -1), -1, targets.unsqueeze(-1))
    return -picked.mean()


@torch.no_grad()
def heldout_kl(model: PrefixModel, data: PlantedData) -> float:
    """KL(teacher || model) per token on the held-out inputs (exact over the vocabulary)."""
    logp = logits(model, data.test_inputs)
    return float((data.test_logp.exp() * (data.test_logp - logp)).sum(-1).mean())


# --------------------------------------------------------------------------------------------- errors


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


# --------------------------------------------------------------------------------------------- estimator


def fit_lbfgs(model: PrefixModel, inputs: torch.Tensor, targets: torch.Tensor, fc: FitConfig) -> dict:
    """Full-batch L-BFGS on the training NLL. Returns the final NLL, iterations and max |gradient|."""
    params = [p for p in model.prefix.parameters() if p.requires_grad]
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=fc.max_iter, max_eval=int(fc.max_iter * 1.25),
                            history_size=fc.history, tolerance_grad=fc.grad_tol, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nll(model, inputs, targets)
        loss.backward()
        return loss

    t0 = time.perf_counter()
    opt.step(closure)
    wall = time.perf_counter() - t0
    opt.zero_grad()
    loss = nll(model, inputs, targets)
    loss.backward()
    grad = max(float(p.grad.abs().max()) for p in params)
    state = opt.state[params[0]]
    return {"train_nll": float(loss.detach()), "iterations": int(state.get("n_iter", 0)), "evals": int(state.get("func_evals", 0)),
            "grad_max": grad, "fit_s": wall, "finite": bool(math.isfinite(float(loss.detach())))}


class PlantedStudy:
    """Everything of one replicate that does not depend on the student: base, truths, data."""

    def __init__(self, base: nn.Module, pc: PlantedConfig, fc: FitConfig, replicate: int, n_max: int):
        self.base, self.pc, self.fc, self.replicate = base, pc, fc, replicate
        g = torch.Generator().manual_seed(_seed("rms", 0))
        self.kv_rms = natural_kv_rms(base, torch.randint(0, base.config.vocab_size, (64, pc.seq_len), generator=g))
        families = sorted({self.family(s) for s in pc.structures})
        self.truths = {f: plant_truth(base, f, pc, replicate, self.kv_rms) for f in families}
        self.data = {}
        self.truth_kl_base = {}
        for f, truth in self.truths.items():
            teacher = fixed_prefix(base, truth.kv)
            self.data[f] = sample_data(teacher, pc, n_max, replicate)
            self.truth_kl_base[f] = self._kl_of_bare_base(self.data[f])

    def family(self, structure: str) -> str:
        f = STUDENT_TRUTH[structure]
        return self.pc.truth if f == "config" else f

    @torch.no_grad()
    def _kl_of_bare_base(self, data: PlantedData) -> float:
        logp = torch.log_softmax(self.base(data.test_inputs, position_ids=_positions(data.test_inputs)).logits, -1)
        return float((data.test_logp.exp() * (data.test_logp - logp)).sum(-1).mean())

    def fit(self, structure: str, regime: str, n: int) -> list[dict]:
        """All starts of one fit: one row per start; the selected start (lowest training NLL) is flagged."""
        family = self.family(structure)
        truth, data = self.truths[family], self.data[family]
        L = self.pc.prefix_len + (self.pc.extra if regime == "over" else 0)
        inputs, targets = data.inputs[:n], data.targets[:n]
        teacher = fixed_prefix(self.base, truth.kv)
        with torch.no_grad():
            nll_truth = float(nll(teacher, inputs, targets))
        rows = []
        for start in range(self.fc.starts):
            student = make_student(self.base, structure, L, self.pc, truth,
                                   _seed("start", structure, L, self.replicate, start), self.kv_rms)
            diag = fit_lbfgs(student, inputs, targets, self.fc)
            rel_gap = (diag["train_nll"] - nll_truth) / abs(nll_truth)
            with torch.no_grad():
                kv_hat = student.prefix()
            errs = prefix_errors(kv_hat, truth.kv) if diag["finite"] else {"voronoi": np.nan, "rel_dist": np.nan}
            kl = heldout_kl(student, data) if diag["finite"] else np.nan
            rows.append({"structure": structure, "regime": regime, "n": int(n), "replicate": int(self.replicate),
                         "start": start, "truth": family, "prefix_len": L, "true_prefix_len": self.pc.prefix_len,
                         "in_theorems": IN_THEOREMS[structure], "nll_truth": nll_truth, "rel_gap": rel_gap,
                         "valid": bool(diag["finite"] and rel_gap <= self.fc.gap_tol),
                         **diag, **errs, "kl": kl, "kl_truth_vs_base": self.truth_kl_base[family],
                         "trainable": sum(p.numel() for p in student.prefix.parameters() if p.requires_grad)})
        best = int(np.nanargmin([r["train_nll"] if r["finite"] else np.inf for r in rows]))
        for r in rows:
            r["selected"] = r["start"] == best
        return rows


def config_record(base: BaseConfig, pc: PlantedConfig, fc: FitConfig) -> dict:
    """Every result-affecting setting, for the record key of a row."""
    return {"base": asdict(base), "planted": asdict(pc), "fit": asdict(fc)}


# --------------------------------------------------------------------------------------------- study settings


@dataclass
class StudyConfig:
    """Sizes and replicates. A replicate r fixes the truth, the data stream and the starts (the base is shared)."""

    ns: list[int] = field(default_factory=lambda: [2, 4, 8, 16, 32, 64])  # nested: n rows are the first n of n_max
    replicates: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    min_replicates: int = 5  # fewer valid replicates at some n -> verdict "insufficient"
    min_sizes: int = 5  # fewer sizes -> verdict "insufficient"

    def __post_init__(self):
        self.ns, self.replicates = [int(n) for n in self.ns], [int(r) for r in self.replicates]
        if not self.ns or min(self.ns) < 1 or len(set(self.ns)) != len(self.ns):
            raise ValueError(f"StudyConfig.ns={self.ns} must be distinct integers >= 1")
        if not self.replicates or min(self.replicates) < 0 or len(set(self.replicates)) != len(self.replicates):
            raise ValueError(f"StudyConfig.replicates={self.replicates} must be distinct integers >= 0")
        if self.min_replicates < 2 or self.min_sizes < 2:
            raise ValueError(f"StudyConfig.min_replicates={self.min_replicates} and min_sizes={self.min_sizes} "
                             f"must be >= 2 (a slope interval needs two sizes and two replicates)")


SECTIONS = {"base": BaseConfig, "planted": PlantedConfig, "fit": FitConfig, "study": StudyConfig}
APP_KEYS = ("mode", "threads", "run_dir", "out_dir", "check_table", "n_boot", "progress")
MODES = ("run", "draw", "check")


def validate_study(cfg) -> dict:
    """Every setting of `reparam planted-prefix`, checked before any work.

    Returns {"base": BaseConfig, "planted": ..., "fit": ..., "study": ..., "setting_id": str}. A bad value raises
    reparam.validation.ConfigError naming the field; unknown keys are refused; outputs never go to figures/.
    """
    from omegaconf import OmegaConf

    from reparam.validation import ConfigError, check_choice, check_int, check_output_dir, require

    from .runner import repo_path
    from .validation import committed_folder

    plain = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    plain.pop("hydra", None)
    unknown = sorted(set(plain) - set(SECTIONS) - set(APP_KEYS))
    if unknown:
        raise ConfigError(f"{unknown[0]} is not a known setting: the config accepts {sorted(set(SECTIONS) | set(APP_KEYS))}")
    check_choice("mode", plain.get("mode", "run"), MODES)
    check_int("threads", plain.get("threads", 1), low=1)
    check_int("n_boot", plain.get("n_boot", 2000), low=10)
    require(isinstance(plain.get("progress", True), bool), "progress", plain.get("progress"), "true or false")
    for name in ("run_dir", "out_dir"):
        value = plain.get(name)
        require(isinstance(value, str) and value != "", name, value, "a folder path")
        require(not committed_folder(value), name, value,
                "a folder outside the committed figures/ (write to outputs/..., then copy; see figures/lm/COMMANDS.md)")
        check_output_dir(name, repo_path(value))
    table = plain.get("check_table")
    if table is not None:
        require(repo_path(table).is_file(), "check_table", table, "an existing CSV written by this experiment")
    out = {}
    for section, schema in SECTIONS.items():
        block = plain.get(section) or {}
        require(isinstance(block, dict), section, block, "a block of settings")
        known = {f.name for f in dataclasses.fields(schema)}
        for key in block:
            if key not in known:
                raise ConfigError(f"{section}.{key} is not a known setting: {section} accepts {sorted(known)}")
        try:
            out[section] = schema(**block)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{section} is invalid: {err}") from None
    if out["planted"].seq_len > out["base"].max_positions:
        raise ConfigError(f"planted.seq_len={out['planted'].seq_len} is invalid: must be <= base.max_positions="
                          f"{out['base'].max_positions}")
    out["setting_id"] = setting_id(out["base"], out["planted"], out["fit"])
    return out


def setting_id(base: BaseConfig, pc: PlantedConfig, fc: FitConfig) -> str:
    """Fingerprint of every result-affecting setting; structures and regimes are row columns, not settings."""
    from reparam.validation import fingerprint

    return fingerprint(config_record(base, pc, fc), ignore=["planted.structures", "planted.regimes"])


# --------------------------------------------------------------------------------------------- analysis

#: error columns of a fit: label for the tables (the figures' labels are reparam.plots.PLANTED_LABELS)
ERRORS = {
    "voronoi": "per-head Voronoi loss, prefix space",
    "rel_dist": "relative prefix distance (per head)",
    "kl": "held-out KL(teacher || student) [nats/token]",
    "inverse_ratio": "Voronoi loss / sqrt(held-out KL)",
}
#: THEORY section 5 predictions checked here (the rest is measured and reported without a verdict)
PREDICTIONS = {("shared_fixed", "exact", "voronoi"): -0.5, ("shared_fixed", "exact", "rel_dist"): -0.5}


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
    """Slopes with bootstrap intervals on VALID estimates, per (structure, regime, error), and verdicts.

    verdict: 'insufficient' when fewer than `sc.min_sizes` sizes or, at some size, fewer than
    `sc.min_replicates` valid replicates; else reparam.rates.verdict against THEORY's -1/2 where PREDICTIONS has
    a row, and 'measured' elsewhere.
    """
    import pandas as pd

    from reparam.rates import Prediction, fit_slopes, verdict

    valid = est[est["valid"].astype(bool)]
    rows = []
    for error in ERRORS:
        sl = fit_slopes(valid, error, ["structure", "regime"], n_boot=n_boot, level=level)
        for _, r in sl.iterrows():
            part = valid[(valid.structure == r.structure) & (valid.regime == r.regime)]
            per_n = part.groupby("n")["replicate"].nunique()
            allf = est[(est.structure == r.structure) & (est.regime == r.regime)]
            pred = PREDICTIONS.get((r.structure, r.regime, error))
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
                         "in_theorems": IN_THEOREMS[r.structure]})
    return pd.DataFrame(rows)


def check_lines(slopes) -> str:
    """The printed verdict table (markdown)."""
    lines = ["| structure | regime | error | slope [95% CI] | predicted | verdict | valid fits | in theorems |",
             "|---|---|---|---|---|---|---|---|"]
    for _, r in slopes.sort_values(["error", "regime", "structure"]).iterrows():
        pred = f"{r.predicted:+.2f}" if np.isfinite(r.predicted) else "-"
        lines.append(f"| {r.structure} | {r.regime} | {r.error} | {r.slope:+.2f} [{r.slope_lo:+.2f}, {r.slope_hi:+.2f}] "
                     f"| {pred} | {r.verdict} | {r.valid_share:.0%} | {'yes' if r.in_theorems else 'no'} |")
    return "\n".join(lines)
