"""Prefix-tuning for any Hugging Face causal LM (PEFT-tuner style), for every registered prefix structure.

THEORY section 6: every attention head of every layer is a mixture of experts whose prompt experts
are the prefix keys/values. The structures differ only in how those keys/values are parameterised; each is a
class of the registry `reparam.lm.structures` (independent, shared, deep_shared, shared_fixed, embedding_only,
infix, fixed, and any a user registers), which builds its parameters on a `PrefixEncoder` and computes the prefix
from them. The encoder itself never branches on a structure's name.

The layout of the flat prefix matches PEFT: (L, layers * 2 * kv_dim) viewed as
(L, layers * 2, kv_heads, head_dim), where index 2*l is layer l's key and 2*l+1 its value.

On every forward call a fresh ``DynamicCache`` is built from the prefix (transformers 5 accepts
only Cache objects and mutates them in place, so a cache must never be reused across calls), and the
attention mask is extended by L ones so that every token attends to every prefix position.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn

from .structures import STRUCTURES, get_structure


@dataclass
class PrefixConfig:
    """How the prefix is parameterised."""

    structure: str = "shared"  # a registered structure (reparam.lm.structures.STRUCTURES)
    prefix_len: int = 10  # L: number of virtual tokens (prompt experts per head)
    embed_dim: int | None = None  # d: size of the per-position latent p_i (default: the model's hidden size)
    hidden: int = 512  # width of the reparameterising MLP's hidden layer(s)
    init: str = "mlp"  # independent only: "mlp" = start from the output of a fresh random shared MLP
    #                    (same seed => same starting prefix as `shared`, a controlled comparison);
    #                    "normal" = i.i.d. N(0, init_std^2)
    init_std: float = 0.02  # std of the latent embeddings / of the "normal" init / of embedding_only's input embeddings
    seed: int = 0  # seed of the parameter initialisation

    def __post_init__(self):
        if self.structure not in STRUCTURES:
            raise ValueError(f"PrefixConfig.structure={self.structure!r} is not one of {list(STRUCTURES)}")
        if self.prefix_len < 1:
            raise ValueError(f"PrefixConfig.prefix_len={self.prefix_len} must be >= 1")
        if self.init not in ("mlp", "normal"):
            raise ValueError(f"PrefixConfig.init={self.init!r} must be 'mlp' or 'normal'")


@dataclass
class KVDims:
    """Shapes of one model's key/value cache, read from its config (grouped-query attention aware)."""

    n_layers: int
    kv_heads: int
    head_dim: int
    hidden_size: int

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @classmethod
    def from_config(cls, config) -> "KVDims":
        c = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
        n_heads = c.num_attention_heads
        kv_heads = getattr(c, "num_key_value_heads", None) or n_heads
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // n_heads
        return cls(n_layers=c.num_hidden_layers, kv_heads=kv_heads, head_dim=head_dim, hidden_size=c.hidden_size)


class PrefixEncoder(nn.Module):
    """Produces the prefix keys/values, shape (layers, 2, kv_heads, L, head_dim), of the structure
    `cfg.structure` (its parameters are drawn from a generator seeded with `cfg.seed`).

    `network`: the frozen causal LM, needed only by a structure that runs it (``embedding_only``); kept outside
    the module tree so that the prefix's state dict and parameters never include the base model's weights.
    """

    def __init__(self, cfg: PrefixConfig, dims: KVDims, network: nn.Module | None = None):
        super().__init__()
        self.cfg, self.dims = cfg, dims
        self.structure = get_structure(cfg.structure)
        self._network = (network,)  # a tuple: not registered as a submodule
        self.structure.build(self, torch.Generator().manual_seed(cfg.seed))

    @property
    def network(self) -> nn.Module:
        if self._network[0] is None:
            raise ValueError(f"structure {self.cfg.structure!r} needs the frozen network: "
                             "PrefixEncoder(cfg, dims, network=base)")
        return self._network[0]

    @torch.no_grad()
    def set_map(self, transform: nn.Sequential) -> "PrefixEncoder":
        """A structure with a FIXED map (``shared_fixed``): copy the map from `transform` (same layout)."""
        own = getattr(self, "transform", None)
        if own is None or any(p.requires_grad for p in own.parameters()):
            raise ValueError(f"set_map is for a structure with a fixed map (shared_fixed), not {self.cfg.structure!r}")
        own.load_state_dict(transform.state_dict())
        return self

    def flat_prefix(self) -> torch.Tensor:
        """(L, layers*2*kv_dim), the PEFT layout."""
        return self.structure.flat_prefix(self)

    def forward(self) -> torch.Tensor:
        return self.structure.kv(self)  # (layers, 2, kv_heads, L, head_dim)


