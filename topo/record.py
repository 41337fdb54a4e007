"""Run records: everything needed to understand a run later and to run it again.

``RunFolder`` is the one place that knows a record's layout: it creates the folder
before a run, is the run's log and event sink while it goes on, writes the final
``run.json`` once when it ends (whatever the ending), and loads records back as
``RunRecord``. A record is a folder ``<runs>/<name>/<YYYYmmdd-HHMMSS>-<id>/``
(``<runs>`` is ``--runs-dir``, ``$TOPO_RUNS_DIR`` or ``./runs``) holding:

- ``spec.yaml``: the spec as written; ``resolved.yaml``: with params, overrides,
  replicas and the base seed applied;
- ``run.json``: the JSON summary of the run plus a ``manifest`` (versions, machine,
  seeds, hashes of the spec and of the target modules, git state, distributions, and
  what the caller adds: the sweep a run belongs to, the run it reruns); it says
  ``running`` until the run ends, so a record never claims ``ok`` for a run that did
  not finish;
- ``logs/<instance>.log``: each instance's output; ``events.jsonl``: one timestamped
  line per start, exit, restart, failure, deadlock, timeout or signal.

``SweepFolder`` is the same for a sweep: ``<runs>/<name>/sweep-<YYYYmmdd-HHMMSS>-<id>/``
holding ``summary.csv``, ``sweep.json`` and each of its runs' folders (a sweep folder
is the runs folder of its runs: ``<sweep>/<name>/<id>/``).

Files are replaced atomically (temporary file, then rename).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.util
import json
import os
import pickle
import platform
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import yaml

from topo.errors import os_error_doing

if TYPE_CHECKING:
    from topo.resolve import Plan
    from topo.result import RunResult

RUNS_DIR_ENV = "TOPO_RUNS_DIR"
# Instance logs are flushed with the first line after this long (and at the end), not
# at every line: a kill -9 of topo can lose the last lines of a quiet spell.
LOG_FLUSH_S = 0.1
DEFAULT_RUNS_DIR = "runs"
TRACE = "trace.json"  # the run's timeline, in the Chrome Trace Event format


def runs_root(runs_dir: str | Path | None = None) -> Path:
    return Path(runs_dir or os.environ.get(RUNS_DIR_ENV) or DEFAULT_RUNS_DIR)


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


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    write_atomic(path, json.dumps(data, indent=2) + "\n")


def _new_folder(parent: Path, what: str, prefix: str = "") -> Path:
    """``<parent>/<prefix><YYYYmmdd-HHMMSS>-<6 hex digits>``, made here (never reused);
    an OSError says which ``what`` it could not create
    (``cannot create run folder /proc/nope/...: No such file or directory``)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = parent / f"{prefix}{stamp}-{secrets.token_hex(3)}"
    try:
        path.mkdir(parents=True, exist_ok=False)
    except OSError as e:
        raise os_error_doing(f"cannot create {what} {path}", e) from e
    return path


def _record_failed(result: RunResult, what: str, error: OSError) -> None:
    """The run's record could not be completed: the run fails (whatever its instances
    did), and its message says what was not written and why."""
    from topo.result import EXIT_CODES

    why = f"{what} could not be written: {error.strerror or error}"
    result.record_complete = False
    if result.ok:
        result.status, result.exit_code = "failed", EXIT_CODES["failed"]
    result.message = f"{result.message}; {why}" if result.message else why


# ----- one run's folder -----------------------------------------------------------------------


