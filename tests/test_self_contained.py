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
