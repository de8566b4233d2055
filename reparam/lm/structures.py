"""How a real transformer's prefix is parameterised (THEORY section 6), as a registry: the twin of
reparam.structures for the real-model studies.

Every structure produces the prefix keys/values of a frozen causal LM, (layers, 2, kv_heads, L, head_dim), viewed
flat as (L, layers * 2 * kv_dim) in PEFT's layout (index 2*l of the middle axis is layer l's key, 2*l+1 its
value). The parameters live on a `reparam.lm.prefix.PrefixEncoder`; the structure says what they are and how they
give the prefix, so the encoder, the planted study and the low-data protocol never branch on a structure's name.

A new structure is one subclass with @register; the class is the ONE place that declares what the studies need:
    name         the registry key: the word in PrefixConfig.structure, `planted.structures`, `low_data.structures`
    studies      the studies that accept it as a student ("planted": reparam planted-prefix, "low_data": reparam
                 low-data); each study's setting refuses the others, and lists these by name in its message
    placement    "prefix" (in front of the whole sequence) or "infix" (after the source, before the separator:
                 reparam.lm.multiprefix)
    theorem      the THEORY result that covers it (None: outside the theorems); `in_theorems` in the tables
    fitted_to    the planted truth family its planted student is fitted to ("config": PlantedConfig.truth)
    plants       the truth family its planted draw IS (`plant` is that family's truth recipe), or None
    planted_predictions   THEORY's slopes of its planted errors, {(regime, error): slope} (reparam.lm.planted:
                 a verdict where declared, "measured" elsewhere)
    color        its colour in every figure (reparam.plots.color_for), declared by the class itself (never
                 inherited); None: a deterministic colour from its name
    build(enc, generator)           its parameters on the encoder, drawn from the seeded generator
    flat_prefix(enc)                (L, layers * 2 * kv_dim)
    kv(enc)                         (layers, 2, kv_heads, L, head_dim); default: flat_prefix in the PEFT layout
    init_from_words(enc, base, ids, first)  Li & Liang's start from the activations of real words (`first`: the
                                    first prefixed layer of a top-K prefix, reparam.lm.toplayers)
    planted_init_std(base)          PrefixConfig.init_std of its planted draws
    plant(enc, target_rms)          its planted draw brought to the truth's key/value scale (truth and start)
    start_student(enc, truth, target_rms)   its planted student's start (default: `plant`)

This module only reads and writes an encoder's attributes (embedding, transform, flat; cfg and dims): it imports
neither the encoder nor the studies, which import it.
"""
from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn as nn

from ..theory import claim
from .toplayers import lower_states

STRUCTURES: dict[str, type["LMStructure"]] = {}
STUDIES = ("planted", "low_data")
PLACEMENTS = ("prefix", "infix")


def register(cls: type["LMStructure"]) -> type["LMStructure"]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a class attribute `name` to be registered")
    if cls.placement not in PLACEMENTS:
        raise ValueError(f"{cls.__name__}.placement={cls.placement!r} is not one of {PLACEMENTS}")
    unknown = [s for s in cls.studies if s not in STUDIES]
    if unknown:
        raise ValueError(f"{cls.__name__}.studies has {unknown}: a study is one of {STUDIES}")
    if cls.plants is not None:
        other = [n for n, c in STRUCTURES.items() if c.plants == cls.plants and n != cls.name]
        if other:  # one recipe per truth family, or the truth would depend on registration order
            raise ValueError(f"{cls.__name__} plants the {cls.plants!r} truth, which {other[0]} already plants")
    STRUCTURES[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a registered structure (e.g. one a test defined)."""
    STRUCTURES.pop(name, None)


def get_structure(name: str) -> "LMStructure":
    """The registered structure `name` (ValueError listing the registered ones)."""
    if name not in STRUCTURES:
        raise ValueError(f"structure={name!r} is unknown; choose one of {list(STRUCTURES)}")
    return STRUCTURES[name]()


def structures_of(study: str) -> list[str]:
    """The names of the registered structures a study accepts, in registration order."""
    return [name for name, cls in STRUCTURES.items() if study in cls.studies]


def planting_structure(family: str) -> "LMStructure":
    """The structure whose planted draw is the truth of `family`."""
    for cls in STRUCTURES.values():
        if cls.plants == family:
            return cls()
    raise ValueError(f"no registered structure plants the truth family {family!r} "
                     f"(families: {sorted(c.plants for c in STRUCTURES.values() if c.plants)})")


def mlp(d: int, hidden: int, out: int, depth: int) -> nn.Sequential:
    """Li & Liang's reparameterising MLP: `depth` x (Linear -> tanh), then Linear(hidden, out)."""
    layers, width = [], d
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.Tanh()]
        width = hidden
    layers.append(nn.Linear(width, out))
    return nn.Sequential(*layers)


