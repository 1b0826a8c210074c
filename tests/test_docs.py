"""The documentation a user gets points only at files that are in the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "SECURITY.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.MULTILINE)


def _links(text: str) -> list[str]:
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)  # code blocks are not links
    return LINK.findall(text) + REFERENCE.findall(text)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve_inside_the_repository(page):
    broken = []
    for target in _links(page.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
            continue  # https:, mailto:, an anchor on the same page
        path = (page.parent / target.split("#", 1)[0]).resolve()
        if not path.is_relative_to(ROOT) or not path.exists():
            broken.append(target)
    assert broken == []


def test_the_docs_exist_and_nothing_sends_readers_to_the_project_notes():
    assert {p.name for p in PAGES} >= {"README.md", "SECURITY.md", "DESIGN.md", "WHMCS.md",
                                      "OPERATIONS.md", "API.md"}
    for page in [*PAGES, *(ROOT / "deploy").rglob("*")]:
        if page.is_file():
            assert "../shared" not in page.read_text(errors="replace"), page
            assert "shared/API.md" not in page.read_text(errors="replace"), page


def test_link_finder_finds_what_it_checks():
    found = _links("see [a](docs/A.md), ![img](x.png \"t\"), [b](<docs/B.md#x>) and\n"
                   "[c]: ../shared/C.md\n```\n[not](a-link.md)\n```\n")
    assert found == ["docs/A.md", "x.png", "docs/B.md#x", "../shared/C.md"]
