"""The input files of the real-transformer studies: where they are read from, what they must hold, how to get them.

Where (the one resolver every loader reads):

    data_roots(path=None)       the data roots searched, in order: `path` when given (a config's data_root);
                                else $REPARAM_DATA when set; else the fetch cache (`fetch_root()`, i.e.
                                $REPARAM_CACHE/data or ~/.cache/reparam/data), then `<repo>/../shared/data` (a
                                developer's checkout beside the project's shared folder)
    dataset_dir(name, path)     the folder of one dataset: the first root that holds it, else where
                                `reparam data fetch NAME` would put it
    data_root(path=None)        the first existing root of data_roots (the first one when none exists)
    missing_data(name, path, what)   the error for a missing file: names it and the exact fetch command
    require_datasets(names, path)    before any work: MissingDataError unless every file of each dataset is there

What and how (`reparam data ...`, also `python -m reparam.lm.datasets ...`):

    fetch NAME... [--to DIR] [--from PATH] [--force] [--manifest FILE]
                                download each dataset from its release (reparam/lm/data_manifest.py lists the
                                URLs, tried in order, and the sha256 of every file), or take it from a local
                                archive or folder (--from), check every checksum, and only then move the
                                complete folder into place (one rename): a failed or refused fetch leaves
                                nothing behind. Default destination: $REPARAM_DATA when set, else the cache.
    status [--root DIR]         each dataset: where it is found and whether every file matches its checksum

Errors are one line (`FetchError`, exit status 1): an unreachable server names the URL and the reason; a corrupted
download names the file and both checksums.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from reparam.validation import DataError, InputError, exit_on_input_error

REPO_ROOT = Path(__file__).resolve().parents[2]
#: the developer fallback: the project's shared data folder beside the repository
SHARED_DATA = "../shared/data"
#: seconds to wait for a server before the fetch gives up on that URL
TIMEOUT_S = 60


def repo_path(p: str | os.PathLike) -> Path:
    """~ expanded; a relative path (in a config, an env variable) is taken from the repository root, not the CWD
    (which Hydra or a test runner may change). The one resolver of every path the LM code reads or writes."""
    p = Path(os.path.expanduser(str(p)))
    return p if p.is_absolute() else REPO_ROOT / p


def default_cache() -> Path:
    """Cache folder for fetched files: env ``REPARAM_CACHE`` or ``~/.cache/reparam``."""
    return Path(os.path.expanduser(os.environ.get("REPARAM_CACHE", "~/.cache/reparam")))


def fetch_root() -> Path:
    """Where `reparam data fetch` puts datasets by default: $REPARAM_DATA when set, else <cache>/data."""
    env = os.environ.get("REPARAM_DATA")
    return repo_path(env).resolve() if env else default_cache() / "data"


def data_roots(path: str | os.PathLike | None = None) -> list[Path]:
    """The data roots searched, in order (see the module docstring). An explicit `path` or $REPARAM_DATA is the
    only root: a folder the user named is never silently replaced by another one."""
    if path not in (None, ""):
        return [repo_path(path).resolve()]
    if os.environ.get("REPARAM_DATA"):
        return [fetch_root()]
    return [fetch_root(), repo_path(SHARED_DATA).resolve()]


def data_root(path: str | os.PathLike | None = None) -> Path:
    """The first existing root of `data_roots(path)` (the first root when none exists)."""
    roots = data_roots(path)
    return next((r for r in roots if r.is_dir()), roots[0])


# ----------------------------------------------------------------------------- the manifest


@dataclass(frozen=True)
class Source:
    """One place a dataset can be had: a URL ending in "/" is a folder of single files (each file at url + its
    name), any other URL (or a local path) one zip or tar archive whose members are found by their path's end.
    `names`: the name at the source of a layout file where it differs (GPT-2: vocab.json is encoder.json)."""

    url: str
    names: dict[str, str] = field(default_factory=dict)

    def name_of(self, relpath: str) -> str:
        return self.names.get(relpath, relpath)


@dataclass(frozen=True)
class Dataset:
    name: str  # the command-line name (e2e, webnlg, gpt2-tokenizer)
    folder: str  # its folder under a data root
    title: str
    licence: str
    citation: str
    sources: tuple[Source, ...]
    files: dict[str, str]  # layout path (posix, relative to folder) -> sha256


def load_manifest(manifest: dict | str | os.PathLike | None = None) -> dict[str, Dataset]:
    """The datasets of `manifest`: a dict shaped like reparam/lm/data_manifest.py's MANIFEST, a JSON file of that
    shape (tests serve their own files with their own checksums), or None for the real manifest."""
    if manifest is None:
        from .data_manifest import MANIFEST as manifest
    elif not isinstance(manifest, dict):
        try:
            manifest = json.loads(Path(manifest).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise DataError(f"manifest {manifest} is not a readable JSON manifest ({err})") from None
    try:
        datasets = {name: Dataset(name=name, folder=d["folder"], title=d.get("title", name),
                                  licence=d.get("licence", ""), citation=d.get("citation", ""),
                                  sources=tuple(Source(s["url"], dict(s.get("names", {})))
                                                for s in d.get("sources", [])),
                                  files=dict(d["files"]))
                    for name, d in manifest.items()}
    except (KeyError, TypeError, AttributeError) as err:
        raise DataError(f"manifest entry is malformed: {err!r} (each dataset needs folder and files)") from None
    for d in datasets.values():  # every file stays inside its dataset's folder
        for rel in [d.folder, *d.files]:
            if Path(rel).is_absolute() or ".." in Path(rel).parts:
                raise DataError(f"manifest entry {d.name}: {rel!r} must be a relative path inside the data root")
    return datasets


def dataset_dir(name: str, path: str | os.PathLike | None = None) -> Path:
    """The folder of dataset `name` (a manifest name): the first root of data_roots(path) holding it, else the
    first root's (where `reparam data fetch` puts it)."""
    folder = load_manifest()[name].folder
    roots = data_roots(path)
    return next((r / folder for r in roots if (r / folder).is_dir()), roots[0] / folder)


