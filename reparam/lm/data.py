"""Table-to-text data (E2E, WebNLG 2017), linearisation, nested training subsets and batching.

Each example is ``(source, target)``: ``source`` the linearised meaning representation, ``target``
one reference text. Test sets are grouped by source (several references each) for BLEU/ROUGE.
The LM sees ``source + SEP`` as the prompt and ``" " + target + eos`` as the continuation; only the
continuation is scored (Li & Liang 2021 use the same source/target split).
"""

from __future__ import annotations

import csv
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from reparam.validation import DataError

from .datasets import dataset_dir, missing_data

SEP = " ||"  # prompt/continuation separator (plain text: works with any tokenizer)


@dataclass
class Example:
    source: str
    target: str


@dataclass
class TestItem:
    source: str
    refs: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- E2E

_E2E_SLOT = re.compile(r"\s*([^\[\],]+?)\s*\[(.*?)\]\s*")


def linearize_e2e(mr: str) -> str:
    """``name[The Vaults], eatType[pub]`` -> ``name : The Vaults | eatType : pub``."""
    slots = _E2E_SLOT.findall(mr)
    if not slots:
        raise ValueError(f"E2E meaning representation {mr!r} has no slot[value] pairs")
    return " | ".join(f"{k} : {v}" for k, v in slots)


def _e2e_file(split: str, root: str | None) -> Path:
    names = {"train": "trainset.csv", "dev": "devset.csv", "test": "testset_w_refs.csv"}
    if split not in names:
        raise ValueError(f"E2E split={split!r} must be one of {sorted(names)}")
    path = dataset_dir("e2e", root) / names[split]
    if not path.is_file():
        raise missing_data("e2e", root, f"E2E file {path}")
    return path


def _decode_error(path: Path, err: UnicodeDecodeError) -> DataError:
    """A DataError naming the file and the line of the first byte that is not UTF-8."""
    line = path.read_bytes()[:err.start].count(b"\n") + 1 if err.start is not None else "?"
    return DataError(f"{path} line {line}: not UTF-8 text ({err.reason} at byte {err.start}); re-copy the file "
                     f"from the release")


def _read_e2e_rows(split: str, root: str | None) -> list[tuple[str, str]]:
    path = _e2e_file(split, root)
    rows = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not {"mr", "ref"} <= set(reader.fieldnames):
                raise DataError(f"E2E file {path} must have columns 'mr,ref'; found {reader.fieldnames}")
            for r in reader:
                if r["mr"] is None or r["ref"] is None or None in r:  # a truncated or over-long row
                    raise DataError(f"{path} line {reader.line_num}: a row must have exactly the 2 fields mr,ref; "
                                    f"found {[v for v in r.values() if v is not None]}")
                rows.append((r["mr"], r["ref"]))
    except UnicodeDecodeError as err:
        raise _decode_error(path, err) from None
    except csv.Error as err:
        raise DataError(f"{path} is not a readable CSV file ({err})") from None
    if not rows:
        raise DataError(f"E2E file {path} has no rows")
    return rows


def load_e2e(split: str = "train", root: str | None = None) -> list[Example]:
    return [Example(linearize_e2e(mr), ref.strip()) for mr, ref in _read_e2e_rows(split, root)]


def load_e2e_test(split: str = "test", root: str | None = None) -> list[TestItem]:
    return _group([Example(linearize_e2e(mr), ref.strip()) for mr, ref in _read_e2e_rows(split, root)])


# ----------------------------------------------------------------------------- WebNLG 2017


def linearize_triples(triples: list[str]) -> str:
    """``Aarhus | leaderName | Jacob_Bundsgaard`` -> ``Aarhus : leaderName : Jacob Bundsgaard`` joined by `` | ``."""
    out = []
    for t in triples:
        parts = [p.strip().replace("_", " ") for p in t.split("|")]
        if len(parts) != 3:
            raise ValueError(f"WebNLG triple {t!r} does not have 3 '|'-separated parts")
        out.append(" : ".join(parts))
    return " | ".join(out)


def _webnlg_files(split: str, root: str | None) -> list[Path]:
    base = dataset_dir("webnlg", root)
    if split in ("train", "dev"):
        files = sorted((base / split).glob("*triples/*.xml"))
    elif split == "test":
        files = [base / "test" / "testdata_with_lex.xml"]
    else:
        raise ValueError(f"WebNLG split={split!r} must be train, dev or test")
    files = [f for f in files if f.is_file()]
    if not files:
        raise missing_data("webnlg", root, f"the WebNLG 2017 XML of split {split!r} under {base} (train/{{1..7}}"
                                           f"triples/*.xml, dev/..., test/testdata_with_lex.xml)")
    return files


def _read_webnlg(split: str, root: str | None) -> list[Example]:
    out = []
    for f in _webnlg_files(split, root):
        try:
            tree = ET.parse(f)
        except ET.ParseError as e:  # also raised for bytes that are not in the declared encoding
            raise DataError(f"WebNLG file {f} line {e.position[0]}: not valid XML ({e}); re-copy it from the "
                            f"release") from None
        for entry in tree.getroot().iter("entry"):
            triples = [t.text or "" for t in entry.iter("mtriple")]
            src = linearize_triples(triples)
            for lex in entry.iter("lex"):
                if lex.text and lex.get("comment", "good") == "good":
                    out.append(Example(src, " ".join(lex.text.split())))
    return out


def load_webnlg(split: str = "train", root: str | None = None) -> list[Example]:
    return _read_webnlg(split, root)


def load_webnlg_test(split: str = "test", root: str | None = None) -> list[TestItem]:
    return _group(_read_webnlg(split, root))


# ----------------------------------------------------------------------------- helpers

LOADERS = {"e2e": (load_e2e, load_e2e_test), "webnlg": (load_webnlg, load_webnlg_test)}


def load_dataset(name: str, split: str, root: str | None = None, grouped: bool = False):
    if name not in LOADERS:
        raise ValueError(f"dataset={name!r} is not one of {sorted(LOADERS)}")
    train, test = LOADERS[name]
    return test(split, root) if grouped else train(split, root)


def _group(examples: list[Example]) -> list[TestItem]:
    items: dict[str, TestItem] = {}
    for ex in examples:
        items.setdefault(ex.source, TestItem(ex.source)).refs.append(ex.target)
    return list(items.values())


def nested_subset(items: list, n: int, seed: int) -> list:
    """The first n of a seeded permutation: subsets for a fixed seed are nested (n1 < n2 => S1 subset of S2)."""
    if n > len(items):
        raise ValueError(f"n={n} exceeds the {len(items)} available examples")
    perm = np.random.default_rng(seed).permutation(len(items))
    return [items[i] for i in perm[:n]]


def encode_examples(tok, examples: list[Example], max_len: int) -> list[dict]:
    """Token ids with labels = -100 on the prompt (only the text is scored). Truncated to max_len."""
    eos = tok.eos_token_id
    out = []
    for ex in examples:
        p = tok.encode(ex.source + SEP, add_special_tokens=False)
        c = tok.encode(" " + ex.target, add_special_tokens=False) + [eos]
        ids = (p + c)[:max_len]
        labels = ([-100] * len(p) + c)[:max_len]
        out.append({"input_ids": ids, "labels": labels})
    return out


def collate(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of encoded rows to a batch (labels padded with -100)."""
    T = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), T), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        k = len(r["input_ids"])
        ids[i, :k] = torch.tensor(r["input_ids"])
        labels[i, :k] = torch.tensor(r["labels"])
        mask[i, :k] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