class RunFolder:
    """A run's record folder: its layout, its making, its sinks while the run goes on,
    its final ``run.json``, and reading it back (``load``).

    ``create`` makes the folder with the spec copies and a first ``run.json`` saying
    ``running``; ``log`` and ``event`` are the run's sinks (thread-safe); ``finish``
    writes the final ``run.json`` once, from the run's result or from the exception
    that ended it.
    """

    SUMMARY = "run.json"
    SPEC = "spec.yaml"
    RESOLVED = "resolved.yaml"
    LOGS = "logs"
    EVENTS = "events.jsonl"
    UNDELIVERED = "undelivered"  # <channel>.pickle: what was left in it, as a list
    ID = re.compile(r"(\d{8}-\d{6})-([0-9a-f]+)")  # the folder's name: <stamp>-<hex id>

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._logs: dict[str, IO[str]] = {}
        self._events: IO[str] | None = None
        self._summary: dict[str, Any] | None = None  # while recording: the running run.json
        # The first write that failed while the run went on (a full disk, the folder gone):
        # the sinks never raise into the supervisor or the output pump; finish() says it.
        self.error: OSError | None = None
        self._started = time.monotonic()
        self._flush_due = 0.0  # when the logs are flushed next

    # ----- the layout ----------------------------------------------------------------------

    @property
    def summary_file(self) -> Path:
        return self.path / self.SUMMARY

    @property
    def spec_file(self) -> Path:
        return self.path / self.SPEC

    @property
    def resolved_file(self) -> Path:
        return self.path / self.RESOLVED

    @property
    def logs_dir(self) -> Path:
        return self.path / self.LOGS

    def log_file(self, instance: str) -> Path:
        return self.logs_dir / f"{instance}.log"

    @property
    def events_file(self) -> Path:
        return self.path / self.EVENTS

    def undelivered_file(self, channel: str) -> Path:
        return self.path / self.UNDELIVERED / f"{channel}.pickle"

    def load_undelivered(self) -> dict[str, list[Any]]:
        """What was left in each channel at the end of the run; a message that could not
        be read back is a ``topo.RawItem`` (its bytes and why)."""
        folder = self.path / self.UNDELIVERED
        if not folder.is_dir():
            return {}
        return {f.stem: pickle.loads(f.read_bytes()) for f in sorted(folder.glob("*.pickle"))}

    def _save_undelivered(self, leftovers: Mapping[str, list[Any]]) -> None:
        from topo.result import RawItem

        for channel, items in leftovers.items():
            try:
                data = pickle.dumps(items)
            except Exception:  # one item that cannot be pickled again: keep the others
                kept = []
                for item in items:
                    try:
                        pickle.dumps(item)
                        kept.append(item)
                    except Exception as e:
                        kept.append(RawItem(b"", f"{type(item).__name__}: {e}"))
                data = pickle.dumps(kept)
            path = self.undelivered_file(channel)
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(data)

    @classmethod
    def is_run(cls, path: str | Path) -> bool:
        """Whether ``path`` is a run's folder (it has a ``run.json``)."""
        return (Path(path) / cls.SUMMARY).is_file()

    @classmethod
    def hex_id(cls, run_id: str) -> str:
        """``20240501-120000-3fa2c1`` -> ``3fa2c1`` (another name is returned as it is)."""
        m = cls.ID.fullmatch(run_id)
        return m.group(2) if m else run_id

    @classmethod
    def stamp(cls, run_id: str) -> str:
        """``20240501-120000-3fa2c1`` -> ``20240501-120000``: sorts as the start time."""
        m = cls.ID.fullmatch(run_id)
        return m.group(1) if m else run_id

    # ----- before the run ------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        plan: Plan,
        runs_dir: str | Path | None = None,
        *,
        extra: Mapping[str, Any] | None = None,
    ) -> RunFolder:
        """A new folder ``<runs>/<plan.name>/<stamp>-<id>/`` for a run of ``plan``, with
        the spec as written and resolved and a ``run.json`` saying ``running``.

        ``extra`` keys go into the manifest (``sweep``, ``rerun_of``): known before the
        run, they are in its record from the start. Raises an OSError that names the
        folder when it cannot be made (and then leaves nothing behind).
        """
        folder = cls(_new_folder(runs_root(runs_dir) / plan.name, "run folder"))
        try:
            folder._start(plan, extra)
        except OSError as e:
            folder._close()
            shutil.rmtree(folder.path, ignore_errors=True)  # nothing started: no half record
            raise os_error_doing(f"cannot write the run record in {folder.path}", e) from e
        return folder

    def _start(self, plan: Plan, extra: Mapping[str, Any] | None) -> None:
        from topo.resolve import resolved_spec

        folder = self
        info = manifest(
            spec_path=Path(plan.document.path),
            spec_text=plan.document.text,
            spec_dir=plan.spec_dir,
            start_method=plan.spec.start_method,
            seed=plan.seed,
            seeds={i.name: i.seed for i in plan.instances},
            params=dict(plan.params),
            overrides=list(plan.overrides),
            targets=[i.target for i in plan.instances],
        )
        if plan.document.files:  # composed: spec.yaml is the spec the files made together
            info["spec_files"] = [str(Path(f).resolve()) for f in plan.document.files]
        info.update(extra or {})
        write_atomic(folder.spec_file, plan.document.text)
        write_atomic(folder.resolved_file, yaml.safe_dump(resolved_spec(plan), sort_keys=False))
        folder._summary = {
            "name": plan.name,
            "status": "running",
            "exit_code": None,
            "seed": plan.seed,
            "params": dict(plan.params),
            "run_dir": str(folder.path),
            "manifest": info,
        }
        _write_json(folder.summary_file, folder._summary)
        folder.logs_dir.mkdir()
        folder._events = open(folder.events_file, "a", encoding="utf-8")  # noqa: SIM115 - closed in finish()

    # ----- while the run goes on -----------------------------------------------------------

    def log(self, instance: str, line: str) -> None:
        """One line of an instance's output, to ``logs/<instance>.log``."""
        with self._lock:
            if self._events is None:
                raise RuntimeError(f"{self.path} is not being recorded")
            if self.error is not None:
                return
            try:
                f = self._logs.get(instance)
                if f is None:
                    f = self._logs[instance] = open(  # noqa: SIM115 - closed in finish()
                        self.log_file(instance), "a", encoding="utf-8"
                    )
                f.write(line + "\n")
                now = time.monotonic()
                if now >= self._flush_due:  # not at every line: a loud instance prints
                    self._flush_due = now + LOG_FLUSH_S  # 100,000s of them a second
                    for log in self._logs.values():
                        log.flush()
            except OSError as e:
                self.error = e

    def event(self, kind: str, **fields: Any) -> None:
        """One timestamped line of ``events.jsonl``."""
        line = json.dumps({"time": now_iso(), "event": kind, **fields})
        with self._lock:
            if self._events is None:
                raise RuntimeError(f"{self.path} is not being recorded")
            if self.error is not None:
                return
            try:
                self._events.write(line + "\n")
                self._events.flush()
            except OSError as e:
                self.error = e

    # ----- after the run -------------------------------------------------------------------

    def finish(
        self,
        result: RunResult | None = None,
        *,
        error: BaseException | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Close the sinks and write the final ``run.json``, once; return it.

        From ``result`` when the run ended, else from the ``error`` that ended it: status
        ``failed`` (``interrupted`` for a KeyboardInterrupt) with the error as message,
        also told in ``events.jsonl``. ``extra`` keys go into the manifest, with the
        installed distributions (scanned now: instances need not wait for it).
        """
        if self._summary is None:
            raise RuntimeError(f"{self.path} was not created by this RunFolder, or is finished")
        if result is None:
            result = self._failed(error)
            self.event(result.status, message=result.message)
        self._close()
        if self.error is not None:
            _record_failed(result, f"the logs and events in {self.path}", self.error)
        if result.trace is not None:
            try:
                write_atomic(self.path / TRACE, json.dumps(result.trace, separators=(",", ":")))
            except OSError as e:
                _record_failed(result, str(self.path / TRACE), e)
        if result.leftovers:
            try:
                self._save_undelivered(result.leftovers)
            except OSError as e:
                _record_failed(result, str(self.path / self.UNDELIVERED), e)
        info = dict(self._summary["manifest"])
        info.update(extra or {})
        info["distributions"] = distributions()
        self._summary = None
        try:
            _write_json(self.summary_file, {**result.to_json(), "manifest": info})
        except OSError as e:
            _record_failed(result, str(self.summary_file), e)
        return {**result.to_json(), "manifest": info}

    def _failed(self, error: BaseException | None) -> RunResult:
        from topo.result import RunResult

        assert self._summary is not None
        interrupted = isinstance(error, KeyboardInterrupt)
        if error is None:
            message = "topo error: the run ended without a result"
        elif interrupted:
            message = "interrupted"
        else:
            message = f"topo error: {type(error).__name__}: {error}"
        return RunResult(
            self._summary["name"],
            "interrupted" if interrupted else "failed",
            self._summary["seed"],
            self._summary["params"],
            run_dir=str(self.path),
            duration_s=time.monotonic() - self._started,
            message=message,
        )

    def _close(self) -> None:
        with self._lock:
            for f in [*self._logs.values(), *([self._events] if self._events else [])]:
                try:
                    f.close()  # flushes what is left: may fail as a write does
                except OSError as e:
                    self.error = self.error or e
            self._logs.clear()
            self._events = None

    def mark_killed(self) -> None:
        """Say in ``run.json`` that topo was killed before it could finish the record
        (called by topo's guardian, which outlives it); a finished record is left be."""
        summary = json.loads(self.summary_file.read_text(encoding="utf-8"))
        if summary.get("status") != "running":
            return
        message = (
            "topo was killed before the run ended (SIGKILL?): its guardian stopped what "
            "the instances had started and freed the run's shared memory"
        )
        summary.update(status="killed", exit_code=137, message=message)
        with open(self.events_file, "a", encoding="utf-8") as events:
            events.write(json.dumps({"time": now_iso(), "event": "killed", "message": message}))
            events.write("\n")
        _write_json(self.summary_file, summary)

    # ----- reading it back -----------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> RunRecord:
        """The record in ``path``; raises OSError or ValueError when it has no readable
        ``run.json``."""
        path = Path(path)
        data = json.loads((path / cls.SUMMARY).read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path / cls.SUMMARY} does not hold a JSON object")
        return RunRecord(path, data)


@dataclass(frozen=True)
class RunRecord:
    """A recorded run as read back: its folder and its ``run.json``."""

    path: Path
    summary: dict[str, Any]

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.path)

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def name(self) -> str:
        return str(self.summary.get("name") or self.path.parent.name)

    @property
    def status(self) -> str:
        return str(self.summary.get("status", "unknown"))

    @property
    def manifest(self) -> dict[str, Any]:
        m = self.summary.get("manifest")
        return m if isinstance(m, dict) else {}

    @property
    def started_at(self) -> str:
        return str(self.manifest.get("started_at") or "")

    @property
    def duration_s(self) -> float | None:
        d = self.summary.get("duration_s")
        return float(d) if isinstance(d, int | float) else None

    @property
    def params(self) -> dict[str, Any]:
        p = self.summary.get("params")
        return p if isinstance(p, dict) else {}

    @property
    def sweep(self) -> str | None:
        """The sweep folder's name when the run is part of a sweep."""
        parent = self.path.parent.parent
        return parent.name if SweepFolder.is_sweep_name(parent.name) else None

    @property
    def in_progress(self) -> bool:
        """Still running: its record says so and the topo that writes it is alive here."""
        pid = self.manifest.get("pid")
        if self.status != "running" or not isinstance(pid, int):
            return False
        if self.manifest.get("host") not in (None, socket.gethostname()):
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # alive, someone else's
        return True

    def sort_key(self) -> tuple[str, str]:
        return (self.started_at, RunFolder.stamp(self.id))

    def spec_defaults(self) -> dict[str, Any] | None:
        """The params of ``spec.yaml`` as written (interpolated, without overrides).

        None when the file cannot be read."""
        from topo.errors import SpecError
        from topo.resolve import prepare_document
        from topo.yamlpos import load_path

        path = self.folder.spec_file
        source = self.manifest.get("rerun_of")
        if isinstance(source, dict):
            # a rerun ran the resolved spec: its defaults are those of the spec it reran
            original = RunFolder(str(source.get("run_dir"))).spec_file
            if original.is_file():
                path = original
        try:
            doc = load_path(path)
        except SpecError:
            return None
        try:
            data = prepare_document(doc).data
        except SpecError:
            data = doc.data  # e.g. an ${env.X} unset now: compare with the text as written
        params = data.get("params") if isinstance(data, dict) else None
        return params if isinstance(params, dict) else {}


# ----- a sweep's folder -----------------------------------------------------------------------


class SweepFolder:
    """A sweep's folder: the runs folder of its runs, with ``summary.csv`` and
    ``sweep.json`` beside them."""

    PREFIX = "sweep-"
    SUMMARY = "summary.csv"
    JSON = "sweep.json"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, name: str, runs_dir: str | Path | None = None) -> SweepFolder:
        """A new folder ``<runs>/<name>/sweep-<stamp>-<id>/``."""
        return cls(_new_folder(runs_root(runs_dir) / name, "sweep folder", cls.PREFIX))

    @classmethod
    def is_sweep_name(cls, name: str) -> bool:
        return name.startswith(cls.PREFIX)

    @property
    def summary_file(self) -> Path:
        return self.path / self.SUMMARY

    @property
    def json_file(self) -> Path:
        return self.path / self.JSON

    def save(self, csv_text: str, doc: Mapping[str, Any]) -> None:
        """Replace ``summary.csv`` and ``sweep.json``."""
        write_atomic(self.summary_file, csv_text)
        _write_json(self.json_file, doc)


def records_under(runs_dir: str | Path | None = None) -> Iterator[RunRecord]:
    """Every readable run record under the runs folder, sweeps' runs included (in no
    particular order)."""
    root = runs_root(runs_dir)
    patterns = [
        f"*/*/{RunFolder.SUMMARY}",  # <name>/<id>/
        f"*/{SweepFolder.PREFIX}*/*/*/{RunFolder.SUMMARY}",  # <name>/sweep-<id>/<name>/<id>/
    ]
    for pattern in patterns:
        for summary in root.glob(pattern):
            try:
                yield RunFolder.load(summary.parent)
            except (OSError, ValueError):
                continue


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
        "pid": os.getpid(),  # topo's own: `topo ps` tells a run in progress from a lost one
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
        # "distributions" is added once the run has ended (see RunFolder.finish): scanning
        # every installed distribution takes ~0.1 s that instances need not wait for.
        "started_at": now_iso(),
    }


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