#: the files of a saved prefix (PrefixModel.save_prefix), named like PEFT's adapter_config.json and
#: adapter_model.safetensors; the format string changes if their content does
PREFIX_CONFIG, PREFIX_WEIGHTS, PREFIX_FORMAT = "prefix_config.json", "prefix_model.safetensors", "reparam-prefix-kv/1"


class PrefixModel(nn.Module):
    """A frozen causal LM plus a trainable prefix. Only ``self.prefix`` has trainable parameters."""

    def __init__(self, base: nn.Module, cfg: PrefixConfig, prefix: PrefixEncoder | None = None):
        super().__init__()
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.cfg = cfg
        placement = get_structure(cfg.structure).placement
        if placement != "prefix":  # this model puts its keys/values in front of the input, nowhere else
            raise ValueError(f"PrefixModel places a prefix; structure {cfg.structure!r} is placed as {placement!r} "
                             "(train it with reparam.lm.multiprefix.MultiPrefix)")
        self.dims = KVDims.from_config(base.config)
        self.prefix = prefix if prefix is not None else PrefixEncoder(cfg, self.dims, network=base)

    # ------------------------------------------------------------------ cache and mask
    def build_cache(self, batch_size: int, kv: torch.Tensor | None = None):
        """A fresh DynamicCache holding the prefix for `batch_size` rows (never reuse one: it is mutated)."""
        from transformers import DynamicCache

        kv = self.prefix() if kv is None else kv  # (layers, 2, kv_heads, L, head_dim)
        kv = kv.to(dtype=self.base.dtype)
        layers = tuple(
            (kv[l, 0].unsqueeze(0).expand(batch_size, -1, -1, -1), kv[l, 1].unsqueeze(0).expand(batch_size, -1, -1, -1))
            for l in range(self.dims.n_layers)
        )  # each (batch, kv_heads, L, head_dim)
        return DynamicCache(layers, config=self.base.config)

    def extend_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        ones = attention_mask.new_ones(attention_mask.shape[0], self.cfg.prefix_len)
        return torch.cat([ones, attention_mask], dim=1)  # (batch, L + T)

    # ------------------------------------------------------------------ forward / generate
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        """Logits (and loss if `labels` given) of the LM with the prefix; positions start after the prefix (as PEFT).

        Without `position_ids`, positions are counted over the extended mask (as ``generate`` does), so a
        left-padded row gets the same positions, hence the same logits on its real tokens, as a right-padded one.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        mask = self.extend_mask(attention_mask)  # (batch, L + T)
        if kwargs.get("position_ids") is None:
            counted = (mask.long().cumsum(-1) - 1)[:, self.cfg.prefix_len:]  # (batch, T)
            default = torch.arange(input_ids.shape[1], device=input_ids.device) + self.cfg.prefix_len
            # pads keep the default positions (they are never attended to), so right padding is unchanged
            kwargs["position_ids"] = torch.where(attention_mask.bool(), counted, default)
        cache = self.build_cache(input_ids.shape[0])
        return self.base(
            input_ids=input_ids, attention_mask=mask, past_key_values=cache,
            use_cache=kwargs.pop("use_cache", False), **kwargs,
        )

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        """``base.generate`` with the prefix in the cache. Returns only the NEW tokens, (batch, <= max_new_tokens).

        Prompts should be left-padded (the usual decoder-only convention).
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        cache = self.build_cache(input_ids.shape[0])
        out = self.base.generate(
            input_ids=input_ids, attention_mask=self.extend_mask(attention_mask), past_key_values=cache, **kwargs
        )
        return out[:, input_ids.shape[1]:]

    # ------------------------------------------------------------------ export / reload
    @torch.no_grad()
    def export_prefix(self) -> dict:
        """The computed prefix only (the MLP is dropped): what is kept for inference."""
        return {
            "kv": self.prefix().detach().cpu().contiguous(),  # (layers, 2, kv_heads, L, head_dim)
            "dims": asdict(self.dims),
            "config": asdict(self.cfg),
        }

    def save_prefix(self, folder: str | Path) -> Path:
        """Write the exported prefix as PEFT saves an adapter: FOLDER/prefix_config.json (dims, the training
        config, the format) and FOLDER/prefix_model.safetensors (the `kv` tensor; no pickle, safe to load from
        anyone). Returns FOLDER; `PrefixModel.from_exported(base, FOLDER)` reloads it."""
        import json

        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        exported = self.export_prefix()
        save_file({"kv": exported["kv"]}, str(folder / PREFIX_WEIGHTS))
        meta = {"format": PREFIX_FORMAT, "dims": exported["dims"], "config": exported["config"]}
        (folder / PREFIX_CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
        return folder

    @staticmethod
    def load_exported(folder: str | Path) -> dict:
        """The export_prefix() dict of a folder written by save_prefix (ValueError naming a malformed file)."""
        import json

        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder)
        weights, config = folder / PREFIX_WEIGHTS, folder / PREFIX_CONFIG
        if not weights.is_file() or not config.is_file():
            raise FileNotFoundError(f"exported prefix folder {folder} lacks {PREFIX_WEIGHTS} and {PREFIX_CONFIG} "
                                    f"(write it with PrefixModel.save_prefix)")
        try:
            meta = json.loads(config.read_text())
            kv = load_file(str(weights))["kv"]
        except (ValueError, KeyError, SafetensorError) as e:
            raise ValueError(f"exported prefix in {folder} is malformed ({e}); re-export it with save_prefix") from e
        if meta.get("format") != PREFIX_FORMAT:
            raise ValueError(f"{config} is malformed: format {meta.get('format')!r}, expected {PREFIX_FORMAT!r}")
        return {"kv": kv, "dims": meta.get("dims"), "config": meta.get("config")}

    @classmethod
    def from_exported(cls, base: nn.Module, exported: dict | str | Path) -> "PrefixModel":
        """Rebuild a model with a `fixed` prefix from `export_prefix()` output or a folder written by
        `save_prefix`."""
        if not isinstance(exported, dict):
            exported = cls.load_exported(exported)
        if not isinstance(exported, dict) or "kv" not in exported:
            raise ValueError("exported prefix must be a dict with a 'kv' tensor of shape (layers, 2, kv_heads, L, head_dim)")
        kv = exported["kv"]
        dims = KVDims.from_config(base.config)
        want = (dims.n_layers, 2, dims.kv_heads, kv.shape[3], dims.head_dim)
        if tuple(kv.shape) != want:
            raise ValueError(f"exported prefix has shape {tuple(kv.shape)}, but this model needs {want}")
        cfg = PrefixConfig(structure="fixed", prefix_len=kv.shape[3])
        model = cls(base, cfg)
        model.prefix.flat.copy_(kv.permute(3, 0, 1, 2, 4).reshape(kv.shape[3], -1))
        return model


