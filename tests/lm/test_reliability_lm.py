"""The LM side of reliability: validators, the result-log key, tokenizer and data-file errors."""
import pytest
from omegaconf import OmegaConf

from reparam.lm import data as D
from reparam.lm.models import ModelConfig, load_model
from reparam.lm.runner import Log
from reparam.lm.validation import committed_folder, result_setting_id, validate_common, validate_model
from reparam.validation import ConfigError, DataError, check_unknown_keys, fingerprint


def cfg_of(**over):
    """A config with the shape both LM experiments share (top level + model + an experiment block)."""
    base = dict(data_root=None, device="cpu", threads=1, n_boot=10, out_dir="runs/lm/test-figures",
                run_dir="runs/lm/test", progress=False, draw_only=False,
                model=dict(name="tiny", path=None, cache=None, tokenizer_path=None, n_layer=2, n_head=4, n_embd=64,
                           n_positions=256, seed=0, dtype="float32"),
                planted=dict(truth="shared", prefix_len=3, embed_dim=16, hidden=16, ns=[4, 8], seeds=[0, 1],
                             n_test=8, structures=["independent", "shared"],
                             train=dict(steps=8, batch_size=4, lr=0.01, weight_decay=0.0, warmup=2, grad_clip=1.0,
                                        checkpoint_every=4)))
    cfg = OmegaConf.create(base)
    for key, value in over.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


@pytest.mark.parametrize("key, value, needle", [
    ("device", "cuda", "device='cuda'"),
    ("data_root", "/nonexistent", "data_root='/nonexistent'"),
    ("threads", 0, "threads=0"),
    ("out_dir", "/proc/x", "out_dir='/proc/x'"),
])
def test_common_fields_are_validated(key, value, needle):
    pytest.importorskip("torch")
    import torch
    if key == "device" and torch.cuda.is_available():
        pytest.skip("a GPU is present: device=cuda is valid here")
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace("[", r"\[")):
        validate_common(cfg_of(**{key: value}))


def test_an_explicit_missing_tokenizer_is_an_error_not_a_silent_byte_fallback(tmp_path):
    with pytest.raises(ConfigError, match="model.tokenizer_path"):
        validate_model(cfg_of(**{"model.tokenizer_path": str(tmp_path / "nope")}).model)
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        load_model(ModelConfig(name="tiny", tokenizer_path=str(tmp_path / "nope")))


def test_the_setting_fingerprint_changes_with_every_result_affecting_setting():
    sid = result_setting_id(cfg_of(), "planted")
    changed = {"model.n_layer": 3, "model.name": "gpt2", "planted.prefix_len": 4, "planted.train.lr": 0.02,
               "planted.train.steps": 9, "planted.train.weight_decay": 0.1, "planted.train.warmup": 3,
               "planted.train.grad_clip": 0.5, "planted.train.batch_size": 8, "planted.n_test": 16}
    for key, value in changed.items():
        assert result_setting_id(cfg_of(**{key: value}), "planted") != sid, key
    same = {"planted.ns": [4], "planted.seeds": [5], "planted.structures": ["shared"], "progress": True,
            "planted.train.checkpoint_every": 2, "device": "cuda", "threads": 2, "data_root": "/elsewhere"}
    for key, value in same.items():
        assert result_setting_id(cfg_of(**{key: value}), "planted") == sid, key
    assert fingerprint({"a": 1, "b": [1.0, 2]}) == fingerprint({"b": [1, 2], "a": 1.0})


def test_log_rows_of_another_setting_are_never_reused_or_shown(tmp_path, capsys):
    key = {"truth": "shared", "structure": "independent", "n": 4, "replicate": 0}
    old = Log(tmp_path / "results.jsonl", list(key), setting_id="aaaaaaaaaaaa")
    old.append({**key, "kl": 1.0})
    new = Log(tmp_path / "results.jsonl", list(key), setting_id="bbbbbbbbbbbb")
    assert not new.has(key)  # another lr / steps / model: refit, do not reuse
    new.append({**key, "kl": 2.0})
    assert new.has(key) and new.frame()["kl"].tolist() == [2.0]
    assert "other settings" in capsys.readouterr().out


def test_log_appends_after_a_torn_record_lose_nothing(tmp_path):
    path = tmp_path / "results.jsonl"
    log = Log(path, ["n"], setting_id="s")
    for n in (1, 2, 3):
        log.append({"n": n, "kl": float(n)})
    path.write_bytes(path.read_bytes()[:-30])  # killed while writing the last record
    with pytest.warns(RuntimeWarning, match="corrupt or partial"):
        again = Log(path, ["n"], setting_id="s")
    assert not again.has({"n": 3})
    again.append({"n": 3, "kl": 3.0})
    with pytest.warns(RuntimeWarning, match="corrupt or partial"):
        assert sorted(Log(path, ["n"], setting_id="s").frame()["n"]) == [1, 2, 3]


def test_truncated_and_non_utf8_e2e_files_name_the_file_and_line(tmp_path):
    e2e = tmp_path / "e2e"
    e2e.mkdir()
    good = 'mr,ref\n"name[A], food[B]","A serves B."\n'
    (e2e / "trainset.csv").write_text(good + '"name[C], food[D]"\n')  # the last row lost its ref
    with pytest.raises(DataError, match=r"trainset.csv line 3: a row must have exactly the 2 fields"):
        D.load_e2e("train", str(tmp_path))
    (e2e / "trainset.csv").write_bytes(good.encode() + b'"name[\xff]","x"\n')
    with pytest.raises(DataError, match=r"trainset.csv line 3: not UTF-8"):
        D.load_e2e("train", str(tmp_path))
    (e2e / "devset.csv").unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError, match="data_root="):
        D.load_e2e("dev", str(tmp_path))


def test_unknown_keys_and_committed_folders():
    with pytest.raises(ConfigError, match="optimiser.tol is not a known setting"):
        check_unknown_keys({"optimiser": {"tol": 1e-3}}, {"optimiser": {"ftol": None}})
    assert committed_folder("figures/lm") and not committed_folder("runs/lm/figures")


def test_plus_overrides_that_add_unknown_keys_are_refused():
    from reparam.validation import check_added_keys

    groups = ["model", "setting", "hydra/launcher"]
    check_added_keys(["low_data.ns=[4]", "+setting=smoke", "model=tiny"], groups)  # setting an existing key / group
    for bad in ("+low_data.tol=1", "++low_data.tol=1"):
        with pytest.raises(ConfigError, match="low_data.tol is not a known setting"):
            check_added_keys([bad], groups)
