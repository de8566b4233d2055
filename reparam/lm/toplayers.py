"""The frozen model cut at one layer: prefixes in the top K layers only, the layers below computed once.

Top-K prefix-tuning (the placement of LLaMA-Adapter's prompts) puts the prefix keys/values in the top K of
the N decoder layers. The N - K layers below never see a prefix, so the hidden state entering layer
``first = N - K`` depends on the input tokens alone: it is computed once per example, kept, and reused by
every training step, configuration and structure. Each training step then runs only the top K layers
(and the output layer where the loss is), about K/N of the all-layer cost.

This module holds the three operations that cut the model, for any Hugging Face decoder whose body keeps
its layers in one ``nn.ModuleList`` (``layers`` in Llama-like models, ``h`` in GPT-2) and calls each
layer with the hidden state as first argument, returning the new hidden state:

* `lower_states` - run the layers below ``first`` (no prefix, no gradient) and return the state entering
  ``first``; nothing above is computed (the layer ``first`` is replaced by a stop).
* `run_top` - run the body with the layers below ``first`` replaced by a module that returns a given
  state: the embedding lookup still runs (cheap, its output is discarded), the top layers run with the
  given cache, under an explicit 4-D mask (cache entries of different layers may then hold different
  lengths: no prefix below ``first``, a prefix above).
* `additive_mask` - that 4-D mask: causal over the keys, which start with the prefix.

Exactness: the positions of the tokens are those of the all-layer prefix model (``L + t``) in every
layer, so with K = N this is the all-layer model; with K < N the stored states equal the freshly computed
ones up to floating-point summation order (tested to 1e-10 in float64 on loss and gradients).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn as nn


def decoder_layers(base: nn.Module) -> nn.ModuleList:
    """The body's list of decoder layers (``layers`` or ``h``); ValueError for an architecture without one."""
    body = base.base_model
    for name in ("layers", "h"):
        layers = getattr(body, name, None)
        if isinstance(layers, nn.ModuleList):
            return layers
    raise ValueError(f"{type(base).__name__}: no decoder layer list (.layers or .h) found; top-K prefixes need one")


class _Inject(nn.Module):
    """Stands in for a layer below the cut: returns the stored state entering the first prefixed layer."""

    def __init__(self, state: torch.Tensor):
        super().__init__()
        self.state = state

    def forward(self, hidden_states, *args, **kwargs):
        return self.state


class _Reached(Exception):
    def __init__(self, state: torch.Tensor):
        self.state = state


class _Stop(nn.Module):
    """Stands in for the first prefixed layer while the lower part runs: hands its input back, computes nothing."""

    def forward(self, hidden_states, *args, **kwargs):
        raise _Reached(hidden_states)


@contextmanager
def _swapped(layers: nn.ModuleList, replacement: dict[int, nn.Module]):
    saved = {i: layers[i] for i in replacement}
    try:
        for i, m in replacement.items():
            layers[i] = m
        yield
    finally:
        for i, m in saved.items():
            layers[i] = m


def lower_states(base: nn.Module, first: int, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 position_ids: torch.Tensor, cache=None) -> torch.Tensor:
    """The hidden state entering layer `first`, (batch, T, hidden), computed without any prefix.

    `cache` (optional): a DynamicCache whose entries below `first` hold the earlier tokens' keys/values
    (decoding); it is extended in place. The mask is the usual 2-D one over [cached tokens; input_ids].
    """
    layers = decoder_layers(base)
    if first >= len(layers):
        raise ValueError(f"first={first} must be a layer index below {len(layers)}")
    with _swapped(layers, {first: _Stop()}):
        try:
            base.base_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            past_key_values=cache, use_cache=cache is not None)
        except _Reached as reached:
            return reached.state
    raise RuntimeError("the model body never reached layer first; it does not call its layers in order")


def additive_mask(key_mask: torch.Tensor, q_len: int, dtype: torch.dtype) -> torch.Tensor:
    """(batch, 1, q_len, Tk) additive mask: the queries are the last q_len of the Tk keys (prefix first).

    Query i sits at key index Tk - q_len + i and sees key j when j <= that index and key_mask[:, j] is 1;
    the prefix keys come first, so every query sees them.
    """
    Tk = key_mask.shape[1]
    q_at = Tk - q_len + torch.arange(q_len, device=key_mask.device)  # (q,)
    causal = torch.arange(Tk, device=key_mask.device)[None, :] <= q_at[:, None]  # (q, Tk)
    allowed = causal[None] & key_mask.bool()[:, None, :]  # (batch, q, Tk)
    zero = torch.zeros((), dtype=dtype, device=key_mask.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)[:, None]


def run_top(base: nn.Module, first: int, state: torch.Tensor, input_ids: torch.Tensor, key_mask: torch.Tensor,
            position_ids: torch.Tensor, cache, use_cache: bool = False):
    """The body's output (last_hidden_state, and the cache) with the layers below `first` replaced by `state`.

    state: (batch, T, hidden), the input of layer `first`; input_ids (batch, T) only size the embedding
    lookup; key_mask: (batch, Tk) over the keys the top layers see (prefix and cached tokens first);
    cache: a DynamicCache whose entries from `first` up hold the prefix (and earlier tokens); the entries
    below are never read.
    """
    layers = decoder_layers(base)
    mask = additive_mask(key_mask, input_ids.shape[1], state.dtype)
    inject = _Inject(state)
    with _swapped(layers, {i: inject for i in range(first)}):
        return base.base_model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                               past_key_values=cache, use_cache=use_cache)
