"""Prefix structures and forward positions used by the planted-prefix study.

- left padding: PrefixModel.forward derives positions from the extended mask (before the fix, a
  left-padded row got default positions and its logits were off by ~1 on a tiny GPT-2);
- embedding_only equals prepending the learned embeddings to the input (prompt-tuning);
- shared_fixed learns only the latents, and set_map installs a given map.
"""
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from reparam.lm.prefix import PrefixConfig, PrefixModel, head_atoms


def _gpt2():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=60, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                      initializer_range=0.1, bos_token_id=0, eos_token_id=0)).eval()


def _llama():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=60, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                        initializer_range=0.1, bos_token_id=0, eos_token_id=0,
                                        pad_token_id=0)).eval()


@pytest.mark.parametrize("make_base", [_gpt2, _llama], ids=["gpt2", "llama"])
@pytest.mark.parametrize("structure", ["independent", "shared", "embedding_only"])
def test_left_padded_forward_equals_right_padded(make_base, structure):
    base = make_base()
    pm = PrefixModel(base, PrefixConfig(structure=structure, prefix_len=3, embed_dim=8, hidden=16, init_std=1.0))
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 60, (2, 6), generator=g)
    real = torch.tensor([6, 4])  # row 1 has 2 pads
    right_mask = (torch.arange(6)[None] < real[:, None]).long()
    left_mask = right_mask.flip(-1)
    right_ids = torch.where(right_mask.bool(), ids, 0)
    left_ids = torch.stack([torch.cat([ids[0]]), torch.cat([torch.zeros(2, dtype=torch.long), ids[1, :4]])])
    with torch.no_grad():
        right = pm(right_ids, right_mask).logits
        left = pm(left_ids, left_mask).logits
        # what forward did before the fix: default positions (L + arange(T)) whatever the padding
        old = base(input_ids=left_ids, attention_mask=pm.extend_mask(left_mask),
                   past_key_values=pm.build_cache(2)).logits
    # tolerance: float32 round-off of a 2-layer model (observed ~1e-6); the positions bug gives ~1e-1
    assert torch.allclose(left[0], right[0], atol=1e-5)
    assert torch.allclose(left[1, 2:], right[1, :4], atol=1e-5)
    assert (old[1, 2:] - right[1, :4]).abs().max() > 1e-2  # the test can tell the bug from the fix


@pytest.mark.parametrize("make_base", [_gpt2, _llama], ids=["gpt2", "llama"])
def test_embedding_only_is_prompt_tuning(make_base):
    base = make_base()
    pm = PrefixModel(base, PrefixConfig(structure="embedding_only", prefix_len=3, init_std=1.0, seed=2))
    ids = torch.randint(1, 60, (2, 5), generator=torch.Generator().manual_seed(3))
    emb = base.get_input_embeddings()(ids)
    virtual = pm.prefix.embedding.weight.unsqueeze(0).expand(2, -1, -1)
    with torch.no_grad():
        prepended = base(inputs_embeds=torch.cat([virtual, emb], dim=1)).logits[:, 3:]
        assert torch.allclose(pm(ids).logits, prepended, atol=1e-5)
    # only the input embeddings are trainable; the base weights stay out of the prefix's state
    assert [n for n, p in pm.prefix.named_parameters() if p.requires_grad] == ["embedding.weight"]
    assert set(pm.prefix.state_dict()) == {"embedding.weight"}
    pm(ids).logits.sum().backward()
    assert pm.prefix.embedding.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="network"):
        from reparam.lm.prefix import KVDims, PrefixEncoder

        PrefixEncoder(PrefixConfig(structure="embedding_only", prefix_len=2), KVDims.from_config(base.config))


def test_shared_fixed_learns_only_latents_and_takes_a_map():
    base = _gpt2()
    truth = PrefixModel(base, PrefixConfig(structure="shared", prefix_len=3, embed_dim=8, hidden=16, seed=5))
    student = PrefixModel(base, PrefixConfig(structure="shared_fixed", prefix_len=3, embed_dim=8, hidden=16, seed=6))
    assert [n for n, p in student.prefix.named_parameters() if p.requires_grad] == ["embedding.weight"]
    student.prefix.set_map(truth.prefix.transform)
    with torch.no_grad():
        student.prefix.embedding.weight.copy_(truth.prefix.embedding.weight)
        assert torch.equal(student.prefix(), truth.prefix())
    with pytest.raises(ValueError, match="shared_fixed"):
        truth.prefix.set_map(truth.prefix.transform)


def test_head_atoms_layout():
    kv = torch.arange(2 * 2 * 3 * 4 * 5, dtype=torch.float64).view(2, 2, 3, 4, 5)  # (layers, k|v, heads, L, hd)
    a = head_atoms(kv)
    assert a.shape == (2, 3, 4, 10)
    assert torch.equal(a[1, 2, 3, :5], kv[1, 0, 2, 3]) and torch.equal(a[1, 2, 3, 5:], kv[1, 1, 2, 3])
