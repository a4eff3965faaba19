"""The README and docs/ hold together: every relative link and #anchor resolves as
GitHub renders it, nothing points outside the repository, and every `manage.py`
command is written so that it runs as printed after `make run`."""

import os
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The worker package's README and deploy/'s are pages a reader follows links from too.
PAGES = sorted([*ROOT.glob("*.md"), *(ROOT / "docs").glob("*.md"), *ROOT.glob("[!.]*/README.md")])

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# [text](target "title") and ![alt](target); the target has no spaces or parentheses.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_ANCHOR = re.compile(r"""<a\s+(?:id|name)=["']([^"']+)["']""")
INLINE_CODE = re.compile(r"`+([^`]*)`+")
SKIPPED_FOLDERS = {".venv", ".git", "node_modules", "staticfiles", "tmp", "__pycache__"}


def prose(page: Path) -> list[str]:
    """The page's lines outside fenced code blocks (a `# …` in a shell block is no heading)."""
    lines, fenced = [], False
    for line in page.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def code_lines(page: Path) -> list[str]:
    """Lines inside fenced code blocks, and the text of every inline code span."""
    lines, fenced = [], False
    for line in page.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif fenced:
            lines.append(line)
        else:
            lines.extend(INLINE_CODE.findall(line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its rendered text, lower-cased, punctuation
    dropped (letters, digits, `_`, `-` and spaces stay), spaces made hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = INLINE_CODE.sub(r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = re.sub(r"(\*+|(?<!\w)_+|_+(?!\w))", "", text)  # emphasis markers
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, seen = set(), {}
    for line in prose(page):
        found.update(HTML_ANCHOR.findall(line))
        match = HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[str]:
    # A code span is never a link, though `[a-z]([a-z]…)` reads like one.
    return [target for line in prose(page) for target in LINK.findall(INLINE_CODE.sub("", line))]


def is_external(target: str) -> bool:
    return re.match(r"^[a-z][a-z0-9+.-]*:", target) is not None


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for target in links(page):
        if is_external(target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / unquote(path)).resolve() if path else page
        if not resolved.is_relative_to(ROOT):
            broken.append(f"{target}: outside the repository")
        elif not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (resolved.suffix != ".md" or anchor not in anchors(resolved)):
            broken.append(f"{target}: no such anchor")
    assert broken == []


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_manage_py_command_names_the_projects_python(page):
    # `python manage.py …` fails with "No module named 'django'" outside the venv.
    bare = [line for line in code_lines(page) if re.search(r"(?<![\w/.])python3? manage\.py", line)]
    assert bare == []


def test_no_file_names_a_document_outside_the_repository():
    # The names are split so that this file does not name them either.
    outside = re.compile(re.escape("SPEC" + ".md") + "|" + "PERF" + "_NOTES")
    mentions = []
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [name for name in subfolders if name not in SKIPPED_FOLDERS]
        for name in files:
            path = Path(folder, name)
            if path.suffix in {".py", ".md"} and outside.search(path.read_text()):
                mentions.append(str(path.relative_to(ROOT)))
    assert mentions == []


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Using MariaDB/MySQL", "using-mariadbmysql"),
        ("Nodes: heartbeat, claim, failover", "nodes-heartbeat-claim-failover"),
        ("Retrying safely: Idempotency-Key", "retrying-safely-idempotency-key"),
        ("Running it from cron with `django-crontab`", "running-it-from-cron-with-django-crontab"),
        ("Protecting /metrics", "protecting-metrics"),
        ("Tests and CI", "tests-and-ci"),
        ("What `collect_failed` does", "what-collect_failed-does"),
        ("A five-minute tour", "a-five-minute-tour"),
    ],
)
def test_anchors_are_the_ones_github_gives_headings(heading, anchor):
    assert slug(heading) == anchor
