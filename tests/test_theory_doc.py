"""docs/theory.md is the theory the code cites: every "THEORY section N" (and "THEORY sections N and M", "THEORY:
section N", "THEORY Theorem N") in the package, its apps, tests and docs names something that page has, every link
into the page names one of its headings, and nothing points at a theory file outside the repository."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
THEORY = ROOT / "docs" / "theory.md"
#: Where citations live: the package, the apps, the tests, the docs, the committed reports and the top-level pages.
SEARCHED = ["reparam", "sims", "experiments", "tests", "docs", "figures"]
TOP_LEVEL = ["README.md", "BENCHMARKS.md"]
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".txt", ".toml", ".cfg"}

#: "THEORY section 7", "THEORY: section 7", "THEORY sections 3 and 7", "THEORY section 5 and 7", also when a comment
#: or a string literal wraps between the two words ("THEORY\n    # section 7", 'THEORY "\n "section 7').
CITATION = re.compile(r"THEORY(?:'s)?[\s:#\"'+(]*sections?\s+(\d+(?:\s*(?:,|and|&|or)\s*\d+)*)")
THEOREM_CITATION = re.compile(r"THEORY(?:'s)?\s+Theorems?\s+(\d+)")
#: Inside docs/theory.md a bare "section N" refers to the page itself.
SELF_CITATION = re.compile(r"\bsections?\s+(\d+(?:\s*(?:,|and|&|or)\s*\d+)*)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.M)
SECTION_HEADING = re.compile(r"^##\s+(\d+)\.\s+\S", re.M)
LINK_INTO_THEORY = re.compile(r"theory\.md#([A-Za-z0-9_\-]+)")


def cited_numbers(text: str, pattern: re.Pattern = CITATION) -> list[tuple[int, int]]:
    """(section number, line) of every citation in `text`."""
    out = []
    for m in pattern.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        out += [(int(n), line) for n in re.findall(r"\d+", m.group(1))]
    return out


def sections(text: str) -> set[int]:
    """The numbers of the page's numbered sections ("## 4. Voronoi losses")."""
    return {int(n) for n in SECTION_HEADING.findall(text)}


def slugs(text: str) -> set[str]:
    """The anchors of every heading, as GitHub and MkDocs (Python-Markdown's toc) spell them."""
    out = set()
    for _, title in HEADING.findall(text):
        plain = re.sub(r"[^\w\s-]", "", title.strip().lower())
        out.add(re.sub(r"\s", "-", plain))  # GitHub: one hyphen per space
        out.add(re.sub(r"[-\s]+", "-", plain))  # Python-Markdown: runs collapsed
    return out


def dangling(files: dict[str, str], page: str) -> list[str]:
    """'path:line: what' for every citation in `files` (path -> text) that `page` does not resolve."""
    have, anchors = sections(page), slugs(page)
    theorems = {int(n) for n in re.findall(r"Theorems?\s+(\d+)", page)}
    bad = []
    for path, text in files.items():
        bad += [f"{path}:{line}: THEORY section {n}" for n, line in cited_numbers(text) if n not in have]
        bad += [f"{path}:{line}: THEORY Theorem {n}" for n, line in cited_numbers(text, THEOREM_CITATION)
                if n not in theorems]
        for m in LINK_INTO_THEORY.finditer(text):
            if m.group(1) not in anchors:
                bad.append(f"{path}:{text.count(chr(10), 0, m.start()) + 1}: theory.md#{m.group(1)}")
    return bad


def searched_files() -> dict[str, str]:
    paths = [ROOT / name for name in TOP_LEVEL if (ROOT / name).is_file()]
    for folder in SEARCHED:
        paths += [p for p in (ROOT / folder).rglob("*") if p.is_file() and p.suffix in SUFFIXES
                  and "__pycache__" not in p.parts and p != Path(__file__).resolve()]  # not the checker's own cases
    return {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8", errors="replace") for p in sorted(paths)}


def test_the_page_numbers_its_sections_one_to_k():
    numbers = [int(n) for n in SECTION_HEADING.findall(THEORY.read_text(encoding="utf-8"))]
    assert numbers == list(range(1, len(numbers) + 1)), numbers
    assert len(numbers) >= 7  # the sections the code has cited since the theory lived outside the repository


def test_every_theory_citation_resolves():
    files = searched_files()
    assert sum(len(cited_numbers(text)) for text in files.values()) > 50, "the citations were not found at all"
    bad = dangling(files, THEORY.read_text(encoding="utf-8"))
    assert not bad, "dangling references to docs/theory.md:\n" + "\n".join(bad)


def test_the_page_cites_only_its_own_sections():
    page = THEORY.read_text(encoding="utf-8")
    bad = [f"docs/theory.md:{line}: section {n}" for n, line in cited_numbers(page, SELF_CITATION)
           if n not in sections(page)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("text, expected", [
    ("see THEORY section 9 for that", ["x:1: THEORY section 9"]),
    ("# THEORY sections 1 and 12", ["x:1: THEORY section 12"]),
    ("(THEORY\n    # section 8)", ["x:1: THEORY section 8"]),
    ("THEORY: section 2, THEORY Theorem 4", ["x:1: THEORY Theorem 4"]),
    ("[rates](theory.md#5-rates)", ["x:1: theory.md#5-rates"]),
    ("THEORY section 1 and [the model](theory.md#1-the-model)", []),
])
def test_the_checker_finds_a_dangling_citation(text, expected):
    page = "## 1. The model\n\nTheorem 1.\n\n## 2. More\n"
    assert dangling({"x": text}, page) == expected


def test_nothing_points_at_a_theory_file_outside_the_repository():
    outside = "../shared/" + "THEORY.md"  # spelled in two parts so that this file does not match itself
    hits = [path for path, text in searched_files().items() if outside in text]
    assert not hits, hits