@torch.no_grad()
def init_mlp(emb: nn.Embedding, net: nn.Sequential, g: torch.Generator) -> None:
    """Seeded init that does not depend on the global RNG state (reproducible whatever ran before): latents
    N(0, 1), each Linear uniform in +-1/sqrt(fan_in) as torch's default."""
    emb.weight.normal_(0.0, 1.0, generator=g)
    for m in net:
        if isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.in_features)
            m.weight.uniform_(-bound, bound, generator=g)
            m.bias.uniform_(-bound, bound, generator=g)


@torch.no_grad()
def word_kv(base: nn.Module, ids: list[int]) -> torch.Tensor:
    """The frozen model's keys/values of the words `ids`, (layers, 2, kv_heads, L, head_dim)."""
    dev = next(base.parameters()).device
    cache = base.base_model(input_ids=torch.tensor([ids], device=dev), use_cache=True).past_key_values
    return torch.stack([torch.stack([layer.keys[0], layer.values[0]]) for layer in cache.layers])


def to_flat(kv: torch.Tensor) -> torch.Tensor:
    """(layers, 2, kv_heads, L, head_dim) -> (L, layers * 2 * kv_dim), the PEFT layout."""
    return kv.permute(3, 0, 1, 2, 4).reshape(kv.shape[3], -1)


def kv_view(flat: torch.Tensor, dims) -> torch.Tensor:
    """(L, layers * 2 * kv_dim) -> (L, layers, k|v, kv_dim): the axes a per-(layer, key|value) scale acts on."""
    return flat.view(flat.shape[0], dims.n_layers, 2, dims.kv_dim)


@torch.no_grad()
def rescale_map(enc, target_rms: torch.Tensor) -> None:
    """Scale the last Linear of an MLP encoder so that its prefix has RMS `target_rms` (layers, 2) per
    (layer, key|value). Rescaling the output layer keeps the prefix inside the map's family."""
    cur = kv_view(enc.flat_prefix(), enc.dims).pow(2).mean(dim=(0, 3)).sqrt()  # (layers, 2)
    factor = (target_rms.to(cur) / cur)[:, :, None].expand(-1, -1, enc.dims.kv_dim).reshape(-1)  # (out,)
    last = enc.transform[-1]
    last.weight.mul_(factor[:, None])
    if last.bias is not None:
        last.bias.mul_(factor)


@torch.no_grad()
def rescale_flat(enc, target_rms: torch.Tensor) -> None:
    """Scale a free prefix tensor to RMS `target_rms` (layers, 2) per (layer, key|value)."""
    flat = kv_view(enc.flat, enc.dims)
    flat.mul_((target_rms / flat.pow(2).mean(dim=(0, 3)).sqrt())[None, :, :, None])


class LMStructure:
    """Base class: the declarations (module docstring) and the defaults a structure may keep."""

    name: ClassVar[str] = ""
    studies: ClassVar[tuple[str, ...]] = ()
    placement: ClassVar[str] = "prefix"
    theorem: ClassVar[str | None] = None
    fitted_to: ClassVar[str] = "config"
    plants: ClassVar[str | None] = None
    planted_predictions: ClassVar[dict[tuple[str, str], float]] = {}
    color: ClassVar[str | None] = None
    #: its keys/values come from running virtual tokens through the frozen network (the multi-prefix trainer
    #: runs all such members of a step in one batched pass)
    through_network: ClassVar[bool] = False

    @property
    def in_theorems(self) -> bool:
        return self.theorem is not None

    def build(self, enc, g: torch.Generator) -> None:
        raise NotImplementedError(f"structure {self.name!r} declares no parameters: define build()")

    def flat_prefix(self, enc) -> torch.Tensor:
        raise NotImplementedError(f"structure {self.name!r} declares no prefix: define flat_prefix()")

    def kv(self, enc) -> torch.Tensor:
        dm, L = enc.dims, enc.cfg.prefix_len
        kv = self.flat_prefix(enc).view(L, dm.n_layers, 2, dm.kv_heads, dm.head_dim)
        return kv.permute(1, 2, 3, 0, 4)  # (layers, 2, kv_heads, L, head_dim)

    def init_from_words(self, enc, base: nn.Module, ids: list[int], first: int = 0) -> None:
        """Start `enc` from the words `ids`; `first` > 0: the encoder covers the layers from `first` up."""
        raise ValueError(f"init='words' is not defined for structure {self.name!r}")

    def planted_init_std(self, base: nn.Module) -> float:
        return 1.0

    def plant(self, enc, target_rms: torch.Tensor) -> None:
        raise ValueError(f"structure {self.name!r} declares no planted draw: define plant()")

    def start_student(self, enc, truth, target_rms: torch.Tensor) -> None:
        self.plant(enc, target_rms)


