"""Every command and Python snippet in README.md and docs/ runs, as pasted, on a fresh clone's embedded data.

How a page's code blocks are treated:

- ```console: each line starting with ``$ `` is a command (a trailing ``\\`` continues it); the other lines are
  its output, shown for the reader and not compared (timings differ from machine to machine);
- ```bash: every line that is not a comment is a command;
- ```python: the block runs as a script;
- other languages (text, yaml, json, bibtex) are not run;
- a block whose fence is directly preceded by ``<!-- skip-test: REASON -->`` is not run: kept for what needs a
  GPU, a download or a long run (the reason says which).

A page's blocks run in order in one scratch folder per page (so a later block can use what an earlier one wrote),
with the repository's ``datasets`` and ``configs`` linked in, as a user's clone has them. ``mlkasr`` commands run
in this process (``mlkasr.cli.main``; no interpreter start-up per command), other commands in bash. A command
that exits non-zero, or a snippet that raises, fails the page's test and names the block's line. As in the whole
suite, ``mlkasr upscale`` runs with ``MLKASR_UPSCALE_BACKEND=torch`` (tests/conftest.py): the ``--backend auto``
probe, which exports and times every backend once per model, has its own tests.
"""

from __future__ import annotations

import os
import re
import runpy
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO_ROOT

PAGES = [REPO_ROOT / "README.md", *sorted(p for p in (REPO_ROOT / "docs").rglob("*.md")
                                          if "reference" not in p.relative_to(REPO_ROOT / "docs").parts)]
RUN = {"console", "bash", "python"}
SKIP = re.compile(r"<!--\s*skip-test:\s*(.+?)\s*-->")
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    skip: str | None  # the reason, when marked

    def where(self) -> str:
        return f"{self.page.relative_to(REPO_ROOT)}:{self.line}"


def code_blocks(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, language = match.groups()
        start = i
        i += 1
        body = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        if i == len(lines):
            raise AssertionError(f"{page.relative_to(REPO_ROOT)}:{start + 1}: code block never closed")
        previous = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        skip = SKIP.search(previous)
        blocks.append(Block(page, start + 1, language, "\n".join(body), skip.group(1) if skip else None))
        i += 1
    return blocks


def commands(block: Block) -> list[str]:
    """The shell commands of a console or bash block, continuation lines joined."""
    out, pending = [], None
    for raw in block.code.splitlines():
        line = raw.rstrip()
        if pending is not None:
            pending += " " + line.strip()
        elif block.language == "console":
            if not line.startswith("$ "):
                continue  # output
            pending = line[2:]
        else:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            pending = line.strip()
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        out.append(pending)
        pending = None
    return out


def run_command(command: str, cwd: Path, where: str) -> None:
    argv = shlex.split(command, comments=True)
    if argv and argv[0] == "mlkasr" and not any(c in command for c in "|;&><"):
        from mlkasr.cli import main

        try:
            code = main(argv[1:])
        except SystemExit as exc:  # argparse errors and --help
            code = exc.code if isinstance(exc.code, int) else 1
        assert code == 0, f"{where}: `{command}` exited {code}"
        return
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{where}: `{command}` exited {result.returncode}:\n{result.stderr[-2000:]}"


def _page_id(page: Path) -> str:
    return str(page.relative_to(REPO_ROOT))


def test_there_are_snippets_to_run():
    runnable = [b for page in PAGES for b in code_blocks(page) if b.language in RUN and b.skip is None]
    assert len(runnable) >= 20, len(runnable)
    for page in PAGES:  # a skip marker must say why
        for block in code_blocks(page):
            assert block.skip is None or len(block.skip) > 5, block.where()


def test_code_block_parser(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("text\n\n<!-- skip-test: needs CUDA -->\n```bash\nmlkasr a \\\n  --b c\n# comment\nls\n```\n\n"
                    "```console\n$ mlkasr x\noutput\n$ echo y\n```\n```python\nprint(1)\n```\n")
    bash, console, python = code_blocks(page)
    assert bash.skip == "needs CUDA" and commands(bash) == ["mlkasr a --b c", "ls"]
    assert console.skip is None and commands(console) == ["mlkasr x", "echo y"]
    assert python.language == "python" and python.code == "print(1)"


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_page_snippets_run(page, tmp_path, monkeypatch):
    blocks = [b for b in code_blocks(page) if b.language in RUN and b.skip is None]
    if not blocks:
        pytest.skip("no runnable code on this page")
    for name in ("datasets", "configs"):
        (tmp_path / name).symlink_to(REPO_ROOT / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLKASR_CACHE_DIR", str(tmp_path / ".cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a fixed, small thread count whatever else runs
    for block in blocks:
        if block.language == "python":
            script = tmp_path / f"snippet_{block.line}.py"
            script.write_text(block.code, encoding="utf-8")
            try:
                runpy.run_path(str(script), run_name="__main__")
            except Exception as exc:  # noqa: BLE001 - any failure of a snippet is the finding
                raise AssertionError(f"{block.where()}: the Python snippet raised {exc!r}") from exc
        else:
            for command in commands(block):
                run_command(command, tmp_path, block.where())
    sys.stdout.flush()
