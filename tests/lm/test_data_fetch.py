"""`reparam data fetch` end to end, against a file server this test starts on 127.0.0.1 that serves small copies of
the releases in their real layouts (a zip with a top folder, a tar.gz, a folder of single files under other names),
with a manifest of their own checksums: a good download, a corrupted one (refused, nothing left behind), a server
that is down (one line), a local folder (--from); and the one data resolver every loader reads."""
import functools
import hashlib
import http.server
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from reparam.lm import data as D
from reparam.lm.datasets import (MissingDataError, check_folder, data_roots, dataset_dir, fetch, load_manifest,
                                 require_datasets, status_lines)

E2E = {"trainset.csv": 'mr,ref\n"name[The Vaults], eatType[pub]","The Vaults is a pub."\n'
                       '"name[Aromi], food[Chinese]","Aromi serves Chinese food."\n',
       "devset.csv": 'mr,ref\n"name[Zizzi], area[riverside]","Zizzi is by the river."\n',
       "testset_w_refs.csv": 'mr,ref\n"name[Alimentum], food[Italian]","Alimentum serves Italian food."\n'
                             '"name[Alimentum], food[Italian]","Italian food is served at Alimentum."\n'}
ENTRY = ('<benchmark><entries><entry category="City" eid="Id1" size="1"><modifiedtripleset>'
         '<mtriple>Aarhus | leaderName | Jacob_Bundsgaard</mtriple></modifiedtripleset>'
         '<lex comment="good" lid="Id1">The leader of Aarhus is Jacob Bundsgaard.</lex></entry></entries></benchmark>\n')
WEBNLG = {"train/1triples/1triple_allSolutions_City_train_challenge.xml": ENTRY,
          "dev/1triples/1triple_allSolutions_City_dev_challenge.xml": ENTRY,
          "test/testdata_with_lex.xml": ENTRY}
