"""The documentation site builds with `mkdocs build --strict` (offline), and a broken link or page fails it; the
README stays short and free of paths that only exist on a development machine."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e '.[docs]')")
pytest.importorskip("material", reason="the docs extra is not installed (pip install -e '.[docs]')")

DOC_FILES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").rglob("*.md"))]


def _build(root, site) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(root / "mkdocs.yml"), "--site-dir", str(site)],
                          capture_output=True, text=True, env=env, timeout=300)


def _copy_site_sources(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy(REPO_ROOT / "mkdocs.yml", root / "mkdocs.yml")
    shutil.copytree(REPO_ROOT / "docs", root / "docs")
    return root


def test_site_builds_strict(tmp_path):
    result = _build(REPO_ROOT, tmp_path / "site")
    assert result.returncode == 0, result.stderr[-3000:]
    for page in ("index.html", "getting-started/index.html", "training/index.html", "reference/config/index.html",
                 "reference/cli/index.html", "faq/index.html", "search/search_index.json"):
        assert (tmp_path / "site" / page).is_file(), page
    assert not list((REPO_ROOT / "docs").glob("site")), "the build must not write into docs/"


def test_broken_link_or_anchor_fails_the_build(tmp_path):
    root = _copy_site_sources(tmp_path)
    faq = root / "docs" / "faq.md"
    original = faq.read_text()
    faq.write_text(original + "\nSee [nothing](no-such-page.md).\n")
    assert _build(root, tmp_path / "a").returncode != 0
    faq.write_text(original + "\nSee [nothing](training.md#no-such-heading).\n")
    assert _build(root, tmp_path / "b").returncode != 0
    faq.write_text(original)
    (root / "docs" / "orphan.md").write_text("# Not in the nav\n")
    assert _build(root, tmp_path / "c").returncode != 0


def test_readme_is_short():
    assert len((REPO_ROOT / "README.md").read_text().splitlines()) <= 200


# words that describe how the text came about instead of what the software is
PROCESS = re.compile(r"this session|earlier session|the issue'?s|used to be|the [\d.]+x target|target was|target is met|"
                     r"sessions so far|"
                     r"of earlier|not yet with|\.\./shared", re.I)


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_docs_describe_the_software_as_it_is(path):
    for number, line in enumerate(path.read_text().splitlines(), 1):
        assert not PROCESS.search(line), f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}"
