"""The validation layer of the real-transformer experiments, and the key of their result logs.

Every LM entry point calls its validator FIRST, before a model, tokenizer or data file is loaded; a bad
value raises `reparam.validation.ConfigError` naming the field, the value and what is allowed, and the
entry point (decorated with `reparam.validation.exit_on_input_error`) prints one line and exits with 2.

API (cfg is the composed Hydra config of an experiment; `section` is its own block, e.g. "planted"):

    validate_common(cfg)                       data_root (when set), device (cuda needs a GPU), threads, n_boot,
                                               out_dir / run_dir (folders we can create), progress/draw_only
    validate_model(model_cfg, data_root=None)  registry name, explicit tokenizer_path must hold vocab.json +
                                               merges.txt (no silent byte-tokenizer fallback), tiny sizes,
                                               smollm2 GGUF file present
    check_pool_size(field, n, available)       after the data are loaded: n <= available examples
    max_positions(model_cfg)                   the positions the model can attend over, read from its config
                                               (tiny: n_positions; gpt2: config.json; smollm2: the GGUF header)
                                               without loading weights; None when it cannot be read
    check_prefix_positions(model_cfg, prefix_len, max_len, field)   prefix_len + max_len fit those positions
                                               (the prefix takes positions 0..L-1, the text L..L+T-1)
    require_recorded_rows(n_rows, setting_id, log, way_out)   a table step with no recorded rows of its setting
                                               is refused (DataError), never a silent exit 0

Result-log key:

    ROW_KEY_FIELDS                              per-row settings that are own columns of every row
    result_setting_id(cfg, section)             fingerprint of EVERY result-affecting setting of a run: the
                                               model block and the experiment block (prefix_len, lr, steps,
                                               weight_decay, warmup, grad_clip, batch_size, ...), minus the
                                               per-row keys (ns, seeds, structures, datasets) and settings that
                                               only change speed or display (progress, checkpoint_every,
                                               device, threads, n_boot). Stamped as `setting_id` on every row
                                               and part of the resume key (`reparam.lm.runner.Log`), so a rerun
                                               with another model / lr / steps into the same run_dir refits
                                               instead of reusing old rows, and tables only ever show rows of
                                               the current setting.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from reparam.validation import (ConfigError, DataError, check_choice, check_device, check_int, check_output_dir,
                                fingerprint, require)

#: Config keys that are per-row columns (not part of the setting fingerprint).
ROW_KEY_FIELDS = ("ns", "seeds", "structures", "datasets")
#: Settings that change speed or display only, never a recorded number (not part of the fingerprint).
NON_RESULT_FIELDS = ("progress", "train.checkpoint_every", "train.stop_after")


def _get(cfg: Any, key: str, default=None):
    return cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)


def validate_common(cfg: Any) -> None:
    """Fields shared by both experiments (top level of the config)."""
    from .datasets import data_root

    # Only a data_root the config names is checked here: unset, the data is searched where reparam.lm.datasets
    # says (REPARAM_DATA, the fetch cache, ...), and a dataset that is nowhere is reported by its loader with the
    # exact `reparam data fetch` command. So no other field's check depends on where the data happens to be.
    value = _get(cfg, "data_root")
    if value not in (None, ""):
        require(data_root(value).is_dir(), "data_root", value,
                f"a folder holding the data (e2e/, webnlg2017/, gpt2-tokenizer/); {data_root(value)} does not exist")
    check_device(_get(cfg, "device", "cpu"))
    check_int("threads", _get(cfg, "threads", 1), low=1)
    check_int("n_boot", _get(cfg, "n_boot", 2000), low=1)
    for name in ("out_dir", "run_dir"):
        value = _get(cfg, name)
        require(isinstance(value, str) and value != "", name, value, "a folder path")
        from .runner import repo_path

        check_output_dir(name, repo_path(value))
    for name in ("progress", "draw_only"):
        value = _get(cfg, name, False)
        require(isinstance(value, bool), name, value, "true or false")


def validate_model(model: Any, data_root: str | None = None) -> None:
    """The `model` block: a known name, files that exist, consistent tiny sizes."""
    from .models import REGISTRY, SMOLLM2_GGUF, ModelConfig, check_smollm2_file, repo_path, smollm2_folder

    name = check_choice("model.name", _get(model, "name"), sorted(REGISTRY))
    tok = _get(model, "tokenizer_path")
    if tok not in (None, ""):
        folder = repo_path(tok)
        require((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file(), "model.tokenizer_path", tok,
                f"a folder holding vocab.json and merges.txt ({folder} does not)")
    if name == "tiny":
        for key in ("n_layer", "n_head", "n_embd", "n_positions"):
            check_int(f"model.{key}", _get(model, key, 1), low=1)
        check_int("model.seed", _get(model, "seed", 0), low=0)
        require(_get(model, "n_embd", 64) % _get(model, "n_head", 4) == 0, "model.n_embd", _get(model, "n_embd"),
                f"a multiple of model.n_head={_get(model, 'n_head')}")
    if name == "smollm2":
        keys = {k: _get(model, k) for k in ("name", "path", "cache")}
        folder = smollm2_folder(ModelConfig(**{k: v for k, v in keys.items() if v is not None}))
        require((folder / SMOLLM2_GGUF).is_file(), "model.path" if keys["path"] else "model.cache",
                keys["path"] or keys["cache"],
                f"a folder holding {SMOLLM2_GGUF} (fetch it with `python -m reparam.lm.models fetch smollm2 "
                f"--cache {folder.parent}`)")
        check_smollm2_file(folder / SMOLLM2_GGUF)  # its bytes, before a folder is made or the model is loaded
    check_choice("model.dtype", _get(model, "dtype", "float32"), ["float32", "float64", "bfloat16", "float16"])


def check_pool_size(field: str, n: int, available: int) -> None:
    """After loading the data: a sample size larger than the pool is a config error, not a traceback."""
    require(n <= available, field, n, f"at most the {available} available examples")


def result_setting_id(cfg: Any, section: str) -> str:
    """Fingerprint (12 hex digits) of every result-affecting setting of one experiment run: the model block
    and the `section` block, minus ROW_KEY_FIELDS and NON_RESULT_FIELDS. See the module docstring."""
    from omegaconf import OmegaConf

    def plain(node):
        return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node

    model = dict(plain(_get(cfg, "model")) or {})
    model.pop("data_root", None)  # a location, not a setting (the data itself is keyed by name)
    block = dict(plain(_get(cfg, section)) or {})
    ignore = list(ROW_KEY_FIELDS) + list(NON_RESULT_FIELDS)
    return fingerprint({"model": model, section: block}, ignore=[f"{section}.{k}" for k in ignore])


def committed_folder(path: str | Path) -> bool:
    """True when `path` (resolved like the experiments resolve it) lies in the repository's committed figures/."""
    from .runner import repo_path
    from .models import REPO_ROOT

    try:
        repo_path(path).resolve().relative_to((REPO_ROOT / "figures").resolve())
        return True
    except ValueError:
        return False


