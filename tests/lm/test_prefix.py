"""Prefix module: PEFT oracle, GQA shapes, fresh cache per call, generate(), export/reload."""
import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from reparam.lm.prefix import KVDims, PrefixConfig, PrefixModel, prefix_atoms


def _ids(vocab, B=2, T=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, min(vocab, 1000), (B, T), generator=g)
    mask = torch.ones_like(ids)
    mask[1, -2:] = 0  # right padding on row 1
    return ids, mask


def test_shared_matches_peft_prefix_projection(tiny):
    peft = pytest.importorskip("peft", reason="peft not installed: the oracle test needs it")
    model, _ = tiny
    ours = PrefixModel(model, PrefixConfig(structure="shared", prefix_len=4, hidden=32, seed=3))
    ids, mask = _ids(model.config.vocab_size)
    with torch.no_grad():
        a = ours(ids, mask).logits
    cfg = peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4, prefix_projection=True,
                                  encoder_hidden_size=32)
    pm = peft.get_peft_model(model, cfg)
    enc = pm.prompt_encoder["default"]
    with torch.no_grad():
        enc.embedding.weight.copy_(ours.prefix.embedding.weight)
        for i in (0, 2):
            enc.transform[i].weight.copy_(ours.prefix.transform[i].weight)
            enc.transform[i].bias.copy_(ours.prefix.transform[i].bias)
        b = pm(input_ids=ids, attention_mask=mask).logits
    pm.unload() if hasattr(pm, "unload") else None
    assert (a - b).abs().max().item() <= 1e-5
    # the prefix really acts: a different prefix gives different logits
    other = PrefixModel(model, PrefixConfig(structure="shared", prefix_len=4, hidden=32, seed=4))
    with torch.no_grad():
        assert (other(ids, mask).logits - a).abs().max().item() > 1e-4


def test_gqa_dims_and_forward():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=100, hidden_size=48, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=64)
    base = LlamaForCausalLM(cfg).eval()
    dims = KVDims.from_config(cfg)
    assert (dims.n_layers, dims.kv_heads, dims.head_dim) == (3, 2, 8)
    for s in ("independent", "shared", "deep_shared"):
        pm = PrefixModel(base, PrefixConfig(structure=s, prefix_len=5, hidden=16))
        assert tuple(pm.prefix().shape) == (3, 2, 2, 5, 8)
        ids, mask = _ids(100)
        out = pm(ids, mask).logits
        assert out.shape == (2, 7, 100) and torch.isfinite(out).all()


def test_fresh_cache_each_call_and_grads(tiny):
    model, _ = tiny
    pm = PrefixModel(model, PrefixConfig(structure="independent", prefix_len=3))
    ids, mask = _ids(model.config.vocab_size)
    l1 = pm(ids, mask).logits
    l2 = pm(ids, mask).logits  # a reused (mutated) cache would change this
    assert torch.equal(l1, l2)
    l1.sum().backward()
    assert pm.prefix.flat.grad is not None and pm.prefix.flat.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_generate_matches_manual_greedy(tiny):
    model, tok = tiny
    pm = PrefixModel(model, PrefixConfig(structure="shared", prefix_len=4, hidden=32, seed=1))
    ids = torch.tensor([[5, 6, 7, 8], [0, 0, 9, 10]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])  # left padding
    new = pm.generate(ids, mask, max_new_tokens=5, do_sample=False, pad_token_id=0, eos_token_id=None)
    cur, m = ids.clone(), mask.clone()
    with torch.no_grad():
        for _ in range(5):
            pos = (m.cumsum(-1) - 1).clamp(min=0) + 4  # generate() derives positions from the extended mask
            nxt = pm(cur, m, position_ids=pos).logits[:, -1].argmax(-1, keepdim=True)
            cur, m = torch.cat([cur, nxt], 1), torch.cat([m, torch.ones_like(nxt)], 1)
    assert torch.equal(new, cur[:, 4:])


def test_export_reload_drops_mlp_and_keeps_logits(tiny, tmp_path):
    model, _ = tiny
    pm = PrefixModel(model, PrefixConfig(structure="deep_shared", prefix_len=3, hidden=16, seed=2))
    ids, mask = _ids(model.config.vocab_size)
    path = pm.save_prefix(tmp_path / "prefix")
    assert sorted(p.name for p in path.iterdir()) == ["prefix_config.json", "prefix_model.safetensors"]
    assert json.loads((path / "prefix_config.json").read_text())["config"]["structure"] == "deep_shared"
    re = PrefixModel.from_exported(model, path)
    assert re.cfg.structure == "fixed" and not any(p.requires_grad for p in re.prefix.parameters())
    with torch.no_grad():
        assert torch.allclose(pm(ids, mask).logits, re(ids, mask).logits, atol=1e-6)


def test_reload_errors(tiny, tmp_path):
    model, _ = tiny
    with pytest.raises(FileNotFoundError, match="missing"):
        PrefixModel.from_exported(model, tmp_path / "missing")
    pm = PrefixModel(model, PrefixConfig(structure="independent", prefix_len=3))
    bad = pm.save_prefix(tmp_path / "bad")
    (bad / "prefix_model.safetensors").write_text("not a safetensors file")
    with pytest.raises(ValueError, match="malformed"):
        PrefixModel.from_exported(model, bad)
    with pytest.raises(ValueError, match="shape"):
        PrefixModel.from_exported(model, {"kv": torch.zeros(5, 2, 4, 3, 16)})
    with pytest.raises(ValueError, match="structure"):
        PrefixConfig(structure="nope")


def test_prefix_atoms_layout():
    kv = torch.arange(2 * 2 * 3 * 4 * 5, dtype=torch.float32).view(2, 2, 3, 4, 5)  # (layers, k|v, heads, L, hd)
    a = prefix_atoms(kv)
    assert a.shape == (2, 4, 2 * 3 * 5)
    assert torch.equal(a[1, 2, :5], kv[1, 0, 0, 2])  # layer 1, position 2: key of head 0 first
    assert torch.equal(a[1, 2, 15:20], kv[1, 1, 0, 2])  # then the values
