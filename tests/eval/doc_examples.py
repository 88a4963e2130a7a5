"""Code blocks of the docs that the tests run as written: a block is marked by a
`<!-- test: MARKER -->` line before it."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EVALUATION = ROOT / "docs" / "evaluation.md"


def marked_block(doc: Path, marker: str) -> str:
    """The fenced code block after `<!-- test: {marker} -->` in the Markdown file `doc`."""
    found = re.search(
        rf"<!-- test: {re.escape(marker)} -->\s*```[a-z]*\n(.*?)```", doc.read_text(), re.S
    )
    if found is None:
        name = doc.relative_to(ROOT) if doc.is_relative_to(ROOT) else doc
        raise LookupError(f"{name} has no code block marked <!-- test: {marker} -->")
    return found.group(1)


def evaluation_block(marker: str) -> str:
    """The fenced block after `<!-- test: {marker} -->` in docs/evaluation.md."""
    return marked_block(EVALUATION, marker)


def run_bash(code: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """`code` in bash (errexit, pipefail) in `cwd`, with this interpreter's `decoptim` first on
    PATH."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code],
        cwd=cwd,
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
