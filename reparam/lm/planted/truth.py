"""The truth, the students and the data of the planted study.

* truth (`plant_truth`): the planted draw of the structure that plants its family (reparam.lm.structures,
  `plants`), e.g.
    - ``shared``: keys and values of L* positions are ONE fixed map of latents, k_i, v_i = MLP(p_i)
      (Linear(r, hidden) -> tanh -> Linear(hidden, layers*2*kv_dim), the Li & Liang layout), p_i ~ N(0, I_r);
      the last Linear is rescaled per (layer, key|value) so the prefix has `scale` times the RMS of the
      model's own cached keys/values (rescaling keeps the truth inside the family);
    - ``independent``: i.i.d. N(0, 1) keys/values rescaled the same way;
    - ``embedding``: L* input embeddings ~ N(0, s^2), s = RMS of the model's token embeddings, run through
      the frozen network (the truth of the ``embedding_only`` student).
* students (`make_student`): every structure whose `studies` include "planted", fitted to the truth family it
  declares (`fitted_to`); exact (L = L*) or over-specified (L = L* + `extra`). Each starts from its own planted
  draw at the truth's scale (`start_student`: ``shared_fixed`` gets the TRUE map and learns only latents).
* data (`sample_data`): uniform random input tokens, targets SAMPLED from the teacher (base + true prefix), so the
  data are noisy and n matters, as in the synthetic study; nested in n.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..prefix import KVDims, PrefixConfig, PrefixEncoder, PrefixModel
from ..structures import get_structure, planting_structure, structures_of
from .model import logits

TRUTHS = ("shared", "independent")  # the configurable prefix-space truth families (PlantedConfig.truth)
REGIMES = ("exact", "over")


@dataclass
class PlantedConfig:
    """Truth, data and students of the planted study.

    truth: family of the prefix-space truth of the students fitted to the configured truth: shared (latents
        through a fixed MLP) | independent. A structure may declare its own family (embedding_only: embedding).
    prefix_len: L*, the true prefix positions.
    extra: over-specified students have L* + extra positions.
    latent_dim: r, latent size of the shared map (r <= key dimension: an injective key map).
    hidden: hidden width of the shared map (truth and `shared` students).
    scale: planted key/value RMS = scale x the model's own cached key/value RMS, per (layer, key|value).
    seq_len: T, tokens per input sequence.
    draws: sampled target tokens per input position (several draws: less noise per sequence).
    n_test: held-out sequences for the KL.
    structures: the students, structures registered for the planted study (reparam.lm.structures).
    regimes: exact and/or over.
    """

    truth: str = "shared"
    prefix_len: int = 3
    extra: int = 1
    latent_dim: int = 8
    hidden: int = 32
    scale: float = 1.0
    seq_len: int = 8
    draws: int = 1
    n_test: int = 256
    structures: list[str] = field(default_factory=lambda: structures_of("planted"))
    regimes: list[str] = field(default_factory=lambda: list(REGIMES))

    def __post_init__(self):
        if self.truth not in TRUTHS:
            raise ValueError(f"PlantedConfig.truth={self.truth!r} is not one of {TRUTHS}")
        for name in ("prefix_len", "extra", "latent_dim", "hidden", "seq_len", "draws", "n_test"):
            if getattr(self, name) < 1:
                raise ValueError(f"PlantedConfig.{name}={getattr(self, name)} must be >= 1")
        if not self.scale > 0:
            raise ValueError(f"PlantedConfig.scale={self.scale} must be > 0")
        students = structures_of("planted")
        bad = [s for s in self.structures if s not in students]
        if bad or not self.structures:
            raise ValueError(f"PlantedConfig.structures={self.structures} must be a non-empty subset of {students}")
        bad = [r for r in self.regimes if r not in REGIMES]
        if bad or not self.regimes:
            raise ValueError(f"PlantedConfig.regimes={self.regimes} must be a non-empty subset of {REGIMES}")

    def family(self, structure: str) -> str:
        """The truth family the student `structure` is fitted to."""
        f = get_structure(structure).fitted_to
        return self.truth if f == "config" else f


def seed_of(*parts) -> int:
    """A seed named by its role (e.g. "truth", family, replicate): streams never collide, whatever the order."""
    return zlib.crc32("-".join(map(str, parts)).encode())


@dataclass
class Truth:
    family: str  # shared | independent | embedding | a family a registered structure plants
    kv: torch.Tensor  # (layers, 2, kv_heads, L*, head_dim)
    encoder: PrefixEncoder  # holds the true map (shared), the free tensor (independent) or the embeddings


def _encoder(base: nn.Module, structure: str, L: int, pc: PlantedConfig, seed: int) -> PrefixEncoder:
    """A float64 encoder of `structure` with L positions, its parameters drawn at its planted scale."""
    dims = KVDims.from_config(base.config)
    cfg = PrefixConfig(structure=structure, prefix_len=L, embed_dim=pc.latent_dim, hidden=pc.hidden, init="normal",
                       init_std=get_structure(structure).planted_init_std(base), seed=seed)
    return PrefixEncoder(cfg, dims, network=base).double()


def plant_truth(base: nn.Module, family: str, pc: PlantedConfig, replicate: int, kv_rms: torch.Tensor) -> Truth:
    """The true prefix of one replicate: the planted draw of the structure that plants `family`."""
    structure = planting_structure(family)
    enc = _encoder(base, structure.name, pc.prefix_len, pc, seed_of("truth", family, replicate))
    structure.plant(enc, pc.scale * kv_rms)
    with torch.no_grad():
        kv = enc().detach().clone()
    return Truth(family=family, kv=kv, encoder=enc)


def make_student(base: nn.Module, structure: str, L: int, pc: PlantedConfig, truth: Truth, seed: int,
                 kv_rms: torch.Tensor) -> PrefixModel:
    """A student with a random start drawn like its truth (same scales); shared_fixed gets the true map."""
    students = structures_of("planted")
    if structure not in students:
        raise ValueError(f"structure={structure!r} is not one of {students}")
    enc = _encoder(base, structure, L, pc, seed)
    enc.structure.start_student(enc, truth, pc.scale * kv_rms)
    return PrefixModel(base, enc.cfg, prefix=enc)


@dataclass
class PlantedData:
    inputs: torch.Tensor  # (n_max, T) uniform random tokens
    targets: torch.Tensor  # (n_max, draws, T) tokens sampled from the teacher
    test_inputs: torch.Tensor  # (n_test, T)
    test_logp: torch.Tensor  # (n_test, T, vocab) teacher log-probabilities on the held-out inputs


@torch.no_grad()
def sample_data(teacher: PrefixModel, pc: PlantedConfig, n_max: int, replicate: int) -> PlantedData:
    """Nested data: the first n rows are the sample of size n whatever n_max is (row-ordered draws, and the
    held-out set has its own stream), so fits recorded with another largest n stay comparable; for a fixed
    `pc.draws`, the first d draws of every position are the sample with d draws (the draws-axis study)."""
    vocab = teacher.base.config.vocab_size
    g_in, g_u = (torch.Generator().manual_seed(seed_of(role, replicate)) for role in ("inputs", "targets"))
    inputs = torch.randint(0, vocab, (n_max, pc.seq_len), generator=g_in)
    uniforms = torch.rand(n_max, pc.draws, pc.seq_len, generator=g_u, dtype=torch.float64)
    cdf = logits(teacher, inputs).exp().cumsum(-1)  # (n_max, T, vocab)
    # inverse-CDF sampling: target = first token whose cumulative probability exceeds u; batched over (row, position)
    # without copying the CDF per draw (many draws per position stay cheap in memory)
    u = (uniforms * cdf[:, None, :, -1]).transpose(1, 2).contiguous()  # (n_max, T, draws)
    targets = torch.searchsorted(cdf.contiguous(), u).clamp(max=vocab - 1).transpose(1, 2).contiguous()
    gt = torch.Generator().manual_seed(seed_of("test", replicate))
    test_inputs = torch.randint(0, vocab, (pc.n_test, pc.seq_len), generator=gt)
    return PlantedData(inputs, targets, test_inputs, logits(teacher, test_inputs))  # targets (n_max, draws, T)
