"""The README and docs/ stay true to the tree: every relative link leads to a file (and a heading,
when it names one), every `make` command they show is a target of the Makefile, and the copies of
files they show are the files' own; and every ```sh block carries a doc-test marker, whose
convention (and the test that runs the blocks) is in tests/process/test_doc_commands.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness import ROOT
from test_doc_commands import blocks

PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE_BLOCK = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
MAKE_COMMAND = re.compile(r"^\s*make\s+(?:[A-Z_]+=\S+\s+)*([a-z0-9][\w.-]*)")
MAKEFILE_TARGET = re.compile(r"^([A-Za-z0-9][\w.-]*)\s*:(?!=)", re.M)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    prose = CODE_BLOCK.sub("", page.read_text(encoding="utf-8"))
    return {slug(match) for match in re.findall(r"^#{1,6}\s+(.+)$", prose, re.M)}


def relative_links(page: Path) -> list[str]:
    prose = CODE_BLOCK.sub("", page.read_text(encoding="utf-8"))
    return [target for target in LINK.findall(prose) if not re.match(r"[a-z]+:", target)]


def make_commands(page: Path) -> set[str]:
    """The targets of every `make …` shown: inline, or a line of a code block."""
    text = page.read_text(encoding="utf-8")
    shown = INLINE_CODE.findall(CODE_BLOCK.sub("", text))
    shown += [line for block in CODE_BLOCK.findall(text) for line in block.splitlines()]
    return {match.group(1) for line in shown if (match := MAKE_COMMAND.match(line))}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading #{anchor} in {destination.name}")
    assert not broken, broken


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_make_command_shown_is_a_target_of_the_makefile(page: Path) -> None:
    targets = set(MAKEFILE_TARGET.findall((ROOT / "Makefile").read_text(encoding="utf-8")))
    assert not make_commands(page) - targets, f"not in the Makefile: {make_commands(page) - targets}"


def test_the_pages_name_commands_and_links_at_all() -> None:
    """The two tests above check something: the README alone shows both."""
    readme = ROOT / "README.md"
    assert {"run", "test", "e2e"} <= make_commands(readme)
    assert "docs/api.md" in relative_links(readme)


def test_the_readme_is_a_first_screen_not_a_manual() -> None:
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 200


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_no_page_tells_work_history_by_issue_number(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert not re.findall(r"\bissues? #?\d+|(?<![\w/])#\d+\b", text, re.I)


def test_the_iam_policy_shown_in_deployment_is_the_file_itself() -> None:
    page = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    shown = [json.loads(block) for block in re.findall(r"^```json\n(.*?)^```", page, re.S | re.M)]
    assert json.loads((ROOT / "deploy" / "iam" / "writer.json").read_text(encoding="utf-8")) in shown


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_sh_block_says_whether_the_docs_test_runs_it(page: Path) -> None:
    unmarked = [block.id for block in blocks(page) if block.decision is None]
    assert not unmarked, f"add <!-- doc-test: runs needs=... --> or <!-- doc-test: skip why --> before: {unmarked}"