def _model_size(model: Any, tiny: tuple[str, int], config_keys: tuple[str, str], gguf_key: str) -> int | None:
    """One size of the model of the `model` block, read without loading its weights: tiny from `tiny` (key, default),
    gpt2 from its config.json (`config_keys`, first found), smollm2 from the GGUF header's `gguf_key`. None when it
    cannot be read here (a hub name without a local copy, no `gguf` package): the caller then skips its check
    rather than guess."""
    from .models import REGISTRY, SMOLLM2_GGUF, ModelConfig, repo_path, smollm2_folder

    name = _get(model, "name")
    if name not in REGISTRY:
        return None
    if name == "tiny":
        value = _get(model, *tiny)
        return int(value) if isinstance(value, int) else None
    if name == "gpt2":
        path = _get(model, "path")
        config = repo_path(path) / "config.json" if path else None
        if config is None or not config.is_file():
            return None
        try:
            import json

            data = json.loads(config.read_text())
        except (OSError, ValueError):
            return None
        value = data.get(config_keys[0], data.get(config_keys[1]))
        return int(value) if isinstance(value, int) else None
    if name == "smollm2":
        keys = {k: _get(model, k) for k in ("name", "path", "cache")}
        gguf_path = smollm2_folder(ModelConfig(**{k: v for k, v in keys.items() if v is not None})) / SMOLLM2_GGUF
        if not gguf_path.is_file():
            return None
        try:
            from gguf import GGUFReader

            field = GGUFReader(str(gguf_path)).fields.get(gguf_key)
            return int(field.parts[field.data[0]][0]) if field is not None else None
        except Exception:  # noqa: BLE001 - an unreadable header: the loader reports the file itself
            return None
    return None


def max_positions(model: Any) -> int | None:
    """How many positions the model of the `model` block attends over (prefix + text), read without loading its
    weights (`_model_size`); None when the number cannot be read here."""
    return _model_size(model, ("n_positions", 256), ("n_positions", "max_position_embeddings"), "llama.context_length")


def model_layers(model: Any) -> int | None:
    """The number of transformer layers of the `model` block, read without loading its weights (`_model_size`);
    None when it cannot be read here."""
    return _model_size(model, ("n_layer", 2), ("n_layer", "num_hidden_layers"), "llama.block_count")


def check_prefix_positions(model: Any, prefix_len: Any, max_len: Any, field: str = "low_data") -> None:
    """Refuse `{field}.prefix_len` when prefix_len + max_len exceeds the model's positions (max_positions): the
    prefix takes positions 0..prefix_len-1 and the text the next max_len, so more would index past the model's
    position table (an IndexError deep in the forward pass) or past what it was trained on. Runs before the
    weights load."""
    limit = max_positions(model)
    if limit is None or not isinstance(prefix_len, int) or not isinstance(max_len, int):
        return
    if prefix_len + max_len > limit:
        raise ConfigError(
            f"{field}.prefix_len={prefix_len} is invalid: {field}.prefix_len + {field}.max_len = {prefix_len} + "
            f"{max_len} = {prefix_len + max_len} exceeds the {limit} positions of model {_get(model, 'name')!r}; "
            f"must be at most {limit - max_len} (or lower {field}.max_len)")


def require_recorded_rows(n_rows: int, setting_id: str, log: str | Path, way_out: str = "run stage=train first") -> None:
    """A step that tabulates recorded rows (a report) with none of its setting: DataError naming the log, the
    setting and the way out, so the command exits non-zero instead of reporting nothing with status 0."""
    if n_rows <= 0:
        raise DataError(f"no recorded rows of setting {setting_id} in {log}: nothing to report; {way_out} (or pass "
                        f"the settings of the recorded run)")
