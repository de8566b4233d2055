"""reparam.cache: a cached value is used only when its bytes match the checksum recorded with it and it was made
under the same settings; anything else is recomputed with one line, and an unwritable cache costs only that."""
import pickle

from reparam.cache import cached, read_checked


def _run(path, settings, value, reuse=True):
    said, calls = [], []

    def compute():
        calls.append(1)
        return value

    got = cached(path, settings, compute, said.append, reuse=reuse)
    return got, len(calls), said


def test_a_value_is_reused_only_when_checksum_and_settings_match(tmp_path):
    path = tmp_path / "section.pkl"
    assert _run(path, {"n": 1}, [1, 2])[:2] == ([1, 2], 1)
    got, computed, said = _run(path, {"n": 1}, "unused")
    assert (got, computed) == ([1, 2], 0) and said == [f"reused {path}"]
    got, computed, said = _run(path, {"n": 2}, [3])  # other settings: a stale section is never reused
    assert (got, computed) == ([3], 1) and "other settings" in said[0] and said[0].endswith("recomputed")
    assert _run(path, {"n": 1}, [1], reuse=False)[1] == 1  # reuse=false always computes


def test_a_damaged_or_unrecorded_file_is_never_unpickled(tmp_path):
    path = tmp_path / "section.pkl"
    _run(path, {}, {"a": 1.0})
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10
    path.write_bytes(bytes(data))
    got, computed, said = _run(path, {}, {"a": 2.0})
    assert (got, computed) == ({"a": 2.0}, 1) and "fails its checksum" in said[0]
    (tmp_path / "other.pkl").write_bytes(pickle.dumps("planted"))  # written by someone else: no record
    ok, _, why = read_checked(tmp_path / "other.pkl", {})
    assert not ok and "no checksum record" in why


def test_an_unwritable_cache_costs_only_a_recomputation(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    got, computed, said = _run(blocker / "logs" / "section.pkl", {}, 7)
    assert (got, computed) == (7, 1) and len(said) == 1 and "cannot be written" in said[0]
