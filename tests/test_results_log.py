"""Checksummed append-only log and atomic tables."""
import json

import numpy as np
import pandas as pd
import pytest

from reparam.results import ResultLog, write_table


def test_roundtrip_and_completed_keys(tmp_path):
    log = ResultLog(tmp_path / "runs.jsonl")
    log.extend([dict(structure="a", n=10, replicate=r, err=np.float64(0.5 * r)) for r in range(3)])
    log.append(dict(structure="b", n=100, replicate=0, err=float("nan")))
    frame = log.to_frame()
    assert len(frame) == 4 and frame.err.iloc[1] == 0.5 and np.isnan(frame.err.iloc[3])
    assert log.completed_keys(["structure", "n"]) == {("a", 10), ("b", 100)}


def test_corrupt_and_partial_records_are_skipped_with_a_warning(tmp_path):
    path = tmp_path / "runs.jsonl"
    log = ResultLog(path)
    log.extend([dict(key=i, value=i * 1.5) for i in range(4)])
    lines = path.read_text().splitlines()
    tampered = json.loads(lines[1])
    tampered["row"]["value"] = 99.0  # checksum no longer matches
    lines[1] = json.dumps(tampered)
    path.write_text("\n".join(lines) + "\n" + lines[3][: len(lines[3]) // 2])  # and a torn last line
    with pytest.warns(RuntimeWarning, match="2 corrupt or partial"):
        rows = log.rows()
    assert [r["key"] for r in rows] == [0, 2, 3]


def test_write_table_is_atomic_and_leaves_no_temporary_files(tmp_path):
    path = write_table(pd.DataFrame({"a": [1, 2]}), tmp_path / "out" / "t.csv")
    assert pd.read_csv(path).a.tolist() == [1, 2]
    assert [p.name for p in path.parent.iterdir()] == ["t.csv"]


def test_append_after_a_partial_last_line_starts_on_a_fresh_line(tmp_path):
    """A writer killed mid-record leaves a partial last line without newline; the next append must not glue
    its first record onto it (that record would be lost as 'corrupt' and its work silently missing)."""
    path = tmp_path / "runs.jsonl"
    log = ResultLog(path)
    log.extend([dict(key=i) for i in range(3)])
    path.write_bytes(path.read_bytes()[:-20])  # the last record is torn
    log.extend([dict(key=10), dict(key=11)])
    with pytest.warns(RuntimeWarning, match="1 corrupt or partial"):
        keys = [r["key"] for r in log.rows()]
    assert keys == [0, 1, 10, 11]