def fixed_prefix(base: nn.Module, kv: torch.Tensor) -> PrefixModel:
    """A model with the given prefix planted (a teacher). `kv`: (layers, 2, kv_heads, L, head_dim)."""
    return PrefixModel.from_exported(base, {"kv": kv})


def prefix_atoms(kv: torch.Tensor) -> torch.Tensor:
    """Per-layer view of a prefix: (layers, L, 2*kv_dim) = [key of all heads, value of all heads] per position.

    A layout helper only: do NOT match positions per layer. Each (layer, key-value head) is its own mixture
    and its positions can be permuted independently of the other heads' (see `head_atoms`).
    """
    n_layers, _, kv_heads, L, head_dim = kv.shape
    return kv.permute(0, 3, 1, 2, 4).reshape(n_layers, L, 2 * kv_heads * head_dim)


def head_atoms(kv: torch.Tensor) -> torch.Tensor:
    """The atoms of every mixture: (layers, kv_heads, L, 2*head_dim) = [key; value] of one position in one head.

    Attention is invariant to permuting the prefix positions SEPARATELY within each (layer, key-value head)
    (cached keys carry no position and heads are mixed only after attention), so each (layer, head) is one
    mixture of experts whose atoms are its L positions, matched Voronoi-style.
    """
    return torch.cat([kv[:, 0], kv[:, 1]], dim=-1)  # (layers, kv_heads, L, 2*head_dim)
