"""Build hooks of the documentation site (`hooks:` in mkdocs.yml; this folder is excluded from the pages).

* **Figures.** Every PNG under the repository's `figures/` becomes a file of the site at the same path
  (`site/figures/...`), so a page links the committed figure itself (`![](figures/headline.png)` from a page at
  the top of docs/, `../figures/...` one level down) and nothing is committed twice. MkDocs validates those links
  like any other, so a renamed or missing figure fails the strict build.
* **The studies' answers.** README.md holds one generated answer paragraph per study (`reparam readme-tables`);
  the home page shows the same section, read from README.md when the site is built (a page's
  `<!-- README section: TITLE -->` ... `<!-- /README section -->` is replaced by README's section TITLE, its `docs/`
  links made relative to the page), so the paragraphs have one home and the site never shows stale numbers.
* **API reference.** A page's `<!-- API modules of PACKAGE -->` becomes one mkdocstrings block (`::: module`) per
  module of PACKAGE's source folder (and of its subpackages for `<!-- API modules of PACKAGE, recursive -->`), so
  a new module is documented without editing the pages; private modules (`_name.py`) and `__main__` are left out.
* **Formulas.** `pymdownx.arithmatex` (generic mode) marks `$...$` and `$$...$$` in the Markdown; this hook turns
  each marked formula into MathML with `latex2mathml` when the page is built. Browsers render MathML natively
  (Chromium since 109, Firefox, Safari), so the site needs no JavaScript math library and no network, and a
  formula `latex2mathml` cannot read is a build warning (an error under `--strict`) instead of raw TeX on a page.
"""
from __future__ import annotations

import html
import logging
import re
from pathlib import Path

from latex2mathml.converter import convert
from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.reparam")

FIGURES = "figures"
FIGURE_SUFFIXES = (".png",)

# what arithmatex writes in generic mode: \( ... \) in a span for inline formulas, \[ ... \] in a div for blocks
_INLINE = re.compile(r'<span class="arithmatex">\\\((.*?)\\\)</span>', re.S)
_BLOCK = re.compile(r'<div class="arithmatex">\\\[(.*?)\\\]</div>', re.S)
# latex2mathml writes a function name such as \log as a bare <mi>log</mi>, which browsers set flush against its
# argument ("logn"); TeX puts a thin space there, and so does this hook
_FUNCTION_THEN_ARGUMENT = re.compile(r"(<mi>(?:arg|cos|cosh|det|dim|exp|inf|lim|ln|log|max|min|Pr|sin|sinh|sup|tan|tanh)"
                                     r"</mi>)(?=<m[inr])")
_THIN_SPACE = '<mspace width="0.1667em"></mspace>'
# a TeX command latex2mathml does not know comes out as literal text ("\\arg"): it must fail the build instead
_UNCONVERTED = re.compile(r">[^<]*(\\[A-Za-z]+)[^<]*<")


# `<!-- README section: TITLE -->`, what a reader of the Markdown file sees instead (e.g. a link to README.md), and
# `<!-- /README section -->`: the hook replaces all three by README's section
_README_SECTION = re.compile(r"^<!-- README section: (.+?) -->$.*?^<!-- /README section -->$", re.M | re.S)


def readme_section(readme: str, title: str) -> str | None:
    """The body of README's `## title` section (up to the next `## ` heading), or None."""
    found = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    return found.group(1).strip() if found else None


_API_MODULES = re.compile(r"^<!-- API modules of ([\w.]+)(, recursive)? -->$", re.M)


def api_modules(root: Path, package: str, recursive: bool) -> list[str]:
    """Dotted names of the public modules in the source folder of `package` (itself first; subpackages' modules
    too when `recursive`), sorted."""
    folder = root.joinpath(*package.split("."))
    names = []
    for path in sorted(folder.rglob("*.py") if recursive else folder.glob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        elif parts[-1].startswith("_"):
            continue
        if any(part.startswith("_") for part in parts):
            continue
        names.append(".".join(parts))
    return sorted(set(names), key=lambda name: (name != package, name))


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Put README's sections where a page asks for them (`<!-- README section: TITLE -->` ... `<!-- /README
    section -->`), and the API blocks of a package's modules (`<!-- API modules of PACKAGE -->`)."""
    root = Path(config["config_file_path"]).resolve().parent
    markdown = _API_MODULES.sub(lambda m: "\n\n".join(f"::: {name}" for name in
                                                      api_modules(root, m.group(1), bool(m.group(2)))), markdown)
    if not _README_SECTION.search(markdown):
        return markdown
    readme = (root / "README.md").read_text(encoding="utf-8")
    depth = page.file.src_uri.count("/")

    def section(match: re.Match) -> str:
        body = readme_section(readme, match.group(1))
        if body is None:
            log.warning(f"{page.file.src_uri}: README.md has no section '## {match.group(1)}'")
            return ""
        return re.sub(r"\]\(docs/", "](" + "../" * depth, body)

    return _README_SECTION.sub(section, markdown)


def on_files(files: Files, config) -> Files:
    """Add the committed figures (repository root / figures / **.png) to the site under figures/."""
    root = Path(config["config_file_path"]).resolve().parent
    for path in sorted((root / FIGURES).rglob("*")):
        if path.is_file() and path.suffix in FIGURE_SUFFIXES:
            files.append(File(path.relative_to(root).as_posix(), src_dir=str(root), dest_dir=config["site_dir"],
                              use_directory_urls=config["use_directory_urls"]))
    return files


def to_mathml(tex: str, display: bool, where: str) -> str:
    """MathML of one formula (`tex` as arithmatex wrote it, HTML-escaped); the TeX itself, with a warning, when
    latex2mathml cannot convert it."""
    source = html.unescape(tex).strip()
    try:
        mathml = convert(source, display="block" if display else "inline")
    except Exception as error:  # latex2mathml raises many kinds (NotImplementedError, its own errors, ...)
        log.warning(f"{where}: formula ${source}$ does not convert to MathML: {error.__class__.__name__}: {error}")
        return html.escape(source)
    unknown = _UNCONVERTED.search(mathml)
    if unknown:
        log.warning(f"{where}: formula ${source}$: latex2mathml does not know {unknown.group(1)} and would print it "
                    f"as text; write the formula without it")
    return _FUNCTION_THEN_ARGUMENT.sub(lambda m: m.group(1) + _THIN_SPACE, mathml)


def on_page_content(content: str, page, config, files) -> str:
    """Replace every formula arithmatex marked on the page by its MathML."""
    where = page.file.src_uri
    content = _BLOCK.sub(lambda m: f'<div class="math-display">{to_mathml(m.group(1), True, where)}</div>', content)
    return _INLINE.sub(lambda m: to_mathml(m.group(1), False, where), content)