@register
class Independent(LMStructure):
    """A free key and value tensor for every layer (Li & Liang's "no reparameterization"; THEORY Theorem 1).
    PrefixConfig.init "mlp" starts it from the output of a fresh `shared` encoder of the same seed (a controlled
    comparison), "normal" from i.i.d. N(0, init_std^2)."""

    name: ClassVar[str] = "independent"
    color: ClassVar[str | None] = "#d95f02"
    studies: ClassVar[tuple[str, ...]] = ("planted", "low_data")
    theorem: ClassVar[str | None] = "Theorem 1"
    plants: ClassVar[str | None] = "independent"

    def build(self, enc, g):
        cfg, L, out = enc.cfg, enc.cfg.prefix_len, enc.dims.n_layers * 2 * enc.dims.kv_dim
        if cfg.init == "mlp":  # the same draw as a `shared` encoder with this seed, then the MLP is discarded
            d = cfg.embed_dim or enc.dims.hidden_size
            emb, net = nn.Embedding(L, d), mlp(d, cfg.hidden, out, depth=1)
            init_mlp(emb, net, g)
            with torch.no_grad():
                flat = net(emb.weight)
        else:
            flat = torch.randn(L, out, generator=g) * cfg.init_std
        enc.flat = nn.Parameter(flat.detach().clone())  # (L, layers*2*kv_dim)

    def flat_prefix(self, enc):
        return enc.flat

    @torch.no_grad()
    def init_from_words(self, enc, base, ids, first=0):
        """A copy of the words' keys/values."""
        enc.flat.copy_(to_flat(word_kv(base, ids)[first:]).to(enc.flat.dtype))

    def plant(self, enc, target_rms):
        rescale_flat(enc, target_rms)


@register
class Infix(Independent):
    """Li & Liang's infix ablation [x; INFIX; y]: the `independent` parameters placed after the source and before
    the separator (reparam.lm.multiprefix), so the source cannot attend to them."""

    name: ClassVar[str] = "infix"
    studies: ClassVar[tuple[str, ...]] = ("low_data",)
    placement: ClassVar[str] = "infix"
    theorem: ClassVar[str | None] = None
    plants: ClassVar[str | None] = None


@register
class Shared(LMStructure):
    """Per-position latents p_i through ONE learned MLP Linear(d, hidden) -> tanh -> Linear(hidden, layers*2*kv_dim)
    (Li & Liang's default; PEFT's prefix_projection=True layout). Outside the theorems: a learned MLP with
    hidden >= L can produce any prefix."""

    name: ClassVar[str] = "shared"
    color: ClassVar[str | None] = "#1b9e77"
    studies: ClassVar[tuple[str, ...]] = ("planted", "low_data")
    depth: ClassVar[int] = 1  # tanh layers of the MLP

    def build(self, enc, g):
        cfg, out = enc.cfg, enc.dims.n_layers * 2 * enc.dims.kv_dim
        d = cfg.embed_dim or enc.dims.hidden_size
        enc.embedding = nn.Embedding(cfg.prefix_len, d)
        enc.transform = mlp(d, cfg.hidden, out, depth=self.depth)
        init_mlp(enc.embedding, enc.transform, g)

    def flat_prefix(self, enc):
        return enc.transform(enc.embedding.weight)

    @torch.no_grad()
    def init_from_words(self, enc, base, ids, first=0):
        """Keep the random MLP and correct its output layer by the minimum-norm least-squares update that makes
        the initial prefix equal the words' keys/values."""
        target = to_flat(word_kv(base, ids)[first:])
        h = enc.transform[:-1](enc.embedding.weight)  # (L, hidden): input of the output layer
        last = enc.transform[-1]
        residual = target.to(h.dtype) - last(h)  # (L, out)
        # minimum-norm dW with h @ dW^T = residual (h has full row rank L <= hidden for a generic init)
        last.weight.add_((torch.linalg.pinv(h) @ residual).T)

    def plant(self, enc, target_rms):
        rescale_map(enc, target_rms)  # a learned MLP started at the model's key/value scale


@register
class DeepShared(Shared):
    """`shared` with two hidden layers."""

    name: ClassVar[str] = "deep_shared"
    color: ClassVar[str | None] = "#66a61e"
    studies: ClassVar[tuple[str, ...]] = ("low_data",)
    depth: ClassVar[int] = 2