def fetch_command(name: str, path: str | os.PathLike | None = None) -> str:
    """The exact command that puts dataset `name` where dataset_dir(name, path) looks first."""
    return f"reparam data fetch {name}" + (f" --to {data_roots(path)[0]}" if path not in (None, "") else "")


class MissingDataError(DataError, FileNotFoundError):
    """A data file that is not there: a DataError (one line, exit status 2, in the apps) that is also a
    FileNotFoundError (what a file that is not there raises everywhere else)."""


def missing_data(name: str, path: str | os.PathLike | None, what: str) -> MissingDataError:
    """The error for a missing input of dataset `name` (`what`: the file or files, as the loader names them)."""
    folder = load_manifest()[name].folder
    return MissingDataError(f"{what} is missing: get it with `{fetch_command(name, path)}` (the official release, "
                            f"checksum-checked), or set data_root=... (or REPARAM_DATA) to a folder holding {folder}/")


def require_datasets(names, path: str | os.PathLike | None = None) -> None:
    """Before any work: every file of each dataset in `names` is where the loaders will look, else the
    MissingDataError of the first absent one (with its fetch command). Presence only; `reparam data status`
    checks the checksums."""
    datasets = load_manifest()
    for name in names:
        folder = dataset_dir(name, path)
        absent = [rel for rel in datasets[name].files if not (folder / rel).is_file()]
        if absent:
            raise missing_data(name, path, f"{folder / absent[0]} (and {len(absent) - 1} more files of {name})"
                               if len(absent) > 1 else f"{folder / absent[0]}")


# ----------------------------------------------------------------------------- checking


class FetchError(InputError):
    """A fetch that could not be completed (server unreachable, checksum mismatch, missing file): one line, exit
    status 1 (not a mistake in the command)."""

    status = 1


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def check_folder(dataset: Dataset, folder: Path) -> str:
    """'ok', 'missing', 'incomplete: k of n files (first absent: F)' or 'modified: F (sha256 X, expected Y)'."""
    if not folder.is_dir():
        return "missing"
    absent = [rel for rel in dataset.files if not (folder / rel).is_file()]
    if absent:
        return f"incomplete: {len(dataset.files) - len(absent)} of {len(dataset.files)} files (first absent: {absent[0]})"
    for rel, expected in dataset.files.items():
        got = sha256_of(folder / rel)
        if got != expected:
            return f"modified: {rel} (sha256 {got}, expected {expected})"
    return "ok"


# ----------------------------------------------------------------------------- getting the files


