"""Code blocks of docs/evaluation.md that the tests run as written."""

import os
import re
import subprocess
import sys
from pathlib import Path

EVALUATION = Path(__file__).resolve().parents[2] / "docs" / "evaluation.md"


def evaluation_block(marker: str) -> str:
    """The fenced block after `<!-- test: {marker} -->` in docs/evaluation.md."""
    text = EVALUATION.read_text()
    found = re.search(rf"<!-- test: {re.escape(marker)} -->\s*```[a-z]*\n(.*?)```", text, re.S)
    if found is None:
        raise LookupError(f"docs/evaluation.md has no code block marked <!-- test: {marker} -->")
    return found.group(1)


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
