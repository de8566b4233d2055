"""The frozen base model of the planted study: a random-init transformer of a real Hugging Face architecture.

Its init std (`BaseConfig.init_std`) is larger than the library default 0.02 so that attention scores and logits
are O(1), as in a trained model: with 0.02 every attention row is nearly uniform and the prefix keys would hardly
matter. Inputs are uniform random tokens from its (small) vocabulary. Every sequence sits at positions 0..T-1
whatever the prefix length (prefix keys carry no position), so an over-specified student's family contains the
exact one's.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

ARCHS = ("gpt2", "llama")


@dataclass
class BaseConfig:
    """The frozen random-init transformer (real Hugging Face architecture).

    arch: gpt2 (GPT2LMHeadModel) | llama (LlamaForCausalLM, grouped-query attention).
    n_layer, n_head, d_model: layers, query heads, model width (d_model divisible by n_head).
    n_kv_head: llama only: key-value heads (None = n_head; must divide n_head).
    vocab: vocabulary size; small, so that the exact KL and float64 logits stay cheap.
    max_positions: longest input (planted.seq_len must not exceed it).
    init_std: initializer_range; 0.1 makes attention scores and logits O(1) (module docstring).
    seed: seed of the weights; the base is the same for every replicate.
    """

    arch: str = "gpt2"
    n_layer: int = 2
    n_head: int = 4
    n_kv_head: int | None = None
    d_model: int = 64
    vocab: int = 128
    max_positions: int = 64
    init_std: float = 0.1
    seed: int = 0

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


def positions(inputs: torch.Tensor) -> torch.Tensor:
    return torch.arange(inputs.shape[1]).expand_as(inputs)  # (batch, T): 0..T-1 whatever the prefix length


def logits(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """(batch, T, vocab) log-probabilities of the next token, positions 0..T-1, under `model`: a PrefixModel or
    the bare base (both take input ids and position ids)."""
    out = model(inputs, position_ids=positions(inputs)).logits
    return torch.log_softmax(out, dim=-1)


@torch.no_grad()
def natural_kv_rms(base: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """RMS of the model's own cached keys and values per (layer, key|value): (layers, 2)."""
    cache = base(input_ids=inputs, use_cache=True).past_key_values
    return torch.tensor([[t.pow(2).mean().sqrt().item() for t in (layer.keys, layer.values)] for layer in cache.layers],
                        dtype=torch.float64)
