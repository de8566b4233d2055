"""Many prefixes per forward pass: batched == alone, against the single-prefix model and brute force.

All comparisons run in float64 on tiny random models (GPT-2 and a grouped-query Llama), so the only
difference between a batched and a lone computation is summation order; the tolerances below (1e-9
relative on parameters after training, 1e-10 on losses) are far below any real discrepancy.
"""
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from reparam.lm.multiprefix import FitConfig, Member, MultiPrefix, collate_split, fit
from reparam.lm.structures import word_kv
from reparam.lm.prefix import PrefixModel

V = 40
EOS = V - 1


def _gpt2():
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=V, n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=EOS, eos_token_id=EOS)
    return GPT2LMHeadModel(cfg).eval().to(torch.float64)


def _llama(vocab=V):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, bos_token_id=vocab - 1, eos_token_id=vocab - 1)
    return LlamaForCausalLM(cfg).eval().to(torch.float64)


BASES = {"gpt2": _gpt2, "llama": _llama}


def _rows(n, seed=0, y_tokens=(0, V - 2)):
    """Rows x + sep + y + eos of random lengths (labels on y + eos), as encode_split makes them."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        x = rng.integers(0, V - 2, rng.integers(2, 6)).tolist()
        y = rng.integers(*y_tokens, rng.integers(2, 5)).tolist() + [EOS]
        sep = [V - 2]
        rows.append({"input_ids": x + sep + y, "labels": [-100] * (len(x) + 1) + y, "source_len": len(x)})
    return rows


MEMBERS = [Member(s, lr, init, seed=3) for s in ("independent", "shared", "deep_shared", "embedding_only", "infix")
           for init in ("random", "words") for lr in (3e-3, 3e-2)]
# far too large a step: their dev loss rises, so early stopping must act on them
MEMBERS += [Member("independent", 1.0, seed=3), Member("infix", 1.0, seed=3)]
INIT_IDS = [5, 6, 7]


@pytest.mark.parametrize("arch", sorted(BASES))
def test_prefix_rows_match_prefix_model(arch):
    """Each member's loss in the many-row pass equals PrefixModel's (the single-prefix path) on the same batch."""
    base = BASES[arch]()
    members = [m for m in MEMBERS if m.placement == "prefix" and m.lr == 3e-3]
    mp = MultiPrefix(base, members, prefix_len=3, hidden=16, init_ids=INIT_IDS)
    batch = collate_split(_rows(5), pad_id=0)
    sums, counts = mp.nll(batch, list(range(len(members))))
    for k, m in enumerate(members):
        pm = PrefixModel(base, mp.encoders[k].cfg, prefix=mp.encoders[k])
        with torch.no_grad():
            logits = pm(batch["input_ids"], batch["attention_mask"]).logits[:, :-1]  # float64 (token_nll casts to float32)
        tgt = batch["labels"][:, 1:]
        nll = F.cross_entropy(logits.reshape(-1, V), tgt.reshape(-1), ignore_index=-100, reduction="sum")
        assert int((tgt != -100).sum()) == int(counts[k])
        assert abs(float(nll) - float(sums[k])) <= 1e-10 * float(nll), m.name


@pytest.mark.parametrize("arch", sorted(BASES))
def test_infix_semantics_and_padding(arch):
    """Infix: a row's loss does not depend on the other rows' lengths (padding, positions), the infix acts
    on the text, and the source never sees it (changing it leaves the source's cached keys untouched)."""
    base = BASES[arch]()
    mp = MultiPrefix(base, [Member("infix", 1e-2, seed=1)], prefix_len=3)
    rows = _rows(4, seed=2)
    together, _ = mp.nll(collate_split(rows, 0), [0])
    alone = sum(float(mp.nll(collate_split([r], 0), [0])[0]) for r in rows)
    assert abs(float(together) - alone) <= 1e-10 * alone
    with torch.no_grad():
        mp.encoders[0].flat.mul_(3.0)
    changed, _ = mp.nll(collate_split(rows, 0), [0])
    assert abs(float(changed) - float(together)) > 1e-3
    b = collate_split(rows, 0)
    src = mp._source_cache(b["x_ids"], b["x_mask"])  # computed without any parameter
    assert not any(t.requires_grad for kv in src for t in kv)


def test_words_initialisation_gives_word_activations():
    base = _llama()
    target = word_kv(base, INIT_IDS)  # (layers, 2, h, L, hd)
    for s in ("independent", "shared", "deep_shared", "embedding_only", "infix"):
        mp = MultiPrefix(base, [Member(s, 1e-3, "words")], prefix_len=3, hidden=16, init_ids=INIT_IDS)
        with torch.no_grad():
            got = mp.kv([0])[0]
        assert torch.allclose(got, target, atol=1e-9), s
    with pytest.raises(ValueError, match="init_ids"):
        MultiPrefix(base, [Member("shared", 1e-3, "words")], prefix_len=3)


@pytest.mark.parametrize("arch", sorted(BASES))
def test_training_together_equals_training_alone(arch):
    """The acceptance test: all 22 members trained in one pass per step end with the parameters, dev curves
    and early-stopping steps that each reaches when trained alone (relative tolerance 1e-9, float64)."""
    base = BASES[arch]()
    # texts drawn from disjoint token ranges: fitting the training texts soon hurts the dev loss
    train_rows, dev_rows = _rows(10, seed=0, y_tokens=(0, 12)), _rows(6, seed=1, y_tokens=(20, V - 2))
    cfg = FitConfig(max_steps=8, batch_size=4, warmup=1, eval_every=2, patience=2, seed=0, eval_rows=64, train_rows=40)
    together = MultiPrefix(base, MEMBERS, prefix_len=3, hidden=16, init_ids=INIT_IDS)  # 10 members per pass
    fits, timing = fit(together, train_rows, dev_rows, cfg, pad_id=0)
    assert timing["steps"] >= 2
    stopped_early = 0
    for k, m in enumerate(MEMBERS):
        alone = MultiPrefix(base, [m], prefix_len=3, hidden=16, init_ids=INIT_IDS)
        (f1,), _ = fit(alone, train_rows, dev_rows, cfg, pad_id=0)
        f = fits[k]
        assert (f.best_step, f.stopped_step) == (f1.best_step, f1.stopped_step), m.name
        np.testing.assert_allclose([v for _, v in f.dev_curve], [v for _, v in f1.dev_curve], rtol=1e-10)
        np.testing.assert_allclose(f.train_losses, f1.train_losses, rtol=1e-10)
        for (name, p), p1 in zip(together.encoders[k].state_dict().items(), alone.encoders[0].state_dict().values()):
            torch.testing.assert_close(p, p1, rtol=1e-9, atol=1e-12, msg=f"{m.name}: {name}")
        assert f.best_dev <= f.dev_curve[0][1]
        stopped_early += f.stopped_step < cfg.max_steps
    # the run exercised both outcomes: some members stopped early, and training lowered some dev losses
    assert 0 < stopped_early < len(MEMBERS)
    assert any(f.best_step > 0 for f in fits)


class _Tok:
    def __init__(self, eos=EOS):
        self.eos_token_id = self.pad_token_id = eos

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


def test_beam_one_is_greedy_of_prefix_model():
    base = _gpt2()
    mp = MultiPrefix(base, [Member("shared", 1e-3, seed=2), Member("independent", 1e-3, seed=2)], prefix_len=3, hidden=16)
    prompts = [{"x": [1, 2, 3, 4], "sep": [V - 2]}, {"x": [9, 8], "sep": [V - 2]}]
    for k in range(2):
        pm = PrefixModel(base, mp.encoders[k].cfg, prefix=mp.encoders[k])
        seqs = mp._beam([(k, 0), (k, 1)], prompts, _Tok(), max_new=6, beams=1, lp=1.0)
        for p, seq in enumerate(seqs):
            ids = torch.tensor([prompts[p]["x"] + prompts[p]["sep"]])
            ref = pm.generate(ids, torch.ones_like(ids), max_new_tokens=6, do_sample=False, pad_token_id=EOS,
                              eos_token_id=EOS)[0].tolist()
            ref = ref[:ref.index(EOS)] if EOS in ref else ref
            assert seq == ref


@pytest.mark.parametrize("placement", ["prefix", "infix"])
def test_full_width_beam_is_exhaustive(placement):
    """With as many beams as tokens and two steps, beam search must return the best length-normalised
    sequence over all v^2 continuations (brute force, one row at a time, through the training forward)."""
    v = 10
    eos = v - 1
    base = _llama(vocab=v)
    m = Member("infix" if placement == "infix" else "independent", 1e-3, seed=5)
    mp = MultiPrefix(base, [m], prefix_len=2)
    prompt = {"x": [3, 4, 5], "sep": [v - 2]}
    got = mp._beam([(0, 0)], [prompt], _Tok(eos), max_new=2, beams=v, lp=1.0)[0]
    best, best_seq = -np.inf, None
    with torch.no_grad():
        for t1, t2 in itertools.product(range(v), range(v)):
            one = collate_split([{"input_ids": prompt["x"] + prompt["sep"] + [t1, t2],
                                  "labels": [-100] * 4 + [t1, t2], "source_len": 3}], 0)
            first = {**one, "labels": one["labels"].masked_fill(torch.arange(6) != 4, -100),
                     "r_labels": one["r_labels"].masked_fill(torch.arange(3) != 1, -100)}
            l1 = -float(mp.nll(first, [0])[0])  # log p(t1 | prompt)
            l12 = -float(mp.nll(one, [0])[0])  # log p(t1, t2 | prompt)
            score, seq = (l1, []) if t1 == eos else (l12 / 2, [t1] + ([] if t2 == eos else [t2]))
            if score > best + 1e-12:
                best, best_seq = score, seq
    assert got == best_seq


def test_a_diverging_member_stops_and_the_others_are_unaffected():
    """A member whose loss turns non-finite (here: a NaN planted in its prefix at the first step) stops with
    diverged=True and its step-0 parameters; the other member trains exactly as alone."""
    base = _gpt2()
    rows, dev = _rows(8, seed=0), _rows(4, seed=1)
    cfg = FitConfig(max_steps=4, batch_size=4, eval_every=2, patience=5)
    members = [Member("independent", 1e-2, seed=1), Member("shared", 1e-3, seed=1)]
    together = MultiPrefix(base, members, prefix_len=3, hidden=16)
    start = together.encoders[0].flat.detach().clone()
    real_nll = together.nll

    def poison_at_first_training_pass(batch, ks):  # after the step-0 dev check (no grad), member 0 is broken
        if torch.is_grad_enabled():
            with torch.no_grad():
                together.encoders[0].flat[0, 0] = float("nan")
        return real_nll(batch, ks)

    together.nll = poison_at_first_training_pass
    fits, _ = fit(together, rows, dev, cfg, pad_id=0)
    assert fits[0].diverged and fits[0].stopped_step == 0 and fits[0].best_step == 0
    assert torch.equal(together.encoders[0].flat, start)  # restored to its best (step-0) parameters
    alone = MultiPrefix(base, [members[1]], prefix_len=3, hidden=16)
    (f1,), _ = fit(alone, rows, dev, cfg, pad_id=0)
    assert not fits[1].diverged and fits[1].stopped_step == f1.stopped_step == 4
    np.testing.assert_allclose(fits[1].train_losses, f1.train_losses, rtol=1e-10)


@pytest.mark.parametrize("beams, lp", [(1, 1.0), (3, 0.0)])  # lp=0: ended beams keep their sum and win, so rows end
def test_rows_retired_from_the_batch_give_the_same_outputs(beams, lp):
    """Decoding drops (member, prompt) rows whose beams have all ended; the outputs must be those of decoding
    every row alone (where nothing is dropped), with some rows ending early and some running to the limit."""
    base = _gpt2()
    mp = MultiPrefix(base, [Member("shared", 1e-3, seed=2), Member("independent", 1e-3, seed=2)], prefix_len=3, hidden=16)
    rng = np.random.default_rng(0)
    prompts = [{"x": rng.integers(0, V - 2, rng.integers(2, 6)).tolist(), "sep": [V - 2]} for _ in range(12)]
    pairs = [(k, p) for k in range(2) for p in range(len(prompts))]
    # a random model rarely says its eos: take as "eos" a token that greedy decoding emits in some rows, not all
    free = mp._beam(pairs, prompts, _Tok(), max_new=14, beams=beams, lp=lp)
    rows_with = {t: sum(t in seq for seq in free) for t in range(V - 2)}
    for eos in sorted(rows_with, key=lambda t: -rows_with[t]):
        together = mp._beam(pairs, prompts, _Tok(eos), max_new=14, beams=beams, lp=lp)
        lengths = [len(s) for s in together]
        if min(lengths) < 13 <= max(lengths):  # rows were retired while others went on
            break
    else:
        pytest.fail("no token ends some rows and not others: the test would not exercise retiring rows")
    alone = [mp._beam([pair], prompts, _Tok(eos), max_new=14, beams=beams, lp=lp)[0] for pair in pairs]
    assert together == alone
