"""Run records: everything needed to understand a run later and to run it again.

A record is a folder ``<runs>/<name>/<YYYYmmdd-HHMMSS>-<id>/`` (``<runs>`` is
``--runs-dir``, ``$TOPO_RUNS_DIR`` or ``./runs``) holding:

- ``spec.yaml``: the spec as written; ``resolved.yaml``: with params, overrides,
  replicas and the base seed applied;
- ``run.json``: the JSON summary of the run plus a ``manifest`` (versions, machine,
  seeds, hashes of the spec and of the target modules, git state, distributions);
  it says ``running`` until the run ends, so a record never claims ``ok`` for a run
  that did not finish;
- ``logs/<instance>.log``: each instance's output; ``events.jsonl``: one timestamped
  line per start, exit, restart, failure, deadlock, timeout or signal.

Files are replaced atomically (temporary file, then rename).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.util
import json
import os
import platform
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

import yaml

from topo.errors import os_error_doing

RUNS_DIR_ENV = "TOPO_RUNS_DIR"
DEFAULT_RUNS_DIR = "runs"
SUMMARY = "run.json"
EVENTS = "events.jsonl"
LOGS = "logs"


def runs_root(runs_dir: str | Path | None = None) -> Path:
    return Path(runs_dir or os.environ.get(RUNS_DIR_ENV) or DEFAULT_RUNS_DIR)


def new_run_dir(name: str, runs_dir: str | Path | None = None) -> Path:
    """Create ``<runs>/<name>/<stamp>-<id>/``; an OSError says which folder it could not
    create (``cannot create run folder /proc/nope/...: No such file or directory``)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = runs_root(runs_dir) / name / f"{stamp}-{secrets.token_hex(3)}"
    make_folder(path, "run folder")
    return path


def make_folder(path: Path, what: str) -> None:
    """Create the new folder ``path`` and its parents; an OSError names ``what`` it was."""
    try:
        path.mkdir(parents=True, exist_ok=False)
    except OSError as e:
        raise os_error_doing(f"cannot create {what} {path}", e) from e


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
    write_atomic(run_dir / SUMMARY, json.dumps(summary, indent=2) + "\n")


def read_summary(run_dir: Path) -> dict[str, Any]:
    data = json.loads((run_dir / SUMMARY).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


# ----- the manifest ---------------------------------------------------------------------------


def sha256_file(path: str | Path) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def module_file(module: str, folder: Path) -> str | None:
    """Where ``module`` would be imported from (with ``folder`` first), without importing it."""
    added = str(folder) not in sys.path
    if added:
        sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    finally:
        if added:
            sys.path.remove(str(folder))
    return spec.origin if spec is not None and spec.has_location else None


def git_state(folder: Path) -> dict[str, Any] | None:
    """Commit and dirty flag of the git repository holding ``folder``, if any."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(folder), *args],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status), "root": git("rev-parse", "--show-toplevel")}


def distributions() -> dict[str, str | None]:
    """Every installed distribution and its version."""
    from importlib.metadata import distributions as all_distributions

    found = {}
    for d in all_distributions():
        name, version = _name_and_version(d)
        if name:
            found[name] = version
    return dict(sorted(found.items(), key=lambda kv: kv[0].lower()))


def _name_and_version(d: Any) -> tuple[str | None, str | None]:
    # Name and Version are among the first headers of a distribution's metadata: read
    # them from the text rather than parsing it all as an email (4x faster).
    text = d.read_text("METADATA") or d.read_text("PKG-INFO") or ""
    headers = {}
    for line in text.splitlines():
        if not line:
            break  # the end of the headers
        key, _, value = line.partition(":")
        if key in ("Name", "Version"):
            headers[key] = value.strip()
            if len(headers) == 2:
                return headers["Name"], headers["Version"]
    metadata = d.metadata  # an unusual file: let the parser have it
    return metadata["Name"], metadata["Version"]


def manifest(
    *,
    spec_path: Path,
    spec_text: str,
    spec_dir: Path,
    start_method: str,
    seed: int,
    seeds: dict[str, int],
    params: dict[str, Any],
    overrides: list[str],
    targets: list[str],
) -> dict[str, Any]:
    """What a later reader needs to know about how and where the run was made."""
    from topo import __version__

    modules = sorted({t.partition(":")[0] for t in targets})
    files = {m: module_file(m, spec_dir) for m in modules}
    return {
        "topo_version": __version__,
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "start_method": start_method,
        "spec_path": str(spec_path.resolve()),
        "spec_dir": str(spec_dir),
        "spec_sha256": hashlib.sha256(spec_text.encode()).hexdigest(),
        "seed": seed,
        "seeds": seeds,
        "params": params,
        "overrides": overrides,
        "git": git_state(spec_dir),
        "targets": {
            m: {"file": f, "sha256": sha256_file(f) if f else None} for m, f in files.items()
        },
        # "distributions" is added once the run has ended (see topo.api.run): scanning
        # every installed distribution takes ~0.1 s that instances need not wait for.
        "started_at": now_iso(),
    }


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


# ----- logs and events while the run goes on ------------------------------------------------


class Recorder:
    """Appends instance log lines and events to a run directory; thread-safe.

    Creating it raises OSError (nothing has started then). Once the run goes on, a write
    that fails (a full disk, the folder gone) never raises into the supervisor or the
    output pump: the first such error is kept in ``error``, and nothing more is written.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        (run_dir / LOGS).mkdir(exist_ok=True)
        self.lock = threading.Lock()
        self.logs: dict[str, IO[str]] = {}
        self.events = open(run_dir / EVENTS, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.error: OSError | None = None

    def log(self, instance: str, line: str) -> None:
        with self.lock:
            if self.error is not None:
                return
            try:
                f = self.logs.get(instance)
                if f is None:
                    f = self.logs[instance] = open(  # noqa: SIM115 - closed in close()
                        self.run_dir / LOGS / f"{instance}.log", "a", encoding="utf-8"
                    )
                f.write(line + "\n")
                f.flush()
            except OSError as e:
                self.error = e

    def event(self, kind: str, **fields: Any) -> None:
        line = json.dumps({"time": now_iso(), "event": kind, **fields})
        with self.lock:
            if self.error is not None:
                return
            try:
                self.events.write(line + "\n")
                self.events.flush()
            except OSError as e:
                self.error = e

    def close(self) -> None:
        with self.lock:
            for f in [*self.logs.values(), self.events]:
                try:
                    f.close()  # flushes what is left: may fail as a write does
                except OSError as e:
                    self.error = self.error or e
            self.logs.clear()
