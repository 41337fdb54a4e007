"""The README's test commands and ``.ci/run`` say the same thing."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _commands(text: str) -> list[str]:
    """Each command of a shell text: one per line or per ``&&``, comments left out."""
    lines = [line.split(" #")[0].strip() for line in text.splitlines()]
    return [c.strip() for line in lines if line for c in line.split("&&")]


def test_ci_runs_the_readme_test_commands() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"this is what `\.ci/run` runs.*?```sh\n(.*?)```", readme, re.DOTALL)
    assert block is not None, "the README no longer says what .ci/run runs"
    script = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    ci = script[script.index("python3 -m venv") :]
    assert _commands(ci) == _commands(block.group(1))
    assert "set -euo pipefail" in script  # any failing command fails CI
