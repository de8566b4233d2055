"""Many prefixes in one forward pass: every row of a batch carries its own prefix (its own cache slice).

A low-data comparison trains many small configurations on the same few examples: structures x
initialisations x learning rates x seeds. Each alone fills a GPU poorly (a batch of 8 short rows), and
the frozen network is the same for all of them. So here a batch of B examples is repeated once per
configuration ("member"): row ``k*B + b`` is example b under member k, and the key/value cache of that
row holds member k's prefix. One forward pass of the frozen model gives every member's loss; the losses
are SUMMED, and since no two members share a parameter, the gradient of the sum with respect to member
k's parameters is exactly the gradient of member k's own loss. Each member then has its own AdamW state,
linear schedule, gradient clipping and early stopping, so training K members together gives the same
parameters as training each alone (up to floating-point summation order; tested).

Structures (a member's ``structure``):

* ``independent``, ``shared`` (Li & Liang's MLP), ``deep_shared``, ``embedding_only`` (prompt tuning) -
  the encoders of `reparam.lm.prefix`, used as a prefix in front of the whole sequence ``[PREFIX; x; y]``.
* ``infix`` - Li & Liang's infix ablation ``[x; INFIX; y]``: a free key/value tensor per layer (the
  ``independent`` parameterisation) placed after the source x and before the separator, so the source
  cannot attend to it and every scored prediction can. Computed in two passes: the source alone (it does
  not depend on any parameter, so it runs once for all infix members, without gradients), then the
  separator and text with the cache ``[x; INFIX]``. Positions: x at 0.., the infix occupies
  ``len(x)..len(x)+L-1``, the rest follows.

Initialisation (a member's ``init``): ``random`` (each encoder's seeded default) or ``words`` - Li &
Liang's "activations of real words": the frozen model's keys/values of a task text of L tokens.
``independent``/``infix`` copy them; ``embedding_only`` starts from the words' input embeddings (which
gives exactly those keys/values); ``shared``/``deep_shared`` keep their random MLP and correct its output
layer by the minimum-norm least-squares update that makes the initial output equal the word activations.

Positions of prefix rows start after the prefix (``L + 0, L + 1, ...``), as in `PrefixModel`.
Generation is beam search over the same many-row cache (`MultiPrefix.generate`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .prefix import KVDims, PrefixConfig, PrefixEncoder
from .structures import get_structure, structures_of
from .toplayers import lower_states, run_top
from .train import batch_indices

INITS = ("random", "words")


@dataclass(frozen=True)
class Member:
    """One configuration trained inside a `MultiPrefix`."""

    structure: str  # a structure the low-data study accepts (reparam.lm.structures.structures_of("low_data"))
    lr: float  # peak AdamW learning rate
    init: str = "random"  # random | words (module docstring)
    seed: int = 0  # seed of the parameter initialisation

    def __post_init__(self):
        allowed = structures_of("low_data")
        if self.structure not in allowed:
            raise ValueError(f"Member.structure={self.structure!r} is not one of {allowed}")
        if self.init not in INITS:
            raise ValueError(f"Member.init={self.init!r} is not one of {INITS}")
        if not self.lr > 0:
            raise ValueError(f"Member.lr={self.lr} must be > 0")

    @property
    def placement(self) -> str:
        return get_structure(self.structure).placement

    @property
    def name(self) -> str:
        return f"{self.structure}|{self.init}|lr={self.lr:g}|seed={self.seed}"


# ----------------------------------------------------------------------------- data


def encode_split(tok, examples, max_len: int, sep: str) -> list[dict]:
    """Rows ``x + sep + (" " + target + eos)`` with labels on the text only and ``source_len = len(x)``.

    The three parts are tokenised separately so that the source/separator boundary is known exactly
    (the infix goes there); every structure sees the same token ids. A row longer than `max_len` loses
    the end of its text; a source that leaves fewer than 8 text tokens is cut at its end too. Either
    is reported (with a count) in a warning: choose max_len so that the real runs never truncate.
    """
    import warnings

    eos = tok.eos_token_id
    s = tok.encode(sep, add_special_tokens=False)
    if max_len < len(s) + 9:
        raise ValueError(f"max_len={max_len} must leave room for the separator and >= 8 text tokens")
    rows, cut_text, cut_source = [], 0, 0
    for ex in examples:
        x = tok.encode(ex.source, add_special_tokens=False)
        y = tok.encode(" " + ex.target, add_special_tokens=False) + [eos]
        room = max_len - len(s) - min(len(y), 8)
        if len(x) > room:
            x, cut_source = x[:room], cut_source + 1
        if len(x) + len(s) + len(y) > max_len:
            y, cut_text = y[:max_len - len(x) - len(s)], cut_text + 1
        rows.append({"input_ids": x + s + y, "labels": [-100] * (len(x) + len(s)) + y, "source_len": len(x)})
    if cut_text or cut_source:
        warnings.warn(f"encode_split: max_len={max_len} cut the text of {cut_text} and the source of {cut_source} "
                      f"of {len(examples)} examples", RuntimeWarning, stacklevel=2)
    return rows


def encode_prompts(tok, sources: list[str], sep: str) -> list[dict]:
    """Generation prompts: the source ids and the separator ids, kept apart (for the infix)."""
    s = tok.encode(sep, add_special_tokens=False)
    return [{"x": tok.encode(src, add_special_tokens=False), "sep": s} for src in sources]


def collate_split(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch in two views: the whole row, and source / rest (for the infix)."""

    def pad(seqs, value):
        T = max(len(s) for s in seqs)
        out = torch.full((len(seqs), T), value, dtype=torch.long)
        mask = torch.zeros((len(seqs), T), dtype=torch.long)
        for i, s in enumerate(seqs):
            out[i, :len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, :len(s)] = 1
        return out, mask

    ids, mask = pad([r["input_ids"] for r in rows], pad_id)
    labels, _ = pad([r["labels"] for r in rows], -100)
    cut = [r["source_len"] for r in rows]
    x_ids, x_mask = pad([r["input_ids"][:c] for r, c in zip(rows, cut)], pad_id)
    r_ids, r_mask = pad([r["input_ids"][c:] for r, c in zip(rows, cut)], pad_id)
    r_labels, _ = pad([r["labels"][c:] for r, c in zip(rows, cut)], -100)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels, "x_ids": x_ids, "x_mask": x_mask,
             "x_len": torch.tensor(cut, dtype=torch.long), "r_ids": r_ids, "r_mask": r_mask, "r_labels": r_labels}
    if "lower" in rows[0]:  # top-K prefixes: stored lower-layer states, zero on the pads (never attended to)
        h = rows[0]["lower"]
        lower = h.new_zeros(len(rows), ids.shape[1], h.shape[-1])
        for i, r in enumerate(rows):
            lower[i, :len(r["lower"])] = r["lower"]
        batch["lower"] = lower  # (B, T, hidden)
    return batch


