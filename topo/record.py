"""Run directories: where a run keeps its spec, its summary and its logs.

``runs/<name>/<timestamp>-<short id>/`` under the current folder by default
(``--runs-dir``, ``TOPO_RUNS_DIR``). Files are written atomically: a record never
holds half a file, whatever way the run ended.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

RUNS_DIR_ENV = "TOPO_RUNS_DIR"
DEFAULT_RUNS_DIR = "runs"


def runs_root(runs_dir: str | Path | None = None) -> Path:
    return Path(runs_dir or os.environ.get(RUNS_DIR_ENV) or DEFAULT_RUNS_DIR)


def new_run_dir(name: str, runs_dir: str | Path | None = None) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = runs_root(runs_dir) / name / f"{stamp}-{secrets.token_hex(3)}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_start(run_dir: Path, spec_text: str, resolved: dict[str, Any]) -> None:
    """The spec as written and as resolved, before anything starts."""
    write_atomic(run_dir / "spec.yaml", spec_text)
    write_atomic(run_dir / "resolved.yaml", yaml.safe_dump(resolved, sort_keys=False))


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    write_atomic(run_dir / "run.json", json.dumps(summary, indent=2) + "\n")