def _download(url: str, dest: Path) -> None:
    """`url` into `dest` (a file in the staging folder); FetchError naming the URL when the server cannot give it."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(dest, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except urllib.error.HTTPError as err:
        raise FetchError(f"{url}: HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise FetchError(f"{url}: server unreachable ({getattr(err.reason, 'strerror', None) or err.reason})") from None
    except (OSError, ValueError, http.client.HTTPException) as err:  # dropped connection, timeout, bad URL
        raise FetchError(f"{url}: download failed ({err})") from None


def _members(names: list[str], wanted: str, where: str) -> str | None:
    """The one entry of `names` that is `wanted` or ends with '/' + wanted; FetchError when several do."""
    hits = [n for n in names if n == wanted or n.endswith("/" + wanted)]
    if len(hits) > 1:
        hits = [h for h in hits if h.count("/") == min(x.count("/") for x in hits)]
    if len(hits) > 1:
        raise FetchError(f"{where} holds {len(hits)} files named {wanted} ({hits[0]}, {hits[1]}, ...): "
                         f"point --from at the folder of one copy")
    return hits[0] if hits else None


def _candidates(dataset: Dataset, rel: str) -> list[str]:
    """The names a layout file may have in an archive or folder: its own, then its name at each source."""
    return list(dict.fromkeys([rel, *(s.name_of(rel) for s in dataset.sources)]))


def _extract(dataset: Dataset, archive: Path, where: str, tree: Path, source: Source | None) -> None:
    """Copy every layout file out of a zip or tar `archive` into `tree` (members found by the end of their path)."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            names = [i.filename for i in z.infolist() if not i.is_dir()]
            for rel in dataset.files:
                names_tried = [source.name_of(rel)] if source else _candidates(dataset, rel)
                member = next((m for m in (_members(names, n, where) for n in names_tried) if m), None)
                if member is None:
                    raise FetchError(f"{where} has no {' or '.join(names_tried)} (a file of {dataset.name})")
                (tree / rel).parent.mkdir(parents=True, exist_ok=True)
                with z.open(member) as src, open(tree / rel, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            members = {m.name.removeprefix("./"): m for m in t.getmembers() if m.isfile()}
            for rel in dataset.files:
                names_tried = [source.name_of(rel)] if source else _candidates(dataset, rel)
                member = next((m for m in (_members(list(members), n, where) for n in names_tried) if m), None)
                if member is None:
                    raise FetchError(f"{where} has no {' or '.join(names_tried)} (a file of {dataset.name})")
                (tree / rel).parent.mkdir(parents=True, exist_ok=True)
                with t.extractfile(members[member]) as src, open(tree / rel, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
    else:
        raise FetchError(f"{where} is neither a zip nor a tar archive")


def _from_folder(dataset: Dataset, folder: Path, tree: Path) -> None:
    """Copy every layout file out of a local folder (files found by the end of their path, under any subfolder)."""
    names = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    for rel in dataset.files:
        tried = _candidates(dataset, rel)
        hit = next((m for m in (_members(names, n, str(folder)) for n in tried) if m), None)
        if hit is None:
            raise FetchError(f"{folder} has no {' or '.join(tried)} (a file of {dataset.name})")
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / hit, tree / rel)


def _from_source(dataset: Dataset, source: Source, staging: Path, tree: Path) -> None:
    if source.url.endswith("/"):  # a folder of single files
        for rel in dataset.files:
            (tree / rel).parent.mkdir(parents=True, exist_ok=True)
            _download(source.url + source.name_of(rel), tree / rel)
    else:
        archive = staging / "download"
        _download(source.url, archive)
        _extract(dataset, archive, source.url, tree, source)
        archive.unlink()


def _verify(dataset: Dataset, tree: Path, where: str) -> None:
    """Every file of the layout in `tree` has its manifest checksum, or FetchError naming the file and both sums."""
    for rel, expected in dataset.files.items():
        got = sha256_of(tree / rel)
        if got != expected:
            raise FetchError(f"refused {dataset.name}: {rel} from {where} has sha256 {got}, expected {expected} "
                             f"(a corrupted or changed copy; nothing was written)")


def fetch(name: str, to: str | os.PathLike | None = None, source: str | os.PathLike | None = None,
          force: bool = False, manifest: dict | str | os.PathLike | None = None, log=None) -> Path:
    """Put dataset `name` into `<to>/<folder>` (to: default fetch_root()) and return that folder.

    From `source` (a local archive or folder) when given, else from each URL of the manifest in turn until one
    gives files whose every checksum matches. The files are staged in a hidden folder next to the destination and
    renamed into place only when complete and checked, so a failure leaves nothing behind. An existing complete
    copy is kept (returned as is); a different one is refused unless `force`."""
    datasets = load_manifest(manifest)
    if name not in datasets:
        raise FetchError(f"unknown dataset {name!r}: must be one of {sorted(datasets)}")
    dataset = datasets[name]
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    root = Path(to).expanduser().resolve() if to not in (None, "") else fetch_root()  # a command-line path: from the CWD
    dest = root / dataset.folder
    if dest.exists():
        state = check_folder(dataset, dest)
        if state == "ok":
            say(f"{name}: already present and checked in {dest}")
            return dest
        if not force:
            raise FetchError(f"{dest} exists but is not the release ({state}); move it away or pass --force")
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dataset.folder}.fetch-", dir=root))
    except OSError as err:
        raise FetchError(f"cannot write into {root}: {err.strerror or err}") from None
    try:
        failures = []
        tries = [None] if source is not None else list(dataset.sources)
        if not tries:
            raise FetchError(f"the manifest lists no source for {name}; pass --from PATH")
        for src in tries:
            tree = staging / "tree"
            shutil.rmtree(tree, ignore_errors=True)
            tree.mkdir()
            try:
                if src is None:
                    local = Path(source).expanduser().resolve()
                    say(f"{name}: reading {local}")
                    if local.is_dir():
                        _from_folder(dataset, local, tree)
                    elif local.is_file():
                        _extract(dataset, local, str(local), tree, None)
                    else:
                        raise FetchError(f"--from {local}: no such file or folder")
                    _verify(dataset, tree, str(local))
                else:
                    say(f"{name}: downloading {src.url}")
                    _from_source(dataset, src, staging, tree)
                    _verify(dataset, tree, src.url)
                break
            except FetchError as err:
                failures.append(str(err))
                if len(tries) > 1:
                    say(f"{name}: {err}")
        else:
            raise FetchError(failures[0] if len(failures) == 1 else f"could not fetch {name}: " + "; ".join(failures))
        if dest.exists():  # --force: the old copy goes only once the new one is complete
            dest.rename(staging / "replaced")
        (staging / "tree").rename(dest)  # one rename: the folder appears complete or not at all
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    say(f"{name}: {len(dataset.files)} files checked (sha256) in {dest}")
    return dest


