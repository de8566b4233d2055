"""README.md and the pages under docs/: every relative link resolves, every generated block sits in its one home
and holds what `reparam readme-tables` renders from the committed tables today, and the README stays short."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from reparam.sims.readme_tables import HOMES, refresh_pages

ROOT = Path(__file__).resolve().parents[2]
README_MAX_LINES = 250  # a newcomer reads it in five minutes; reference material lives in docs/
BLOCK = re.compile(r"<!-- generated:([\w-]+) -->\n(.*?)<!-- /generated:\1 -->", re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_readme_links_resolve():
    """Every relative link and image of README.md names a file of the checkout (on GitHub, as on disk), and every
    in-page anchor one of its headings."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    anchors = {_github_anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}
    links = LINK.findall(re.sub(r"```.*?```", "", text, flags=re.S))
    assert links, "README.md has no links"
    broken = []
    for target in links:
        if re.match(r"[a-z]+:", target):
            continue  # an absolute URL
        path, _, anchor = target.partition("#")
        if path and not (ROOT / path).exists():
            broken.append(target)
        elif not path and anchor not in anchors:
            broken.append(target)
    assert not broken, f"README.md links that do not resolve: {broken}"
    assert any(t.startswith("docs/") for t in links), "README.md does not link the documentation"


def test_readme_is_short_and_depends_on_nothing_outside_the_checkout():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES, f"README.md has {len(text.splitlines())} lines"
    own = [p for p in _pages() if p.name not in ("theory.md", "data.md") or p.parent != ROOT / "docs"]
    outside = [str(p.relative_to(ROOT)) for p in own if "../shared" in p.read_text(encoding="utf-8")]
    assert not outside, f"pages that send the reader outside the checkout (../shared): {outside}"


def test_every_generated_block_has_one_home():
    """Each block NAME of HOMES occurs exactly once over README.md and docs/, in the page HOMES names, and no page
    holds a block HOMES does not know (it would never be refreshed)."""
    where: dict[str, list[str]] = {}
    for page in _pages():
        for name, _ in BLOCK.findall(page.read_text(encoding="utf-8")):
            where.setdefault(name, []).append(page.relative_to(ROOT).as_posix())
    assert set(where) == set(HOMES), (sorted(set(where) - set(HOMES)), sorted(set(HOMES) - set(where)))
    misplaced = {name: pages for name, pages in where.items() if pages != [HOMES[name]]}
    assert not misplaced, f"blocks outside their one home (HOMES): {misplaced}"


def test_generated_blocks_are_what_the_committed_tables_render(tmp_path):
    """`reparam readme-tables` on a copy of the pages changes nothing: the committed blocks are up to date."""
    for page in set(HOMES.values()):
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / page, tmp_path / page)
    assert refresh_pages(tmp_path, ROOT / "figures"), "no block was rendered from figures/"
    stale = [page for page in sorted(set(HOMES.values()))
             if (tmp_path / page).read_text(encoding="utf-8") != (ROOT / page).read_text(encoding="utf-8")]
    assert not stale, f"generated blocks out of date (run `reparam readme-tables`): {stale}"


@pytest.mark.parametrize("page", ["README.md", "docs/index.md"])
def test_headline_figure_is_shown(page):
    assert "figures/headline.png)" in (ROOT / page).read_text(encoding="utf-8")


def test_readme_tables_refuses_a_root_without_the_pages(tmp_path):
    """`reparam readme-tables root=DIR` checks that DIR holds every home page before writing anything."""
    from reparam.sims.readme_tables import ReadmeTablesConf, validate_cfg
    from reparam.validation import ConfigError

    (tmp_path / "README.md").write_text("# a README alone\n")
    with pytest.raises(ConfigError, match=r"root='.*' is invalid: .*missing: docs/"):
        validate_cfg(ReadmeTablesConf(root=str(tmp_path), figures=str(ROOT / "figures")))
    assert (tmp_path / "README.md").read_text() == "# a README alone\n"
