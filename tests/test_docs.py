"""The docs' relative links lead somewhere: every linked file exists and every #anchor is a heading there."""

import pathlib
import re
from collections.abc import Iterator

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
DOCS = sorted([REPO / "README.md", REPO / "benchmarks" / "README.md", *(REPO / "docs").glob("*.md")])
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def without_code(text: str) -> str:
    """The text outside fenced code blocks (a shell comment there is not a heading)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but hyphens and underscores dropped, spaces to
    hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: pathlib.Path) -> Iterator[str]:
    """Every heading's anchor; a repeated one also as GitHub numbers it (``name-1``, ``name-2``, ...)."""
    seen: dict[str, int] = {}
    for line in without_code(path.read_text()).splitlines():
        if re.match(r"#{1,6} ", line):
            name = anchor(line.lstrip("#"))
            seen[name] = seen.get(name, -1) + 1
            yield name if seen[name] == 0 else f"{name}-{seen[name]}"


def test_anchor_follows_githubs_rule(tmp_path):
    assert anchor(" Inputs (`DATA`)") == "inputs-data"
    assert anchor(" `main.py` against the benchmark") == "mainpy-against-the-benchmark"
    assert anchor(" `fast_dropout` trains like torch's dropout") == "fast_dropout-trains-like-torchs-dropout"
    assert anchor(" 300 s, one setting") == "300-s-one-setting"
    doc = tmp_path / "doc.md"
    doc.write_text("# Notes\n```bash\n# not a heading\n```\n## Notes\n### Other\n")
    assert list(anchors(doc)) == ["notes", "notes-1", "other"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_and_anchors_resolve(doc):
    broken = []
    for target in LINK.findall(without_code(doc.read_text())):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        linked = (doc.parent / path).resolve() if path else doc
        if not linked.exists():
            broken.append(f"{target}: no file {linked}")
        elif fragment and linked.suffix == ".md" and fragment not in set(anchors(linked)):
            broken.append(f"{target}: no heading with anchor #{fragment} in {linked.name}")
    assert not broken, "\n".join(broken)