# ----------------------------------------------------------------------------- command line


def status_lines(root: str | os.PathLike | None = None, manifest=None) -> list[str]:
    """One line per dataset: name, state (check_folder), folder, licence; then where the roots were searched."""
    datasets = load_manifest(manifest)
    lines = []
    for d in datasets.values():
        roots = data_roots(root)
        folder = next((r / d.folder for r in roots if (r / d.folder).is_dir()), roots[0] / d.folder)
        state = check_folder(d, folder)
        hint = f"  -> {fetch_command(d.name, root)}" if state != "ok" else ""
        lines.append(f"{d.name:<15} {state:<8} {folder}  ({d.licence}){hint}")
    searched = ", ".join(str(r) for r in data_roots(root))
    lines.append(f"searched: {searched}" + ("" if root or os.environ.get("REPARAM_DATA") else
                                          " (set REPARAM_DATA to use another folder)"))
    return lines


def _parser() -> argparse.ArgumentParser:
    names = sorted(load_manifest())
    ap = argparse.ArgumentParser(
        prog="reparam data", description="Get and check the data the real-transformer studies read (E2E, WebNLG "
        "2017, the GPT-2 tokenizer files). SmolLM2 comes with `python -m reparam.lm.models fetch smollm2`.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download (or copy from --from) a dataset and check every file's sha256")
    f.add_argument("names", nargs="+", metavar="NAME", help=f"{' | '.join(names)} | all")
    f.add_argument("--to", default=None, help="data root to put it under (default: $REPARAM_DATA when set, else "
                   "$REPARAM_CACHE/data or ~/.cache/reparam/data)")
    f.add_argument("--from", dest="source", default=None, metavar="PATH",
                   help="a local archive (zip, tar) or folder holding the files, instead of downloading")
    f.add_argument("--force", action="store_true", help="replace an existing copy that fails the check")
    f.add_argument("--manifest", default=None, help="a JSON manifest replacing the built-in URLs and checksums")
    s = sub.add_parser("status", aliases=["list"], help="where each dataset is found and whether it checks out")
    s.add_argument("--root", default=None, help="a data root to look in (default: the search order)")
    s.add_argument("--manifest", default=None, help=argparse.SUPPRESS)
    return ap


@exit_on_input_error
def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.cmd == "fetch":
        known = sorted(load_manifest(args.manifest))
        names = known if "all" in args.names else args.names
        for name in names:
            if name not in known:
                _parser().error(f"NAME={name!r} is invalid: must be one of {known + ['all']}")
        for name in names:
            print(fetch(name, args.to, args.source, args.force, args.manifest))
    else:
        root = Path(args.root).expanduser().resolve() if args.root else None  # a command-line path: from the CWD
        print("\n".join(status_lines(root, args.manifest)))


if __name__ == "__main__":
    main()
