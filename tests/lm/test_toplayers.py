"""Top-K prefixes with stored lower-layer states == the same model computed in one uncached pass.

The reference below never cuts the model: it runs the whole network on every call, with an all-layer
cache in which the layers below the first prefixed one hold a dummy prefix that their attention mask
hides (per-layer masks set by forward pre-hooks). exp(min - max) is exactly 0 in float64, so those layers
compute exactly the prefix-free states. The package's path instead stores the states entering the first
prefixed layer once per example (`MultiPrefix.with_lower`) and runs only the layers above
(`reparam.lm.toplayers`). Losses and gradients must agree to 1e-10 (float64: summation order only).
"""
import pytest
import torch
import torch.nn.functional as F
from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from reparam.lm.multiprefix import Member, MultiPrefix, collate_split
from reparam.lm.structures import word_kv
from reparam.lm.toplayers import additive_mask, decoder_layers

from .test_multiprefix import _rows

V, EOS, N_LAYERS = 40, 39, 3


def _gpt2():
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=V, n_positions=64, n_embd=32, n_layer=N_LAYERS, n_head=4, bos_token_id=EOS, eos_token_id=EOS)
    return GPT2LMHeadModel(cfg).eval().to(torch.float64)


def _llama():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=N_LAYERS, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, bos_token_id=EOS, eos_token_id=EOS)
    return LlamaForCausalLM(cfg).eval().to(torch.float64)


BASES = {"gpt2": _gpt2, "llama": _llama}
STRUCTURES = ("independent", "shared", "embedding_only")


def _reference_hidden(base, first, kv, ids, mask, pos, replace_state=None):
    """The whole network in one pass; layers below `first` see a hidden dummy prefix. kv: (top, 2, h, L, hd)."""
    B, T = ids.shape
    top, _, h, L, hd = kv.shape
    dummy = torch.zeros(B, h, L, hd, dtype=kv.dtype)
    entries = [(dummy, dummy)] * first + [(kv[l, 0].expand(B, -1, -1, -1), kv[l, 1].expand(B, -1, -1, -1))
                                          for l in range(top)]
    key_mask = torch.cat([mask.new_ones(B, L), mask], 1)
    full = additive_mask(key_mask, T, kv.dtype)
    hidden_prefix = full.clone()
    hidden_prefix[..., :L] = torch.finfo(kv.dtype).min
    hooks = []

    def lower_mask(module, args, kwargs):
        if "attention_mask" in kwargs:
            kwargs["attention_mask"] = hidden_prefix
        else:  # GPT-2 blocks take the mask as their third positional argument
            args = (*args[:2], hidden_prefix, *args[3:])
        return args, kwargs

    layers = decoder_layers(base)
    for i in range(first):
        hooks.append(layers[i].register_forward_pre_hook(lower_mask, with_kwargs=True))
    if replace_state is not None:  # embedding_only: the virtual tokens' state replaces the input of layer `first`
        def replace(module, args, kwargs):
            return (replace_state, *args[1:]), kwargs
        hooks.append(layers[first].register_forward_pre_hook(replace, with_kwargs=True))
    try:
        return base.base_model(input_ids=ids, attention_mask=full, position_ids=pos,
                               past_key_values=DynamicCache(tuple(entries), config=base.config), use_cache=True)
    finally:
        for hk in hooks:
            hk.remove()


def _reference_kv(base, first, enc):
    """The prefix's (top, 2, h, L, hd) computed without the package's cut (embedding_only through hooks)."""
    if enc.cfg.structure != "embedding_only":
        return enc()
    L = enc.cfg.prefix_len
    ids = torch.zeros(1, L, dtype=torch.long)
    emb = enc.embedding.weight[None]
    # no prefix at all; the virtual tokens at positions 0..L-1 replace the input of layer `first`
    hooks = [decoder_layers(base)[first].register_forward_pre_hook(lambda m, a, k: ((emb, *a[1:]), k), with_kwargs=True)]
    try:
        cache = base.base_model(input_ids=ids, position_ids=torch.arange(L)[None], use_cache=True).past_key_values
    finally:
        hooks[0].remove()
    return torch.stack([torch.stack([layer.keys[0], layer.values[0]]) for layer in list(cache.layers)[first:]])


def _reference_loss(base, first, enc, batch):
    kv = _reference_kv(base, first, enc)
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    L = enc.cfg.prefix_len
    pos = (L + torch.arange(ids.shape[1])).expand_as(ids)
    hidden = _reference_hidden(base, first, kv, ids, mask, pos).last_hidden_state
    logits = base.get_output_embeddings()(hidden[:, :-1])
    tgt = labels[:, 1:]
    return F.cross_entropy(logits.reshape(-1, V), tgt.reshape(-1), ignore_index=-100, reduction="sum")


