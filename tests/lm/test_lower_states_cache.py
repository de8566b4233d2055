"""The lower-layer state cache of the low-data study (reparam.lm.multiprefix.LowerStates) is checked before use:
each file carries the SHA-256 of its states; a file whose bytes were zeroed or flipped (size unchanged), one without
a checksum, or one that cannot be read is recomputed with one line saying so, and a cache that cannot be written
costs a recomputation only. The command-line case (a damaged file under REPARAM_CACHE between two runs of
`reparam low-data`) is the slow test at the end."""
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reparam.lm.multiprefix import LowerStates

from .test_multiprefix import _rows
from .test_toplayers import _llama


@pytest.fixture(scope="module")
def base():
    return _llama()


def _states(base, cache, rows):
    return LowerStates(base, 1, 3, pad_id=0, cache_dir=str(cache), model_key="llama-test")(rows)


def _said(capsys, caplog, needle):
    """Lines holding `needle` that the run said (on stderr, or through logging where a handler is configured)."""
    text = capsys.readouterr().err.splitlines() + caplog.messages
    return [ln for ln in text if needle in ln]


def _data_offset(path: Path) -> int:
    """Where a safetensors file's tensor bytes begin: after its 8-byte header length and the JSON header."""
    return 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    start = _data_offset(path)
    if how == "zeroed":
        data[start:] = bytes(len(data) - start)
    else:  # a few flipped bits in the states
        for i in (start + 3, start + 101, len(data) - 5):
            data[i] ^= 0x41
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["zeroed", "flipped"])
def test_a_damaged_state_file_is_recomputed_with_one_line(base, tmp_path, capsys, caplog, how):
    rows = _rows(4, seed=2)
    first = _states(base, tmp_path, rows)
    (path,) = tmp_path.glob("*.safetensors")
    size = path.stat().st_size
    _damage(path, how)
    assert path.stat().st_size == size
    capsys.readouterr()
    again = _states(base, tmp_path, rows)  # before the fix: the damaged states were returned as valid
    for a, b in zip(first, again):
        assert torch.equal(a["lower"], b["lower"])
    (line,) = _said(capsys, caplog, "lower-layer states")
    assert "fails its checksum" in line and "recomputed" in line
    third = _states(base, tmp_path, rows)  # the rewritten file is whole again: read without a word
    assert all(torch.equal(a["lower"], b["lower"]) for a, b in zip(first, third))
    assert not _said(capsys, caplog, "lower-layer states")


def test_a_state_file_without_a_checksum_is_recomputed_and_rewritten_with_one(base, tmp_path, capsys, caplog,
                                                                              monkeypatch):
    from safetensors.torch import load_file, save_file

    rows = _rows(3, seed=5)
    first = _states(base, tmp_path, rows)
    (path,) = tmp_path.glob("*.safetensors")
    save_file(load_file(str(path)), str(path))  # as a version without checksums wrote it
    capsys.readouterr()
    again = _states(base, tmp_path, rows)
    assert all(torch.equal(a["lower"], b["lower"]) for a, b in zip(first, again))
    (line,) = _said(capsys, caplog, "lower-layer states")
    assert "has no checksum" in line

    def no_compute(self, rows):
        raise AssertionError("recomputed although the rewritten file carries its checksum")

    monkeypatch.setattr(LowerStates, "_compute", no_compute)
    _states(base, tmp_path, rows)


def test_an_unwritable_state_cache_costs_a_recomputation_said_once(base, tmp_path, capsys, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    lower = LowerStates(base, 1, 3, pad_id=0, cache_dir=str(blocker / "cache"), model_key="llama-test")
    want = _states(base, tmp_path / "ok", _rows(3, seed=1))
    for seed in (1, 2):
        got = lower(_rows(3, seed=seed))
        if seed == 1:
            assert all(torch.equal(a["lower"], b["lower"]) for a, b in zip(want, got))
    (line,) = _said(capsys, caplog, "cannot be written")
    assert "recomputed" in line


@pytest.mark.slow
def test_low_data_reads_no_damaged_state_file_from_the_command_line(tmp_path):
    """Two runs of the smoke setting with the prefix in the top layer only (the lower layer's states cached under
    REPARAM_CACHE): a state file zeroed between them is recomputed with one line and the rows are the same."""
    cache = tmp_path / "cache"
    env = dict(os.environ, REPARAM_CACHE=str(cache), HYDRA_FULL_ERROR="0")
    args = [sys.executable, "-m", "reparam.cli", "low-data", "setting=smoke", "stage=train", "low_data.top_layers=1",
            "low_data.datasets=[e2e]", "low_data.ns=[4]", "low_data.structures=[independent,shared]"]

    def run(folder):
        proc = subprocess.run([*args, f"run_dir={folder}"], capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results = [json.loads(ln)["row"] for ln in (folder / "low_data" / "results.jsonl").read_text().splitlines()]
        keys = ("dataset", "n", "replicate", "setting_id", "structure", "init", "lr", "test_nll", "best_dev",
                "best_step")  # what a damaged state file changed: the numbers, under the same setting id
        return proc, [{k: r.get(k) for k in keys} for r in results]

    _, first = run(tmp_path / "a")
    files = sorted((cache / "lower_states").glob("*.safetensors"))
    assert files
    for path in files:
        _damage(path, "zeroed")
    proc, again = run(tmp_path / "b")
    said = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "lower-layer states" in ln]
    assert len(said) == len(files) and all("fails its checksum" in ln for ln in said)
    assert again == first
