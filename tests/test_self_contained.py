"""The repository documents itself: no file points at notes that live outside the repository, and every
`docs/method.md "<Heading>"` citation names a heading that docs/method.md really has."""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHOD = os.path.join("docs", "method.md")
THIS = os.path.relpath(os.path.abspath(__file__), REPO).replace(os.sep, "/")

# Written split so that this file does not contain them either.
FORBIDDEN = ("SPEC" + " §", "SPEC" + ".md", "(" + "SPEC" + ")", ".." + "/shared")
# tests/conftest.py reads the optional real-data fixtures beside the checkout; that is its job.
ALLOWED = {"tests/conftest.py": {".." + "/shared"}}

# `docs/method.md "A"` or `docs/method.md "A", "B"` (the list may wrap onto the next line).
CITATION = re.compile(r'docs/method\.md((?:\s*,?\s*"[^"\n]+")+)')
QUOTED = re.compile(r'"([^"\n]+)"')


def _repo_files() -> list[str]:
    """Tracked files plus untracked files git does not ignore (new files count before their commit)."""
    if shutil.which("git") is None or not os.path.isdir(os.path.join(REPO, ".git")):
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                         cwd=REPO, capture_output=True, check=True).stdout.decode("utf-8")
    return sorted({p for p in out.split("\0") if p and os.path.isfile(os.path.join(REPO, p))})


def _text(rel: str):
    """The file's text, or None for binary files."""
    with open(os.path.join(REPO, rel), "rb") as f:
        data = f.read()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _texts() -> dict[str, str]:
    texts = {}
    for rel in _repo_files():
        if rel == THIS or rel.startswith(".git/"):
            continue
        text = _text(rel)
        if text is not None:
            texts[rel] = text
    return texts


def _headings(markdown: str) -> set[str]:
    """ATX headings (`#` … `######`) outside fenced code blocks, without the #'s."""
    found, fenced = set(), False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m and not fenced:
            found.add(m.group(1).strip())
    return found


def test_no_references_outside_the_repository():
    offenders = []
    for rel, text in _texts().items():
        for needle in FORBIDDEN:
            if needle in ALLOWED.get(rel, ()):
                continue
            for lineno, line in enumerate(text.splitlines(), 1):
                if needle in line:
                    offenders.append(f"{rel}:{lineno}: {line.strip()}")
    assert not offenders, "references to notes outside the repository:\n" + "\n".join(offenders)


def test_method_doc_exists_with_the_cited_sections():
    path = os.path.join(REPO, METHOD)
    assert os.path.isfile(path), f"{METHOD} is missing"
    with open(path, encoding="utf-8") as f:
        headings = _headings(f.read())
    required = {"Pipeline", "Model", "Prototypes", "Contrastive loss", "Pseudo labels", "Warm-up", "Align",
                "Self-training", "Evaluation", "Datasets", "Analyses", "Decisions"}
    assert required <= headings, f"{METHOD} lacks headings {sorted(required - headings)}"


def test_method_doc_citations_name_existing_headings():
    with open(os.path.join(REPO, METHOD), encoding="utf-8") as f:
        headings = _headings(f.read())
    bad, count = [], 0
    for rel, text in _texts().items():
        for m in CITATION.finditer(text):
            lineno = text.count("\n", 0, m.start()) + 1
            for name in QUOTED.findall(m.group(1)):
                if name.startswith("<"):  # the placeholder in the doc's own conventions
                    continue
                count += 1
                if name not in headings:
                    bad.append(f"{rel}:{lineno}: \"{name}\"")
    assert count > 0, "no docs/method.md citations found (the pattern no longer matches?)"
    assert not bad, f"citations of headings that {METHOD} does not have:\n" + "\n".join(bad)


def test_citation_pattern():
    text = 'see docs/method.md "Prototypes", "Contrastive loss",\n"Pseudo labels") and docs/method.md "Model".'
    found = [QUOTED.findall(m.group(1)) for m in CITATION.finditer(text)]
    assert found == [["Prototypes", "Contrastive loss", "Pseudo labels"], ["Model"]]
    assert _headings("# A\n```\n# not\n```\n## B ##\n") == {"A", "B"}


# Markdown links to a heading: `[text](#anchor)` or `[text](path.md#anchor)`, relative to the linking file.
LINK = re.compile(r"\]\(([^()\s]*?\.md)?#([^()\s]+)\)")
# `docs/toy.md "Title"` or `docs/toy.md, "Title"`: the quoted text starts a heading of docs/toy.md (citations
# in config comments may shorten a long title). Comment continuations are joined before matching.
TOY = os.path.join("docs", "toy.md")
TOY_CITATION = re.compile(r'docs/toy\.md,?\s*"([^"]+)"')


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, everything but letters, digits, `_`, `-` and spaces
    dropped, spaces turned into hyphens."""
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


def test_github_slug():
    assert github_slug("The control this raises: AdaBN") == "the-control-this-raises-adabn"
    assert github_slug("What each stage contributes at the quick-start size (128×64), with the fix") == \
        "what-each-stage-contributes-at-the-quick-start-size-12864-with-the-fix"
    assert github_slug("The released self-training geometry loses 7–8 points") == \
        "the-released-self-training-geometry-loses-78-points"


def test_heading_links_resolve():
    texts = _texts()
    bad, count = [], 0
    for rel, text in texts.items():
        if not rel.endswith(".md"):
            continue
        for m in LINK.finditer(text):
            target = rel if not m.group(1) else os.path.normpath(
                os.path.join(os.path.dirname(rel), m.group(1))).replace(os.sep, "/")
            count += 1
            slugs = {github_slug(h) for h in _headings(texts.get(target, ""))}
            if m.group(2) not in slugs:
                lineno = text.count("\n", 0, m.start()) + 1
                bad.append(f"{rel}:{lineno}: {target}#{m.group(2)}")
    assert count > 0, "no heading links found (the pattern no longer matches?)"
    assert not bad, "links to headings that do not exist:\n" + "\n".join(bad)


def test_toy_doc_citations_name_existing_headings():
    with open(os.path.join(REPO, TOY), encoding="utf-8") as f:
        headings = _headings(f.read())
    bad, count = [], 0
    for rel, text in _texts().items():
        joined = re.sub(r"\n\s*#\s*", " ", text)
        for m in TOY_CITATION.finditer(joined):
            count += 1
            name = " ".join(m.group(1).split())
            if not any(h.startswith(name) for h in headings):
                bad.append(f'{rel}: "{name}"')
    assert count > 0, "no docs/toy.md citations found (the pattern no longer matches?)"
    assert not bad, f"citations of headings that {TOY} does not have:\n" + "\n".join(bad)