TOKENIZER = {"vocab.json": '{"!": 0, "Hello": 1}', "merges.txt": "#version: 0.2\nH e\n"}
AT_SOURCE = {"vocab.json": "encoder.json", "merges.txt": "vocab.bpe"}  # OpenAI's names of the two GPT-2 files


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def zip_bytes(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in members.items():
            z.writestr(name, text)
    return buf.getvalue()


def tar_bytes(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def server(tmp_path):
    """A file server on 127.0.0.1 (a thread of this process) over tmp_path/www: yields (folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def releases(www: Path, base: str, corrupt_e2e: bool = False) -> dict:
    """Write the three small releases under `www` and return their manifest (checksums of the good files)."""
    e2e = dict(E2E)
    if corrupt_e2e:  # one byte changed in transit
        e2e["trainset.csv"] = e2e["trainset.csv"].replace("pub.", "pub!")
    (www / "e2e-dataset.zip").write_bytes(zip_bytes({f"e2e-dataset/{k}": v for k, v in e2e.items()} |
                                                    {"e2e-dataset/testset.csv": "mr\n", "e2e-dataset/README.md": "E2E\n"}))
    (www / "webnlg-dataset-master.tar.gz").write_bytes(
        tar_bytes({f"webnlg-dataset-master/webnlg_challenge_2017/{k}": v for k, v in WEBNLG.items()} |
                  {"webnlg-dataset-master/release_v2/README": "other releases\n"}))
    (www / "gpt-2" / "124M").mkdir(parents=True)
    for name, text in TOKENIZER.items():
        (www / "gpt-2" / "124M" / AT_SOURCE[name]).write_text(text)
    return {
        "e2e": {"folder": "e2e", "licence": "CC BY-SA 4.0", "sources": [{"url": f"{base}/e2e-dataset.zip"}],
                "files": {k: sha(v) for k, v in E2E.items()}},
        "webnlg": {"folder": "webnlg2017", "sources": [{"url": f"{base}/webnlg-dataset-master.tar.gz"}],
                   "files": {k: sha(v) for k, v in WEBNLG.items()}},
        "gpt2-tokenizer": {"folder": "gpt2-tokenizer", "sources": [{"url": f"{base}/gpt-2/124M/", "names": AT_SOURCE}],
                           "files": {k: sha(v) for k, v in TOKENIZER.items()}},
    }


def data_cli(*args, tmp_path, env=None):
    """`python -m reparam.lm.datasets ...` (what `reparam data ...` runs) with the caches inside tmp_path."""
    e = {k: v for k, v in os.environ.items() if k != "REPARAM_DATA"}
    e.update(REPARAM_CACHE=str(tmp_path / "cache"), **(env or {}))
    return subprocess.run([sys.executable, "-m", "reparam.lm.datasets", *args], capture_output=True, text=True,
                          timeout=120, env=e)


def write_manifest(tmp_path, manifest) -> str:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    return str(path)


def test_a_good_download_is_checked_and_read_by_the_loaders(server, tmp_path):
    www, base = server
    manifest = write_manifest(tmp_path, releases(www, base))
    root = tmp_path / "data"
    proc = data_cli("fetch", "all", "--to", str(root), "--manifest", manifest, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in root.iterdir()) == ["e2e", "gpt2-tokenizer", "webnlg2017"]  # no staging left
    for name, files in (("e2e", E2E), ("webnlg2017", WEBNLG), ("gpt2-tokenizer", TOKENIZER)):
        for rel, text in files.items():
            assert (root / name / rel).read_text() == text, (name, rel)
    assert not (root / "e2e" / "testset.csv").exists()  # only the layout's files are taken from the archive
    # the loaders read the fetched folder
    assert [e.target for e in D.load_e2e("train", str(root))] == ["The Vaults is a pub.", "Aromi serves Chinese food."]
    assert [len(t.refs) for t in D.load_e2e_test("test", str(root))] == [2]
    assert D.load_webnlg("dev", str(root))[0].source == "Aarhus : leaderName : Jacob Bundsgaard"
    # a second fetch keeps the checked copy
    again = data_cli("fetch", "e2e", "--to", str(root), "--manifest", manifest, tmp_path=tmp_path)
    assert again.returncode == 0 and "already present" in again.stderr
    status = data_cli("status", "--root", str(root), "--manifest", manifest, tmp_path=tmp_path)
    assert [line.split()[:2] for line in status.stdout.splitlines()[:3]] == [
        ["e2e", "ok"], ["webnlg", "ok"], ["gpt2-tokenizer", "ok"]]


def test_a_corrupted_download_is_refused_and_leaves_nothing(server, tmp_path):
    www, base = server
    manifest = releases(www, base, corrupt_e2e=True)
    root = tmp_path / "data"
    proc = data_cli("fetch", "e2e", "--to", str(root), "--manifest", write_manifest(tmp_path, manifest),
                    tmp_path=tmp_path)
    assert proc.returncode == 1
    line, = proc.stderr.strip().splitlines()[-1:]
    assert proc.stderr.count("\n") <= 2 and "Traceback" not in proc.stderr  # "downloading ..." and the error
    bad = E2E["trainset.csv"].replace("pub.", "pub!")
    assert line.startswith("error: refused e2e: trainset.csv")
    assert f"sha256 {sha(bad)}, expected {manifest['e2e']['files']['trainset.csv']}" in line
    assert list(root.iterdir()) == []  # neither the folder nor a half-written staging copy


def test_a_server_that_is_down_is_one_line(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manifest = {"e2e": {"folder": "e2e", "sources": [{"url": f"http://127.0.0.1:{port}/e2e-dataset.zip"}],
                        "files": {k: sha(v) for k, v in E2E.items()}}}
    root = tmp_path / "data"
    proc = data_cli("fetch", "e2e", "--to", str(root), "--manifest", write_manifest(tmp_path, manifest),
                    tmp_path=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: http://127.0.0.1:{port}/e2e-dataset.zip: server unreachable"), proc.stderr
    assert list(root.iterdir()) == []


def test_from_a_local_folder_or_archive(server, tmp_path):
    www, base = server
    manifest = releases(www, base)
    unpacked = tmp_path / "unpacked"  # an unzipped release and OpenAI's file names
    for rel, text in E2E.items():
        (unpacked / "e2e-dataset" / rel).parent.mkdir(parents=True, exist_ok=True)
        (unpacked / "e2e-dataset" / rel).write_text(text)
    for rel, text in TOKENIZER.items():
        (unpacked / "gpt-2" / AT_SOURCE[rel]).parent.mkdir(parents=True, exist_ok=True)
        (unpacked / "gpt-2" / AT_SOURCE[rel]).write_text(text)
    root = tmp_path / "data"
    for name in ("e2e", "gpt2-tokenizer"):
        assert fetch(name, root, source=unpacked, manifest=manifest, log=lambda m: None) == root / load_manifest(
            manifest)[name].folder
    assert (root / "gpt2-tokenizer" / "vocab.json").read_text() == TOKENIZER["vocab.json"]
    assert fetch("webnlg", root, source=www / "webnlg-dataset-master.tar.gz", manifest=manifest,
                 log=lambda m: None).is_dir()
    assert all(check_folder(d, root / d.folder) == "ok" for d in load_manifest(manifest).values())
    # a folder without one of the files: one line naming it, nothing written
    (unpacked / "e2e-dataset" / "devset.csv").unlink()
    proc = data_cli("fetch", "e2e", "--to", str(tmp_path / "other"), "--from", str(unpacked), "--manifest",
                    write_manifest(tmp_path, manifest), tmp_path=tmp_path)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1] == (
        f"error: {unpacked} has no devset.csv (a file of e2e)")
    assert list((tmp_path / "other").iterdir()) == []


def test_a_changed_copy_is_refused_unless_forced(server, tmp_path):
    www, base = server
    manifest = releases(www, base)
    root = tmp_path / "data"
    fetch("e2e", root, manifest=manifest, log=lambda m: None)
    (root / "e2e" / "devset.csv").write_text("mr,ref\n")
    d = load_manifest(manifest)["e2e"]
    assert check_folder(d, root / "e2e").startswith("modified: devset.csv (sha256 ")
    from reparam.lm.datasets import FetchError
    with pytest.raises(FetchError, match=r"data/e2e exists but is not the release \(modified: devset.csv"):
        fetch("e2e", root, manifest=manifest, log=lambda m: None)
    fetch("e2e", root, manifest=manifest, force=True, log=lambda m: None)
    assert check_folder(d, root / "e2e") == "ok" and sorted(p.name for p in root.iterdir()) == ["e2e"]


def test_one_resolver_and_the_missing_data_message(tmp_path, monkeypatch):
    """REPARAM_DATA is the only root when set (never a silent fallback); unset, the fetch cache comes first; a
    missing file names the exact command that fetches it."""
    monkeypatch.setenv("REPARAM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("REPARAM_DATA", str(tmp_path / "empty"))
    assert data_roots() == [tmp_path / "empty"] and dataset_dir("webnlg") == tmp_path / "empty" / "webnlg2017"
    with pytest.raises(MissingDataError, match=r"E2E file .*/empty/e2e/trainset.csv is missing: get it with "
                                               r"`reparam data fetch e2e` "):
        D.load_e2e("train")
    from reparam.lm.models import gpt2_tokenizer
    with pytest.raises(FileNotFoundError, match="`reparam data fetch gpt2-tokenizer`"):
        gpt2_tokenizer()
    with pytest.raises(MissingDataError, match=rf"`reparam data fetch webnlg --to {tmp_path}/elsewhere`"):
        D.load_webnlg("dev", str(tmp_path / "elsewhere"))
    more = len(load_manifest()["webnlg"].files) - 1
    with pytest.raises(MissingDataError, match=rf"/empty/webnlg2017/dev/.* \(and {more} more files of webnlg\) is "
                                               r"missing: get it with `reparam data fetch webnlg`"):
        require_datasets(["webnlg"])
    for rel in load_manifest()["e2e"].files:  # present (require_datasets checks presence; status the checksums)
        (tmp_path / "complete" / "e2e" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "complete" / "e2e" / rel).write_text("mr,ref\n")
    require_datasets(["e2e"], str(tmp_path / "complete"))
    (tmp_path / "complete" / "e2e" / "devset.csv").unlink()
    with pytest.raises(MissingDataError, match=r"complete/e2e/devset.csv is missing: get it with "
                                               rf"`reparam data fetch e2e --to {tmp_path}/complete`"):
        require_datasets(["e2e"], str(tmp_path / "complete"))
    monkeypatch.delenv("REPARAM_DATA")
    assert data_roots()[0] == tmp_path / "cache" / "data"
    lines = status_lines(tmp_path / "empty")
    assert lines[0].split()[:2] == ["e2e", "missing"] and "reparam data fetch e2e --to" in lines[0]


def test_the_real_manifest_is_well_formed():
    """Every dataset of the real manifest names https sources and a sha256 per file, in the folders the loaders
    read (the checksums themselves are checked against the data below, where it is present)."""
    datasets = load_manifest()
    assert sorted(datasets) == ["e2e", "gpt2-tokenizer", "webnlg"]
    assert {d.folder for d in datasets.values()} == {"e2e", "webnlg2017", "gpt2-tokenizer"}
    for d in datasets.values():
        assert d.sources and all(s.url.startswith("https://") for s in d.sources), d.name
        assert d.licence and all(len(h) == 64 and int(h, 16) >= 0 for h in d.files.values()), d.name
    assert set(datasets["e2e"].files) == {"trainset.csv", "devset.csv", "testset_w_refs.csv"}
    assert "test/testdata_with_lex.xml" in datasets["webnlg"].files


@pytest.mark.parametrize("name", ["e2e", "webnlg", "gpt2-tokenizer"])
def test_the_real_checksums_match_the_data_where_it_is_present(name):
    folder = dataset_dir(name)
    if not folder.is_dir():
        pytest.skip(f"{name} not found at {folder} (`reparam data fetch {name}` puts it there)")
    assert check_folder(load_manifest()[name], folder) == "ok"


def test_reparam_data_is_a_command_of_the_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "reparam.cli", "data", "status", "--root", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].split()[:2] == ["e2e", "missing"]


def test_the_next_source_is_tried_when_one_fails(server, tmp_path):
    """A mirror list: the first URL is down, the second serves a corrupted copy, the third the release."""
    www, base = server
    manifest = releases(www, base)
    (www / "bad").mkdir()
    (www / "bad" / "e2e-dataset.zip").write_bytes(zip_bytes({k: v + "x" for k, v in E2E.items()}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}/e2e-dataset.zip"
    manifest["e2e"]["sources"] = [{"url": down}, {"url": f"{base}/bad/e2e-dataset.zip"}, {"url": f"{base}/e2e-dataset.zip"}]
    said = []
    folder = fetch("e2e", tmp_path / "data", manifest=manifest, log=said.append)
    assert check_folder(load_manifest(manifest)["e2e"], folder) == "ok"
    assert any(down in m and "unreachable" in m for m in said) and any("refused e2e: " in m for m in said)


def test_a_manifest_path_must_stay_inside_the_data_root():
    from reparam.validation import DataError
    for rel in ("../evil.csv", "/etc/passwd"):
        with pytest.raises(DataError, match="must be a relative path inside the data root"):
            load_manifest({"e2e": {"folder": "e2e", "files": {rel: "0" * 64}}})