@register
class SharedFixed(Shared):
    """The `shared` layout with the MLP FROZEN: only the latents p_i are learned, the theorems' setting (key and
    value are two fixed functions of one latent). The map is the seeded random init unless set with
    PrefixEncoder.set_map; its planted draw is the `shared` truth, and its planted student learns latents of the
    TRUE map."""

    name: ClassVar[str] = "shared_fixed"
    color: ClassVar[str | None] = "#7570b3"
    studies: ClassVar[tuple[str, ...]] = ("planted",)
    theorem: ClassVar[str | None] = "Theorem 3"
    fitted_to: ClassVar[str] = "shared"
    plants: ClassVar[str | None] = "shared"
    # THEORY section 5: exact-specified shared structures reach the parametric rate in prefix space (the theory
    # table's shared-exact D rate; the relative distance is a distance in the same space)
    planted_predictions: ClassVar[dict[tuple[str, str], float]] = {
        ("exact", error): claim("shared-exact").rate("voronoi_prefix").prediction.value
        for error in ("voronoi", "rel_dist")}

    def build(self, enc, g):
        super().build(enc, g)
        enc.transform.requires_grad_(False)

    def init_from_words(self, enc, base, ids, first=0):
        raise ValueError(f"init='words' is not defined for structure {self.name!r} (its map is fixed: the "
                         "least-squares correction of `shared` would change it)")

    def start_student(self, enc, truth, target_rms):
        if truth.family != "shared":
            raise ValueError("shared_fixed needs a shared truth (it learns latents of the TRUE map)")
        enc.set_map(truth.encoder.transform)


@register
class EmbeddingOnly(LMStructure):
    """Prompt-tuning (Li & Liang's embedding-only ablation): L learned INPUT embeddings run through the frozen
    network itself; their cached keys and values at every layer are the prefix. A shared structure whose fixed
    map is the transformer (so inside the theorems' setting). The virtual tokens sit at positions 0..L-1 and attend
    to each other causally, exactly as if they were prepended to the input. Needs the network on the encoder."""

    name: ClassVar[str] = "embedding_only"
    color: ClassVar[str | None] = "#1f78b4"
    through_network: ClassVar[bool] = True
    studies: ClassVar[tuple[str, ...]] = ("planted", "low_data")
    theorem: ClassVar[str | None] = "Theorem 3 (the fixed map is the frozen network)"
    fitted_to: ClassVar[str] = "embedding"
    plants: ClassVar[str | None] = "embedding"

    def build(self, enc, g):
        enc.network  # noqa: B018 (raises now, not at the first forward, when the encoder has no network)
        enc.embedding = nn.Embedding(enc.cfg.prefix_len, enc.dims.hidden_size)
        with torch.no_grad():
            enc.embedding.weight.normal_(0.0, enc.cfg.init_std, generator=g)

    def kv(self, enc):
        """The frozen network's own cached keys/values of the L virtual tokens."""
        net = enc.network
        body = net.base_model  # the transformer without its LM head (logits of virtual tokens are not needed)
        emb = enc.embedding.weight.unsqueeze(0).to(net.dtype)  # (1, L, hidden)
        cache = body(inputs_embeds=emb, use_cache=True).past_key_values
        return torch.stack([torch.stack([layer.keys[0], layer.values[0]]) for layer in cache.layers])

    def flat_prefix(self, enc):
        return to_flat(self.kv(enc))

    @torch.no_grad()
    def init_from_words(self, enc, base, ids, first=0):
        """The words' input embeddings, or with `first` > 0 their hidden states entering layer `first` (where the
        virtual tokens enter): exactly the words' keys/values in the prefixed layers."""
        dev = enc.embedding.weight.device
        if first == 0:
            emb = base.get_input_embeddings()(torch.tensor(ids, device=dev))
        else:
            t = torch.tensor([ids], device=dev)
            emb = lower_states(base, first, t, torch.ones_like(t), torch.arange(len(ids), device=dev)[None])[0]
        enc.embedding.weight.copy_(emb.to(enc.embedding.weight.dtype))

    def planted_init_std(self, base):
        """The RMS of the model's token embeddings: planted embeddings look like the model's own."""
        return float(base.get_input_embeddings().weight.pow(2).mean().sqrt())

    def plant(self, enc, target_rms):
        pass  # drawn at the embeddings' scale (planted_init_std); the network sets the key/value scale


@register
class Fixed(LMStructure):
    """An exported prefix (the MLP dropped), loaded for inference or as a planted teacher: a buffer, no
    parameters (PrefixModel.from_exported fills it)."""

    name: ClassVar[str] = "fixed"

    def build(self, enc, g):
        enc.register_buffer("flat", torch.zeros(enc.cfg.prefix_len, enc.dims.n_layers * 2 * enc.dims.kv_dim))

    def flat_prefix(self, enc):
        return enc.flat

