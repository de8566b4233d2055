"""The gpt2 path end to end on a random-init GPT-2 of the real architecture with the real tokenizer:
train a few steps, generate, export, reload (pretrained weights cannot be had on these machines)."""
from reparam.lm.data import encode_examples, load_e2e, nested_subset
from reparam.lm.models import ModelConfig, load_model
from reparam.lm.prefix import PrefixConfig, PrefixModel
from reparam.lm.train import TrainConfig, evaluate_nll, generate_texts, lm_loss, train

from .conftest import needs_data, needs_tokenizer


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
    pm = PrefixModel(model, PrefixConfig(structure="shared", prefix_len=4, hidden=32))
    before = evaluate_nll(pm, rows, tok.pad_token_id, progress=False)
    res = train(pm, rows, lm_loss, TrainConfig(steps=10, batch_size=4, lr=1e-2, progress=False), tok.pad_token_id,
                checkpoint=tmp_path / "ck.pt")
    after = evaluate_nll(pm, rows, tok.pad_token_id, progress=False)
    assert res["finished"] and after < before

    texts = generate_texts(pm, tok, ["name : The Vaults | eatType : pub"], max_new_tokens=6, progress=False)
    assert len(texts) == 1 and isinstance(texts[0], str)

    path = pm.save_prefix(tmp_path / "prefix")
    re = PrefixModel.from_exported(model, path)
    assert abs(evaluate_nll(re, rows, tok.pad_token_id, progress=False) - after) < 1e-5
    assert generate_texts(re, tok, ["name : The Vaults | eatType : pub"], max_new_tokens=6, progress=False) == texts
