"""Every code block of CONTRIBUTING.md is run or checked, so the guide cannot go stale.

The rules (also stated at the top of CONTRIBUTING.md):

* ```` ```python ```` blocks run in document order in one fresh Python interpreter (one namespace);
* ```` ```bash ```` blocks run in document order in one ``bash -euo pipefail``, with a throwaway virtual
  environment (on top of this one) first on ``PATH``: ``pip install`` installs into it (``--no-deps``),
  ``python`` and ``asczoo`` run in it, so the walkthrough never changes the environment of the suite;
* a block of any other language needs a marker in the line before it: ``<!-- write: PATH -->`` writes
  the block to PATH before anything runs, ``<!-- file: PATH -->`` requires the block to equal the file
  PATH after the bash blocks ran (files that ``asczoo new-plugin`` generated, for instance; a python
  block with a ``file:`` marker is compared, not run), ``<!-- output -->`` requires each of its lines
  to be a line of what the bash blocks printed.

Everything happens in one scratch folder.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path


from test_new_plugin import ThrowawayEnv, can_build_without_isolation

DOC = Path(__file__).resolve().parents[1] / "CONTRIBUTING.md"
RUN = ("python", "bash")
_FENCE = re.compile(r"^```(\S*)\s*$")
_MARKER = re.compile(r"^<!--\s*(write|file|output):?\s*(\S*)\s*-->$")


@dataclasses.dataclass
class Block:
    lang: str
    code: str
    line: int  # 1-based line of the opening fence
    marker: tuple[str, str] | None

    def __str__(self) -> str:
        return f"CONTRIBUTING.md:{self.line} ({self.lang or 'no language'})"


def blocks(text: str) -> list[Block]:
    found: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        start = i
        previous = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = _MARKER.match(previous)
        i += 1
        body = []
        while i < len(lines) and lines[i].rstrip() != "```":
            body.append(lines[i])
            i += 1
        assert i < len(lines), f"CONTRIBUTING.md:{start + 1}: unclosed code block"
        found.append(Block(match.group(1), "\n".join(body) + "\n", start + 1,
                           (marker.group(1), marker.group(2)) if marker else None))
        i += 1
    return found


BLOCKS = blocks(DOC.read_text(encoding="utf-8"))


def test_every_block_is_run_or_checked():
    assert BLOCKS, "CONTRIBUTING.md has no code blocks"
    untested = [str(b) for b in BLOCKS if b.lang not in RUN and b.marker is None]
    assert not untested, f"blocks that no test runs or checks (add a write:/file: marker): {untested}"
    odd = [str(b) for b in BLOCKS if b.marker and b.marker[0] in ("write", "output") and b.lang in RUN]
    assert not odd, f"write: and output markers belong to data and output blocks, not to python/bash: {odd}"
    pathless = [str(b) for b in BLOCKS if b.marker and b.marker[0] in ("write", "file") and not b.marker[1]]
    assert not pathless, f"write:/file: markers need a path: {pathless}"


def write_files(scratch: Path) -> None:
    for block in BLOCKS:
        if block.marker and block.marker[0] == "write":
            path = scratch / block.marker[1]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.code, encoding="utf-8")


def subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASCZOO_")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def test_python_blocks_run(tmp_path):
    write_files(tmp_path)
    parts = []
    for block in BLOCKS:
        if block.lang == "python" and block.marker is None:
            parts.append(f"print({f'--- {block}'!r})\n{block.code}")
    script = tmp_path / "contributing_snippets.py"
    script.write_text("\n".join(parts), encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                          env=subprocess_env())
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def test_python_blocks_use_only_the_public_api(tmp_path):
    """The guide's plugins are written the way it tells plugin authors to write theirs."""
    from asczoo.testing import plugin_import_problems

    code = "\n".join(b.code for b in BLOCKS if b.lang == "python" and b.marker is None)
    (tmp_path / "guide.py").write_text(code, encoding="utf-8")
    assert plugin_import_problems(tmp_path) == []


def test_bash_blocks_run_and_files_match(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    write_files(scratch)
    env = ThrowawayEnv(tmp_path / "venv")
    isolation = "--no-build-isolation" if can_build_without_isolation() else ""
    prelude = f"""
        pip() {{
            if [ "$1" = install ]; then shift
                {sys.executable!s} -m pip --python "{env.python}" install --no-deps --disable-pip-version-check \\
                    --no-input {isolation} "$@"
            else {sys.executable!s} -m pip --python "{env.python}" "$@"; fi
        }}
        asczoo() {{ python -m asczoo "$@"; }}
    """
    parts = [prelude]
    for block in BLOCKS:
        if block.lang == "bash" and block.marker is None:
            parts.append(f"echo {f'--- {block}'!r}\n{block.code}")
    script = tmp_path / "contributing_snippets.sh"
    script.write_text("\n".join(parts), encoding="utf-8")
    venv_vars = {k: v for k, v in env.environ().items() if k in ("PATH", "VIRTUAL_ENV")}
    done = subprocess.run(["bash", "-euo", "pipefail", str(script)], cwd=scratch, capture_output=True, text=True,
                          env={**subprocess_env(), **venv_vars})
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-3000:]}"
    printed = {line.rstrip() for line in done.stdout.splitlines()}
    for block in BLOCKS:
        if block.marker and block.marker[0] == "output":
            missing = [line for line in block.code.splitlines() if line.rstrip() not in printed]
            assert not missing, f"{block}: not printed by the bash blocks: {missing}\n{done.stdout[-3000:]}"

    for block in BLOCKS:
        if block.marker and block.marker[0] == "file":
            path = scratch / block.marker[1]
            assert path.is_file(), f"{block}: {block.marker[1]} does not exist after the bash blocks ran"
            assert path.read_text(encoding="utf-8") == block.code, (
                f"{block} differs from {block.marker[1]} (what the code generates now); update the guide"
            )


def test_every_conformance_check_is_in_the_guide():
    from asczoo import testing

    text = DOC.read_text(encoding="utf-8")
    missing = [c.__name__ for c in testing.CHECKS.values() if f"`{c.__name__}(" not in text]
    assert not missing, f"CONTRIBUTING.md does not mention {missing}"
