"""The gpt2 path end to end on a random-init GPT-2 of the real architecture with the real tokenizer:
train a few steps, generate, export, reload (pretrained weights cannot be had on these machines)."""
import torch

from reparam.lm.data import collate, encode_examples, load_e2e, nested_subset
from reparam.lm.models import ModelConfig, load_model
from reparam.lm.prefix import PrefixConfig, PrefixModel
from reparam.lm.train import batch_indices

from .conftest import needs_data, needs_tokenizer

PROMPT = "name : The Vaults | eatType : pub"


def _nll(pm: PrefixModel, batch: dict) -> torch.Tensor:
    """Mean next-token NLL of the labelled tokens (the model's own loss)."""
    return pm(batch["input_ids"], batch["attention_mask"], labels=batch["labels"]).loss


def _generate(pm: PrefixModel, tok) -> list[str]:
    ids = torch.tensor([tok.encode(PROMPT)])
    out = pm.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    return [tok.decode(o, skip_special_tokens=True) for o in out]


@needs_data
@needs_tokenizer
def test_gpt2_path_train_generate_export_reload(tmp_path):
    # the gpt2 loader reads a local folder: save a (small, random-init) GPT-2 there, as a user would save gpt2
    tiny, tok = load_model(ModelConfig(name="tiny", n_layer=2, n_head=2, n_embd=32))
    tiny.save_pretrained(tmp_path / "gpt2")
    tok.save_pretrained(tmp_path / "gpt2")
    model, tok = load_model(ModelConfig(name="gpt2", path=str(tmp_path / "gpt2")))
    assert model.config.model_type == "gpt2" and tok.encode("Hello world") == [15496, 995]

    rows = encode_examples(tok, nested_subset(load_e2e("train"), 8, seed=0), max_len=48)
    everything = collate(rows, tok.pad_token_id)
    pm = PrefixModel(model, PrefixConfig(structure="shared", prefix_len=4, hidden=32))
    with torch.no_grad():
        before = float(_nll(pm, everything))
    opt = torch.optim.AdamW([p for p in pm.prefix.parameters() if p.requires_grad], lr=1e-2)
    for step in range(10):  # ten AdamW steps on batches of 4: the prefix is all that trains
        opt.zero_grad()
        _nll(pm, collate([rows[i] for i in batch_indices(len(rows), 4, step, seed=0)], tok.pad_token_id)).backward()
        opt.step()
    with torch.no_grad():
        after = float(_nll(pm, everything))
    assert after < before

    texts = _generate(pm, tok)
    assert len(texts) == 1 and isinstance(texts[0], str)

    path = pm.save_prefix(tmp_path / "prefix")
    re = PrefixModel.from_exported(model, path)
    with torch.no_grad():
        assert abs(float(_nll(re, everything)) - after) < 1e-5
    assert _generate(re, tok) == texts