def _left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, T - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, T - len(s):] = 1
    return ids, mask


# ----------------------------------------------------------------------------- initialisation from words


@torch.no_grad()
def word_ids(tok, text: str, prefix_len: int) -> list[int]:
    """L token ids of `text` (cycled when the text is shorter than L, truncated when longer)."""
    ids = tok.encode(text, add_special_tokens=False)
    if not ids:
        raise ValueError(f"init text {text!r} has no tokens")
    return [ids[i % len(ids)] for i in range(prefix_len)]


# ----------------------------------------------------------------------------- top-K prefixes: stored states


def first_prefixed_layer(n_layers: int, top_layers: int | None) -> int:
    """Index of the first layer with a prefix when the top `top_layers` of `n_layers` have one (None: every layer)."""
    top = n_layers if top_layers is None else int(top_layers)
    if not 1 <= top <= n_layers:
        raise ValueError(f"top_layers={top_layers} must be in [1, {n_layers}] (the model's layers)")
    return n_layers - top


class LowerStates:
    """Adds "lower" to encoded rows: the state entering the first prefixed layer, (len(row), hidden).

    With the prefix in the top `top_layers` layers (None: every layer, nothing to add) that state depends
    on the row's tokens only (no layer below sees a prefix; positions L + t as in training), so it is
    computed once and reused by every step, configuration and structure.
    """

    def __init__(self, base: nn.Module, top_layers: int | None, prefix_len: int, pad_id: int, max_rows: int = 64,
                 cache_dir: str | None = None, model_key: str | None = None):
        """cache_dir + model_key (a fingerprint of the model's settings): keep computed states on disk, so a
        later run (the next chunk of a long study) reads them instead of recomputing them."""
        self.first = first_prefixed_layer(KVDims.from_config(base.config).n_layers, top_layers)
        self.base, self.prefix_len, self.pad_id, self.max_rows = base, prefix_len, pad_id, max_rows
        self.cache_dir, self.model_key = cache_dir, model_key

    def __call__(self, rows: list[dict]) -> list[dict]:
        if self.first == 0 or not rows:
            return rows
        if self.cache_dir is None or self.model_key is None:
            return self._compute(rows)
        import hashlib
        from pathlib import Path

        ids = [r["input_ids"] for r in rows]
        key = hashlib.sha256(repr((self.model_key, self.first, self.prefix_len, str(self.base.dtype), ids)).encode())
        path = Path(self.cache_dir) / f"{key.hexdigest()[:24]}.safetensors"
        if path.is_file():
            flat = self._read(path, sum(map(len, ids)))
            if flat is not None:
                dev = next(self.base.parameters()).device
                return [{**r, "lower": p.to(dev)} for r, p in zip(rows, flat.split([len(i) for i in ids]))]
        out = self._compute(rows)
        self._write(path, torch.cat([r["lower"] for r in out]).cpu().contiguous())
        return out

    #: the cache file's record of its own content (safetensors metadata): the SHA-256 of the states' bytes
    CHECKSUM_KEY = "reparam_sha256"

    @staticmethod
    def _digest(flat: torch.Tensor) -> str:
        import hashlib

        return hashlib.sha256(flat.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()

    def _say(self, text: str) -> None:
        import logging

        from ..console import say

        say(logging.getLogger(__name__), f"reparam: {text}", fallback="stderr")

    def _read(self, path, total: int) -> torch.Tensor | None:
        """The states of a cache file, (sum of row lengths, hidden), or None (said in one line) when the file
        fails a check: unreadable, no checksum (written before files carried one), another size, or bytes that
        differ from the checksum stored with them. Such a file is recomputed and rewritten, never trusted."""
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                recorded = (handle.metadata() or {}).get(self.CHECKSUM_KEY)
                flat = handle.get_tensor("states")
        except Exception as err:  # noqa: BLE001 - safetensors raises its own errors for a damaged header
            problem = f"cannot be read ({type(err).__name__})"
        else:
            if recorded is None:
                problem = "has no checksum (written by an older version)"
            elif flat.ndim != 2 or flat.shape[0] != total:
                problem = f"holds {tuple(flat.shape)} states for {total} tokens"
            elif self._digest(flat) != recorded:
                problem = "fails its checksum (damaged)"
            else:
                return flat
        self._say(f"the cached lower-layer states {path} {problem}; they are recomputed")
        return None

    def _write(self, path, flat: torch.Tensor) -> None:
        """Store the states with their checksum, atomically; a cache that cannot be written costs the next run a
        recomputation (said once per run), never this run."""
        from safetensors.torch import save_file

        from reparam.results import replace_atomically

        try:
            replace_atomically(path, lambda tmp: save_file({"states": flat}, str(tmp),
                                                            metadata={self.CHECKSUM_KEY: self._digest(flat)}))
        except OSError as err:
            if not getattr(self, "_said_unwritable", False):
                self._said_unwritable = True
                self._say(f"the lower-layer state cache {path.parent} cannot be written ({err.strerror or err}); "
                          f"the states are recomputed when needed")

    @torch.no_grad()
    def _compute(self, rows: list[dict]) -> list[dict]:
        dev = next(self.base.parameters()).device
        out = []
        for s in range(0, len(rows), self.max_rows):
            chunk = rows[s:s + self.max_rows]
            b = collate_split(chunk, self.pad_id)
            ids, mask = b["input_ids"].to(dev), b["attention_mask"].to(dev)
            pos = (self.prefix_len + torch.arange(ids.shape[1], device=dev)).expand_as(ids)
            state = lower_states(self.base, self.first, ids, mask, pos)  # (B, T, hidden)
            out += [{**r, "lower": state[i, :len(r["input_ids"])].clone()} for i, r in enumerate(chunk)]
        return out


# ----------------------------------------------------------------------------- the model


class MultiPrefix(nn.Module):
    """A frozen causal LM and K prefix encoders, one per member; only the encoders have parameters."""

    def __init__(self, base: nn.Module, members: list[Member], prefix_len: int = 10, hidden: int = 512,
                 embed_dim: int | None = None, init_ids: list[int] | None = None, top_layers: int | None = None):
        super().__init__()
        if not members:
            raise ValueError("MultiPrefix: members is empty")
        if len(set(members)) != len(members):
            raise ValueError("MultiPrefix: members must be distinct")
        if any(m.init == "words" for m in members) and init_ids is None:
            raise ValueError("MultiPrefix: a member has init='words' but init_ids is None (see word_ids)")
        for p in base.parameters():
            p.requires_grad_(False)
        self._base = (base,)  # a tuple: the frozen model stays out of this module's state dict
        self.members = list(members)
        self.prefix_len = prefix_len
        self.model_dims = KVDims.from_config(base.config)
        n_layers = self.model_dims.n_layers
        #: index of the first layer with a prefix; the layers below see none and are computed once (toplayers)
        self.first = first_prefixed_layer(n_layers, top_layers)
        if self.first > 0 and any(m.placement == "infix" for m in members):
            raise ValueError("MultiPrefix: the infix needs every layer (top_layers=None)")
        self.dims = dataclasses.replace(self.model_dims, n_layers=n_layers - self.first)  # the prefix's layers
        dev = next(base.parameters()).device
        encs = []
        for m in members:
            cfg = PrefixConfig(structure=m.structure, prefix_len=prefix_len, embed_dim=embed_dim, hidden=hidden, seed=m.seed)
            enc = PrefixEncoder(cfg, self.dims, network=base).to(device=dev, dtype=base.dtype)
            if m.init == "words":
                enc.structure.init_from_words(enc, base, init_ids, first=self.first)
            encs.append(enc)
        self.encoders = nn.ModuleList(encs)

    @property
    def base(self) -> nn.Module:
        return self._base[0]

    def member_parameters(self, k: int) -> list[nn.Parameter]:
        return [p for p in self.encoders[k].parameters() if p.requires_grad]

    # ------------------------------------------------------------------ prefixes
    def kv(self, ks: list[int]) -> torch.Tensor:
        """Prefix keys/values of members `ks`, (len(ks), layers, 2, kv_heads, L, head_dim).

        embedding_only members run through the frozen network together, in one batched pass.
        """
        out: list[torch.Tensor | None] = [None] * len(ks)
        emb = [i for i, k in enumerate(ks) if self.encoders[k].structure.through_network]
        for i, k in enumerate(ks):
            if i not in emb:
                out[i] = self.encoders[k]()
        if emb:
            x = torch.stack([self.encoders[ks[i]].embedding.weight for i in emb]).to(self.base.dtype)  # (E, L, hidden)
            if self.first == 0:
                cache = self.base.base_model(inputs_embeds=x, use_cache=True).past_key_values
            else:  # the virtual tokens enter the first prefixed layer; its keys/values come from the layers above
                E, L = x.shape[:2]
                ids = torch.zeros(E, L, dtype=torch.long, device=x.device)
                pos = torch.arange(L, device=x.device).expand(E, L)
                cache = run_top(self.base, self.first, x, ids, torch.ones_like(ids), pos, self._cache(()), use_cache=True
                                ).past_key_values
            layers = list(cache.layers)[self.first:]
            kv = torch.stack([torch.stack([layer.keys, layer.values], 1) for layer in layers], 1)  # (E, layers, 2, h, L, hd)
            for j, i in enumerate(emb):
                out[i] = kv[j]
        return torch.stack(out).to(self.base.dtype)

    def _cache(self, layers):
        from transformers import DynamicCache

        return DynamicCache(tuple(layers), config=self.base.config)

    def _below(self, rows: int, kv: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Empty cache entries of the layers below the first prefixed one (top-K prefixes; never read)."""
        _, _, _, h, _, hd = kv.shape
        empty = kv.new_zeros(rows, h, 0, hd)
        return [(empty, empty)] * self.first

    def with_lower(self, rows: list[dict], pad_id: int, max_rows: int = 64) -> list[dict]:
        """`rows` with their lower-layer states for this model's cut (see `LowerStates`)."""
        return LowerStates(self.base, self.dims.n_layers, self.prefix_len, pad_id, max_rows)(rows)

    def _nll(self, hidden: torch.Tensor, labels: torch.Tensor, row_member: torch.Tensor, K: int):
        """Per-member summed next-token NLL and token counts from hidden states (LM head only where scored)."""
        h, tgt, rm = hidden[:, :-1], labels[:, 1:], row_member[:, None].expand(-1, labels.shape[1] - 1)
        sel = tgt != -100
        logits = self.base.get_output_embeddings()(h[sel])  # (N, V)
        ce = F.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), tgt[sel], reduction="none")
        sums = torch.zeros(K, dtype=ce.dtype, device=ce.device).index_add(0, rm[sel], ce)
        counts = torch.bincount(rm[sel], minlength=K)
        return sums, counts

    def nll(self, batch: dict, ks: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed NLL (len(ks),) and token counts (len(ks),) of the labelled tokens of `batch` under members `ks`."""
        sums = torch.zeros(len(ks), dtype=torch.float64, device=batch["input_ids"].device)
        counts = torch.zeros(len(ks), dtype=torch.long, device=batch["input_ids"].device)
        for placement, fn in (("prefix", self._prefix_nll), ("infix", self._infix_nll)):
            idx = [i for i, k in enumerate(ks) if self.members[k].placement == placement]
            if idx:
                s, c = fn(batch, [ks[i] for i in idx])
                pos = torch.as_tensor(idx, device=sums.device)
                sums = sums.index_add(0, pos, s.to(sums.dtype))
                counts = counts.index_add(0, pos, c)
        return sums, counts

    def _rows(self, K: int, B: int, device) -> torch.Tensor:
        return torch.arange(K, device=device).repeat_interleave(B)  # row k*B + b -> member k

    def _prefix_nll(self, batch, ks):
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        (B, T), K, L = ids.shape, len(ks), self.prefix_len
        kv = self.kv(ks)  # (K, layers, 2, h, L, hd)
        rm = self._rows(K, B, ids.device)
        cache = self._cache(self._below(K * B, kv) + [(kv[rm, l, 0], kv[rm, l, 1]) for l in range(self.dims.n_layers)])
        pos = (L + torch.arange(T, device=ids.device)).expand(K * B, T)  # right padding: real tokens at L, L+1, ...
        full_mask = torch.cat([mask.new_ones(B, L), mask], 1).repeat(K, 1)
        if self.first == 0:
            hidden = self.base.base_model(input_ids=ids.repeat(K, 1), attention_mask=full_mask, position_ids=pos,
                                          past_key_values=cache, use_cache=False).last_hidden_state
        else:
            if "lower" not in batch:
                raise ValueError("top-K prefixes: the rows carry no lower-layer states; call MultiPrefix.with_lower first")
            hidden = run_top(self.base, self.first, batch["lower"].to(self.base.dtype).repeat(K, 1, 1), ids.repeat(K, 1),
                             full_mask, pos, cache).last_hidden_state
        sums, counts = self._nll(hidden, labels.repeat(K, 1), rm, K)
        return sums, counts

    def _source_cache(self, x_ids, x_mask):
        """The source alone (no prefix; independent of every parameter): per-layer keys/values (B, h, Tx, hd)."""
        with torch.no_grad():
            pos = (x_mask.cumsum(-1) - 1).clamp(min=0)
            c = self.base.base_model(input_ids=x_ids, attention_mask=x_mask, position_ids=pos, use_cache=True).past_key_values
            return [(layer.keys, layer.values) for layer in c.layers]

    def _infix_nll(self, batch, ks):
        x_ids, x_mask, x_len = batch["x_ids"], batch["x_mask"], batch["x_len"]
        r_ids, r_mask, r_labels = batch["r_ids"], batch["r_mask"], batch["r_labels"]
        (B, Tr), K, L = r_ids.shape, len(ks), self.prefix_len
        src = self._source_cache(x_ids, x_mask)
        kv = self.kv(ks)
        rm = self._rows(K, B, r_ids.device)
        cache = self._cache(
            (torch.cat([src[l][0].repeat(K, 1, 1, 1), kv[rm, l, 0]], 2), torch.cat([src[l][1].repeat(K, 1, 1, 1), kv[rm, l, 1]], 2))
            for l in range(self.dims.n_layers)
        )  # each (K*B, h, Tx + L, hd)
        mask = torch.cat([x_mask, x_mask.new_ones(B, L), r_mask], 1).repeat(K, 1)
        pos = (x_len.to(r_ids.device)[:, None] + L + torch.arange(Tr, device=r_ids.device)).repeat(K, 1)
        hidden = self.base.base_model(input_ids=r_ids.repeat(K, 1), attention_mask=mask, position_ids=pos,
                                      past_key_values=cache, use_cache=False).last_hidden_state
        return self._nll(hidden, r_labels.repeat(K, 1), rm, K)

    @torch.no_grad()
    def evaluate_nll(self, rows: list[dict], ks: list[int], pad_id: int, max_rows: int = 256) -> np.ndarray:
        """Mean per-token NLL (nats) of `rows` under each member of `ks` (batches of <= max_rows model rows).

        Rows are batched in order of length, so a batch pads little (the mean over tokens does not depend on
        the order; a small max_rows then costs less padding)."""
        dev = next(self.base.parameters()).device
        per = max(1, max_rows // max(len(ks), 1))
        sums, counts = np.zeros(len(ks)), np.zeros(len(ks))
        rows = sorted(rows, key=lambda r: len(r["input_ids"]))
        for s in range(0, len(rows), per):
            b = {k: v.to(dev) for k, v in collate_split(rows[s:s + per], pad_id).items()}
            sm, c = self.nll(b, ks)
            sums += sm.double().cpu().numpy()
            counts += c.cpu().numpy()
        return sums / np.maximum(counts, 1)

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(self, prompts: list[dict], ks: list[int], tok, max_new_tokens: int = 64, num_beams: int = 5,
                 length_penalty: float = 1.0, max_rows: int = 256) -> dict[int, list[str]]:
        """Beam-search continuations of every prompt (`encode_prompts`) under each member of `ks`.

        Returns {member index: [text per prompt]}, each cut at eos and at the first newline.
        `max_rows` bounds (member, prompt) pairs x beams per pass.
        """
        pairs = [(k, p) for k in ks for p in range(len(prompts))]
        pairs.sort(key=lambda kp: (self.members[kp[0]].placement, kp[0]))
        texts = {k: [""] * len(prompts) for k in ks}
        per = max(1, max_rows // num_beams)
        for s in range(0, len(pairs), per):
            chunk = pairs[s:s + per]
            for placement in ("prefix", "infix"):
                sub = [kp for kp in chunk if self.members[kp[0]].placement == placement]
                if not sub:
                    continue
                seqs = self._beam(sub, prompts, tok, max_new_tokens, num_beams, length_penalty)
                for (k, p), seq in zip(sub, seqs):
                    texts[k][p] = tok.decode(seq, skip_special_tokens=True).split("\n")[0].strip()
        return texts

    def _prefill(self, pairs, prompts, pad_id):
        """Run the prompts: per-layer cache, mask, next position and last hidden state per (member, prompt) row."""
        dev = next(self.base.parameters()).device
        ks = sorted({k for k, _ in pairs})
        kv = self.kv(ks)
        rm = torch.as_tensor([ks.index(k) for k, _ in pairs], device=dev)
        L, n_layers = self.prefix_len, self.dims.n_layers
        if self.members[pairs[0][0]].placement == "prefix" and self.first > 0:
            ids, mask = _left_pad([prompts[p]["x"] + prompts[p]["sep"] for _, p in pairs], pad_id)
            ids, mask = ids.to(dev), mask.to(dev)
            pos = L + (mask.cumsum(-1) - 1).clamp(min=0)
            below = self._cache(self._below(len(pairs), kv))
            state = lower_states(self.base, self.first, ids, mask, pos, cache=below)  # fills the entries below
            above = self._cache(self._below(len(pairs), kv) + [(kv[rm, l, 0], kv[rm, l, 1]) for l in range(n_layers)])
            out = run_top(self.base, self.first, state, ids, torch.cat([mask.new_ones(len(pairs), L), mask], 1), pos,
                          above, use_cache=True)
            layers = [(layer.keys, layer.values) for layer in below.layers[:self.first]]
            layers += [(layer.keys, layer.values) for layer in out.past_key_values.layers[self.first:]]
            # the mask returned is over the tokens only: the layers below have no prefix (see _decode)
            return layers, mask, L + mask.sum(-1), out.last_hidden_state[:, -1]
        if self.members[pairs[0][0]].placement == "prefix":
            ids, mask = _left_pad([prompts[p]["x"] + prompts[p]["sep"] for _, p in pairs], pad_id)
            ids, mask = ids.to(dev), mask.to(dev)
            cache = self._cache((kv[rm, l, 0], kv[rm, l, 1]) for l in range(n_layers))
            full = torch.cat([mask.new_ones(len(pairs), L), mask], 1)
            pos = L + (mask.cumsum(-1) - 1).clamp(min=0)
            out = self.base.base_model(input_ids=ids, attention_mask=full, position_ids=pos, past_key_values=cache, use_cache=True)
            nxt = L + mask.sum(-1)
        else:
            x_ids, x_mask = _left_pad([prompts[p]["x"] for _, p in pairs], pad_id)
            x_ids, x_mask = x_ids.to(dev), x_mask.to(dev)
            src = self._source_cache(x_ids, x_mask)
            cache = self._cache((torch.cat([src[l][0], kv[rm, l, 0]], 2), torch.cat([src[l][1], kv[rm, l, 1]], 2))
                                for l in range(n_layers))
            sep = torch.as_tensor([prompts[p]["sep"] for _, p in pairs], device=dev)  # same separator for all rows
            x_len = x_mask.sum(-1)
            full = torch.cat([x_mask, x_mask.new_ones(len(pairs), L + sep.shape[1])], 1)
            pos = x_len[:, None] + L + torch.arange(sep.shape[1], device=dev)
            out = self.base.base_model(input_ids=sep, attention_mask=full, position_ids=pos, past_key_values=cache, use_cache=True)
            nxt = x_len + L + sep.shape[1]
        layers = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        return layers, full, nxt, out.last_hidden_state[:, -1]

    def _decode(self, layers, mask, ids, pos):
        """One decoding step: (new per-layer cache entries, last hidden state (rows, hidden)).

        All layers prefixed: one pass, `mask` over [prefix; tokens]. Top-K prefixes: `mask` is over the
        tokens only; the layers below run first on their own cache (no prefix), then the top layers on
        theirs ([prefix; tokens]) from the state they hand over.
        """
        if self.first == 0:
            out = self.base.base_model(input_ids=ids, attention_mask=mask, position_ids=pos,
                                       past_key_values=self._cache(layers), use_cache=True)
            return [(layer.keys, layer.values) for layer in out.past_key_values.layers], out.last_hidden_state[:, -1]
        below = self._cache(layers)
        state = lower_states(self.base, self.first, ids, mask, pos, cache=below)
        ones = mask.new_ones(mask.shape[0], self.prefix_len)
        out = run_top(self.base, self.first, state, ids, torch.cat([ones, mask], 1), pos, self._cache(layers),
                      use_cache=True)
        new = [(layer.keys, layer.values) for layer in below.layers[:self.first]]
        new += [(layer.keys, layer.values) for layer in out.past_key_values.layers[self.first:]]
        return new, out.last_hidden_state[:, -1]

    def _beam(self, pairs, prompts, tok, max_new, beams, lp):
        """Length-normalised beam search with eos absorbing: a finished beam keeps its score and length.

        Candidates are ranked by (sum of log-probabilities) / length**lp; with beams=1 this is greedy decoding.
        """
        eos, pad = tok.eos_token_id, tok.pad_token_id
        head = self.base.get_output_embeddings()
        layers, mask, pos, last = self._prefill(pairs, prompts, pad)
        R, dev = len(pairs), mask.device
        logp = F.log_softmax(head(last).float(), -1)  # (R, V)
        V = logp.shape[-1]
        beams = min(beams, V)
        sums, tokens = logp.topk(beams, -1)  # (R, beams)
        length = torch.ones_like(sums)
        done = tokens == eos
        seqs = tokens[..., None]  # (R, beams, t)
        expand = torch.arange(R, device=dev).repeat_interleave(beams)
        layers = [(k[expand], v[expand]) for k, v in layers]
        mask, pos = mask[expand], pos[expand]
        out: list[list[int] | None] = [None] * R
        alive = torch.arange(R, device=dev)  # the pair of each batch row

        def finish(rows: torch.Tensor) -> None:
            best = (sums[rows] / length[rows] ** lp).argmax(-1)
            for i, b in zip(rows.tolist(), best.tolist()):
                seq = seqs[i, b].tolist()
                out[int(alive[i])] = seq[:seq.index(eos)] if eos in seq else seq

        for _ in range(max_new - 1):
            if bool(done.all()):
                break
            retired = done.all(-1)  # (R,): every beam has ended; eos absorbing leaves its scores as they are
            if int(retired.sum()) * 8 >= R:  # drop them from the batch (a cache copy, so only when it pays)
                finish(retired.nonzero().flatten())
                keep = (~retired).nonzero().flatten()
                rows = (keep[:, None] * beams + torch.arange(beams, device=dev)).reshape(-1)
                sums, length, done, seqs, alive = sums[keep], length[keep], done[keep], seqs[keep], alive[keep]
                layers = [(k[rows], v[rows]) for k, v in layers]
                mask, pos, R = mask[rows], pos[rows], len(keep)
            mask = torch.cat([mask, mask.new_ones(R * beams, 1)], 1)
            layers, last = self._decode(layers, mask, seqs[..., -1].reshape(-1, 1), pos[:, None])
            pos = pos + 1
            lp_next = F.log_softmax(head(last).float(), -1).view(R, beams, V)
            absorbed = torch.full_like(lp_next, -math.inf)
            absorbed[..., eos] = 0.0
            lp_next = torch.where(done[..., None], absorbed, lp_next)
            cand_sum = sums[..., None] + lp_next  # (R, beams, V)
            cand_len = (length + (~done).to(length.dtype))[..., None].expand_as(cand_sum)
            key = (cand_sum / cand_len ** lp).reshape(R, -1)
            top = key.topk(beams, -1).indices  # (R, beams)
            b_idx, t_idx = top // V, top % V
            sums = cand_sum.reshape(R, -1).gather(1, top)
            length = cand_len.reshape(R, -1).gather(1, top)
            done = done.gather(1, b_idx) | (t_idx == eos)
            seqs = torch.cat([seqs.gather(1, b_idx[..., None].expand(-1, -1, seqs.shape[-1])), t_idx[..., None]], -1)
            if beams > 1:  # greedy keeps every row in place: no copy of the whole cache per step
                flat = (torch.arange(R, device=dev)[:, None] * beams + b_idx).reshape(-1)
                layers = [(k[flat], v[flat]) for k, v in layers]
                mask, pos = mask[flat], pos[flat]
        finish(torch.arange(R, device=dev))
        return out


# ----------------------------------------------------------------------------- training


#: learning-rate schedules of `fit` (FitConfig.schedule)
SCHEDULES = ("linear", "constant")


@dataclass
class FitConfig:
    """Optimisation of every member of a `MultiPrefix` (each with its own AdamW and schedule)."""

    max_steps: int = 500  # optimiser steps at most (fewer when early stopping ends every member)
    batch_size: int = 8  # examples per step (capped at n); every member sees the same batches
    warmup: int = 0  # linear warm-up steps (both schedules)
    schedule: str = "linear"  # after the warm-up: "linear" decays to 0 at max_steps (so the cap changes every step's
    #                           lr), "constant" keeps the peak lr (a run's path does not depend on the cap)
    weight_decay: float = 0.0  # AdamW weight decay
    grad_clip: float = 1.0  # max gradient norm, per member (0 = off)
    eval_every: int = 25  # steps between dev-loss checks (also checked at step 0)
    patience: int = 4  # a member stops after this many checks without a new best dev loss
    seed: int = 0  # seed of the batch order
    train_rows: int = 320  # model rows (members x examples) per training forward pass; more members are split
    #                        into several passes per step (bounds activation memory; results are unchanged)
    eval_rows: int = 256  # model rows (members x examples) per dev-loss pass

    def __post_init__(self):
        for name in ("max_steps", "batch_size", "eval_every", "patience", "train_rows", "eval_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"FitConfig.{name}={getattr(self, name)} must be >= 1")
        if self.warmup < 0 or self.warmup >= self.max_steps:
            raise ValueError(f"FitConfig.warmup={self.warmup} must be in [0, max_steps={self.max_steps})")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"FitConfig.schedule={self.schedule!r} is not one of {SCHEDULES}")


@dataclass
class MemberFit:
    """What training recorded for one member; its encoder is left at the best dev-loss parameters."""

    best_dev: float = math.inf
    best_step: int = 0
    stopped_step: int = 0
    dev_curve: list = field(default_factory=list)  # [(step, dev loss)]
    train_losses: list = field(default_factory=list)
    diverged: bool = False  # its training loss became non-finite: it stopped there (its best parameters are kept)
    stopped_by: str = ""  # "patience" (no new best for `patience` checks), "cap" (max_steps reached first), "diverged"


def fit(model: MultiPrefix, train_rows: list[dict], dev_rows: list[dict], cfg: FitConfig, pad_id: int,
        log=None) -> tuple[list[MemberFit], dict]:
    """Train every member on `train_rows` with early stopping on the dev loss; restore each member's best.

    Returns (one MemberFit per member, timing {"steps", "wall_s", "train_s", "eval_s"}).
    """
    from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

    if not train_rows or not dev_rows:
        raise ValueError(f"fit: {len(train_rows)} training and {len(dev_rows)} dev rows; both must be non-empty")
    dev = next(model.base.parameters()).device
    K = len(model.members)
    opts, scheds = [], []
    for k, m in enumerate(model.members):
        params = model.member_parameters(k)
        if not params:
            raise ValueError(f"member {m.name} has no trainable parameters")
        opt = torch.optim.AdamW(params, lr=m.lr, weight_decay=cfg.weight_decay)
        opts.append(opt)
        scheds.append(get_linear_schedule_with_warmup(opt, cfg.warmup, cfg.max_steps) if cfg.schedule == "linear"
                      else get_constant_schedule_with_warmup(opt, cfg.warmup))
    fits = [MemberFit() for _ in range(K)]
    best_state = [None] * K
    misses = [0] * K
    active = list(range(K))
    t0, t_eval = time.perf_counter(), 0.0

    def check(step: int):
        nonlocal active, t_eval
        te = time.perf_counter()
        losses = model.evaluate_nll(dev_rows, active, pad_id, cfg.eval_rows)
        t_eval += time.perf_counter() - te
        keep = []
        for k, loss in zip(active, losses):
            f = fits[k]
            f.dev_curve.append((step, float(loss)))
            if loss < f.best_dev:
                f.best_dev, f.best_step, misses[k] = float(loss), step, 0
                best_state[k] = copy.deepcopy(model.encoders[k].state_dict())
            else:
                misses[k] += 1
            if misses[k] >= cfg.patience:
                f.stopped_step, f.stopped_by = step, "patience"
            else:
                keep.append(k)
        active = keep
        if log:
            log(f"step {step}: {len(active)}/{K} members active")

    step = 0
    check(0)
    while step < cfg.max_steps and active:
        idx = batch_indices(len(train_rows), cfg.batch_size, step, cfg.seed)
        batch = {k: v.to(dev) for k, v in collate_split([train_rows[i] for i in idx], pad_id).items()}
        for o in (opts[k] for k in active):
            o.zero_grad(set_to_none=True)
        per_pass = max(1, cfg.train_rows // len(idx))
        losses = []
        for g in range(0, len(active), per_pass):
            group = active[g:g + per_pass]
            sums, counts = model.nll(batch, group)
            part = sums / counts.clamp(min=1)  # each member's mean token NLL on this batch
            finite = torch.isfinite(part)
            part[finite].sum().backward()  # members share no parameter: each gets exactly its own gradient
            losses.append(part.detach())
        per_member = torch.cat(losses)
        for i, k in enumerate(active):
            if not torch.isfinite(per_member[i]):  # a too-large lr of the grid: this member stops, the others go on
                fits[k].diverged, fits[k].stopped_step, fits[k].stopped_by = True, step, "diverged"
        diverged = {k for k in active if fits[k].diverged}
        if log and diverged:
            log(f"step {step}: non-finite training loss, stopped: {[model.members[k].name for k in diverged]}")
        for i, k in enumerate(active):
            if k in diverged:
                continue
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.member_parameters(k), cfg.grad_clip)
            opts[k].step()
            scheds[k].step()
            fits[k].train_losses.append(float(per_member[i].detach()))
        active = [k for k in active if k not in diverged]
        step += 1
        if active and (step % cfg.eval_every == 0 or step == cfg.max_steps):
            check(step)
    for k in range(K):
        if k in active:
            fits[k].stopped_step, fits[k].stopped_by = step, "cap"
        if best_state[k] is not None:
            model.encoders[k].load_state_dict(best_state[k])
    wall = time.perf_counter() - t0
    return fits, {"steps": step, "wall_s": wall, "eval_s": t_eval, "train_s": wall - t_eval}