@pytest.mark.parametrize("top", [1, 2])
@pytest.mark.parametrize("arch", sorted(BASES))
def test_stored_lower_states_give_the_uncached_loss_and_gradients(arch, top):
    base = BASES[arch]()
    members = [Member(s, 1e-3, seed=4) for s in STRUCTURES]
    mp = MultiPrefix(base, members, prefix_len=3, hidden=16, top_layers=top)
    first = N_LAYERS - top
    assert mp.first == first and mp.dims.n_layers == top
    rows = _rows(5, seed=1)
    # stored in chunks of 2 rows, batched 5 at once: the states must not depend on the batch they were made in
    batch = collate_split(mp.with_lower(rows, pad_id=0, max_rows=2), pad_id=0)
    sums, _ = mp.nll(batch, list(range(len(members))))
    for k, m in enumerate(members):
        params = mp.member_parameters(k)
        got = torch.autograd.grad(sums[k], params, retain_graph=True)
        ref_loss = _reference_loss(base, first, mp.encoders[k], batch)
        want = torch.autograd.grad(ref_loss, params)
        assert abs(float(sums[k]) - float(ref_loss)) <= 1e-10 * float(ref_loss), m.name
        for g, w in zip(got, want):
            assert float((g - w).abs().max()) <= 1e-10 * max(float(w.abs().max()), 1e-30), m.name


@pytest.mark.parametrize("arch", sorted(BASES))
def test_greedy_decoding_with_top_layers_matches_the_uncached_argmax(arch):
    base = BASES[arch]()
    members = [Member(s, 1e-3, seed=5) for s in STRUCTURES]
    mp = MultiPrefix(base, members, prefix_len=3, hidden=16, top_layers=2)
    prompts = [{"x": [1, 2, 3, 4], "sep": [V - 2]}, {"x": [9, 8], "sep": [V - 2]}]

    class Tok:
        eos_token_id = pad_token_id = EOS

    for k in range(len(members)):
        seqs = mp._beam([(k, 0), (k, 1)], prompts, Tok(), max_new=5, beams=1, lp=1.0)
        with torch.no_grad():
            kv = _reference_kv(base, mp.first, mp.encoders[k])
            for p, seq in enumerate(seqs):
                ids = prompts[p]["x"] + prompts[p]["sep"]
                ref = []
                for _ in range(5):
                    t = torch.tensor([ids + ref])
                    pos = 3 + torch.arange(t.shape[1])[None]
                    h = _reference_hidden(base, mp.first, kv, t, torch.ones_like(t), pos).last_hidden_state[0, -1]
                    nxt = int(base.get_output_embeddings()(h).argmax())
                    if nxt == EOS:
                        break
                    ref.append(nxt)
                assert seq == ref, members[k].name


@pytest.mark.parametrize("arch", sorted(BASES))
def test_words_initialisation_gives_the_words_activations_in_the_top_layers(arch):
    base = BASES[arch]()
    ids = [5, 6, 7]
    members = [Member(s, 1e-3, init="words", seed=0) for s in STRUCTURES]
    mp = MultiPrefix(base, members, prefix_len=3, hidden=16, init_ids=ids, top_layers=2)
    want = word_kv(base, ids)[mp.first:]
    with torch.no_grad():
        got = mp.kv(list(range(len(members))))
    for k, m in enumerate(members):
        assert float((got[k] - want).abs().max()) <= 1e-10 * float(want.abs().max()), m.name


def test_top_layers_out_of_range_and_infix_are_refused():
    base = _gpt2()
    with pytest.raises(ValueError, match="top_layers=4"):
        MultiPrefix(base, [Member("shared", 1e-3)], top_layers=4)
    with pytest.raises(ValueError, match="infix"):
        MultiPrefix(base, [Member("infix", 1e-3)], top_layers=1)


def test_lower_states_are_read_back_from_the_disk_cache_exactly(tmp_path, monkeypatch):
    from reparam.lm.multiprefix import LowerStates

    base = _llama()
    rows = _rows(4, seed=2)
    first = LowerStates(base, 1, 3, pad_id=0, cache_dir=str(tmp_path), model_key="llama-test")(rows)
    assert len(list(tmp_path.iterdir())) == 1

    def no_compute(self, rows):
        raise AssertionError("recomputed although the states are cached")

    monkeypatch.setattr(LowerStates, "_compute", no_compute)
    again = LowerStates(base, 1, 3, pad_id=0, cache_dir=str(tmp_path), model_key="llama-test")(rows)
    for a, b in zip(first, again):
        assert torch.equal(a["lower"], b["lower"])
    other = LowerStates(base, 2, 3, pad_id=0, cache_dir=str(tmp_path), model_key="llama-test")  # another cut: a miss
    with pytest.raises(AssertionError, match="recomputed"):
        other(rows)
