"""Experiments over run records: sweeps, finding and listing runs, rerunning, comparing.

Everything here works on the run and sweep folders of ``topo.record`` (``RunFolder``,
``SweepFolder``: the only code that knows their layout); nothing prints, the CLI does.

- ``expand_sweep`` turns ``--sweep params.workers=1,2,4`` axes into the cartesian
  product of ``--set`` overrides; ``run_sweep`` runs the points one after another
  inside one sweep directory and writes ``summary.csv``.
- ``list_runs`` and ``find_run`` read the records under a runs folder; a run is named
  by a path, an id prefix, ``last`` or ``last~N``.
- ``changed_params`` says which params of a run differ from its spec's defaults.
- ``rerun`` runs a record's resolved spec again with the same seeds; ``code_changes``
  says how the code differs from what the record saw.
- ``compare`` lines two runs up field by field.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import re
import statistics
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from topo import record as records
from topo.errors import RunError, SpecError, UsageError, os_error_text, outcome_document
from topo.jsonable import to_jsonable
from topo.record import RunFolder, RunRecord, SweepFolder
from topo.resolve import (
    Override,
    Overrides,
    adds_a_key,
    is_single_value,
    override_items,
    override_path_problem,
    override_text,
    read_override,
    scalar_text,
    yaml_scalar,
)
from topo.result import EXIT_CODES, RunResult

_LAST = re.compile(r"last(?:~(\d+))?")


class RunNotFound(UsageError):
    """A RUN reference (path, id prefix, ``last``) names no run, or more than one."""


# ----- sweeps -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Axis:
    """One ``--sweep key=v1,v2,...``: a dotted key and the values it takes, in order."""

    key: str
    values: tuple[Any, ...]


def parse_axis(text: str) -> Axis:
    """``params.workers=1,2,4`` -> Axis("params.workers", (1, 2, 4)).

    Values are YAML scalars, read as ``--set`` reads its value (``yaml_scalar``); a value
    list written as a YAML flow sequence (``params.mode=[a, "b,c"]``) may hold commas
    inside quoted values.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or not raw.strip():
        raise UsageError(f"--sweep {text!r} is not of the form dotted.key=value1,value2,...")
    if raw.strip().startswith("["):
        try:
            values = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise UsageError(f"--sweep {text!r}: the value list is not valid YAML") from None
    else:
        values = [yaml_scalar(part.strip()) for part in raw.split(",")]
    if not isinstance(values, list) or not values:
        raise UsageError(f"--sweep {text!r}: give at least one value")
    for v in values:
        if not is_single_value(v):
            raise UsageError(f"--sweep {text!r}: each value must be a single value")
    return Axis(key, tuple(values))


def format_value(value: Any) -> str:
    """A value as ``--set`` would read it back (YAML scalar text); JSON for a list or
    mapping (a param shown by ``topo runs`` and ``topo show``)."""
    return scalar_text(value) if is_single_value(value) else json.dumps(value)


def expand_sweep(axes: Iterable[Axis | str]) -> list[dict[str, Any]]:
    """The cartesian product of the axes, the last axis varying fastest.

    Each point maps every axis key to one of its values; no axes give one empty point.
    """
    parsed = [a if isinstance(a, Axis) else parse_axis(a) for a in axes]
    seen: set[str] = set()
    for a in parsed:
        if a.key in seen:
            raise UsageError(f"--sweep {a.key} is given twice; put all its values in one")
        seen.add(a.key)
    keys = [a.key for a in parsed]
    return [
        dict(zip(keys, combo, strict=True))
        for combo in itertools.product(*(a.values for a in parsed))
    ]


def point_overrides(point: Mapping[str, Any]) -> list[str]:
    """A sweep point as ``key=value`` texts that read back as its values."""
    return [override_text(item) for item in point.items()]


_NOT_MEASURES = ("run", "repeat", "seed", "status", "run_dir")


def _number(text: str) -> float | None:
    """A reported value as a number, if it is one (not a bool, not NaN)."""
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return None
    return float(value)


@dataclass(frozen=True)
class Measure:
    """One reported number over a point's repeats."""

    mean: float
    std: float  # of the sample (n - 1); 0 for one value
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, numbers: list[float]) -> Measure:
        std = statistics.stdev(numbers) if len(numbers) > 1 else 0.0
        return cls(statistics.fmean(numbers), std, min(numbers), max(numbers), len(numbers))

    def text(self) -> str:
        """``1.25 ± 0.03 [1.21, 1.29]``: numbers kept whole, to 4 significant digits."""
        return f"{self.mean:.4g} ± {self.std:.2g} [{self.min:.4g}, {self.max:.4g}]"


@dataclass(frozen=True)
class PointStats:
    """A sweep point's measures over its repeats that ended ok."""

    point: dict[str, str]
    ok: int  # how many of its repeats ended ok
    measures: dict[str, Measure]

    def to_json(self) -> dict[str, Any]:
        return {
            "point": self.point,
            "ok": self.ok,
            "measures": {k: asdict(m) for k, m in self.measures.items()},
        }


@dataclass
class SweepRun:
    """One run of a sweep: its point, repeat index and seed, and how it went."""

    index: int
    point: dict[str, Any]
    repeat: int
    seed: int | None
    result: RunResult | None = None
    invalid: SpecError | None = None

    @property
    def status(self) -> str:
        return "invalid" if self.result is None else self.result.status

    @property
    def exit_code(self) -> int:
        if self.result is None:
            return EXIT_CODES["invalid"]
        return self.result.exit_code or 0

    def to_json(self, name: str | None = None) -> dict[str, Any]:
        """The run's ``topo run --json`` document (for an invalid point, the "invalid"
        document of ``outcome_document`` with the point's seed), plus point and repeat."""
        data: dict[str, Any] = {"index": self.index, "point": self.point, "repeat": self.repeat}
        if self.result is not None:
            data.update(self.result.to_json())
        else:
            diagnostics = self.invalid.diagnostics if self.invalid is not None else []
            data.update(outcome_document(name, "invalid", self.exit_code, diagnostics))
            data["seed"] = self.seed
        return data


@dataclass
class Sweep:
    """A whole sweep: where it is recorded, its axes and every run made so far."""

    name: str
    sweep_dir: Path
    axes: list[Axis]
    repeat: int
    seeds: str  # "base+repeat": seed = base seed + repeat index; "fresh": a new one each run
    base_seed: int | None
    report: list[str] = field(default_factory=list)
    runs: list[SweepRun] = field(default_factory=list)
    spec: str = ""  # the spec file it was made from, the files laid over it (-f), and
    files: list[str] = field(default_factory=list)  # the --set texts of every point
    overrides: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, sweep_dir: Path) -> Sweep:
        """A recorded sweep, from its sweep.json (``UsageError`` if there is none, or it
        predates the keys a rerun needs)."""
        path = sweep_dir / SweepFolder.JSON
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UsageError(f"{sweep_dir} holds no readable sweep.json: {e}") from None
        if not data.get("spec"):
            raise UsageError(f"{path} does not say which spec made the sweep: run it again")
        runs: list[SweepRun] = []
        for doc in data.get("runs", []):
            index = int(doc.get("index") or len(runs) + 1)
            entry = SweepRun(index, doc["point"], doc["repeat"], doc.get("seed"))
            if doc.get("status") != "invalid":
                entry.result = RunResult.from_json(doc)
            runs.append(entry)
        return cls(
            name=data["name"],
            sweep_dir=sweep_dir,
            axes=[Axis(k, tuple(v)) for k, v in data["axes"].items()],
            repeat=data["repeat"],
            seeds=data["seeds"],
            base_seed=data.get("base_seed"),
            report=list(data.get("report", [])),
            runs=runs,
            spec=data["spec"],
            files=list(data.get("files", [])),
            overrides=list(data.get("overrides", [])),
        )

    @property
    def exit_code(self) -> int:
        """0 when every run is ok, else the first failing run's exit code."""
        return next((r.exit_code for r in self.runs if r.exit_code != 0), 0)

    @property
    def status(self) -> str:
        return next((r.status for r in self.runs if r.exit_code != 0), "ok")

    def table(self) -> tuple[list[str], list[list[str]]]:
        """The summary: header and rows of text (what summary.csv holds)."""
        keys = [a.key for a in self.axes]
        rows = []
        for r in self.runs:
            row: dict[str, str] = {"run": str(r.index)}
            row.update({k: format_value(r.point[k]) for k in keys})
            if self.repeat > 1:
                row["repeat"] = str(r.repeat)
            row["seed"] = "" if r.seed is None else str(r.seed)
            row["status"] = r.status
            duration = r.result.duration_s if r.result is not None else 0.0
            row["duration_s"] = f"{duration:.3f}"
            if r.result is not None:
                row.update(reported(r.result.processes, self.report))
            row["run_dir"] = (r.result.run_dir or "") if r.result is not None else ""
            rows.append(row)
        header: list[str] = []
        for row in rows:
            header += [c for c in row if c not in header]
        # run_dir last, whatever the report columns are
        if "run_dir" in header:
            header.remove("run_dir")
            header.append("run_dir")
        return header, [[row.get(c, "") for c in header] for row in rows]

    def statistics(self) -> list[PointStats]:
        """Per sweep point, over its repeats that ended ok: mean, standard deviation
        (of the sample, n - 1), min and max of every number reported (the run's
        duration, and each ``--report`` column that holds a number)."""
        header, rows = self.table()
        keys = [a.key for a in self.axes]
        numeric = [c for c in header if c == "duration_s" or c not in _NOT_MEASURES + tuple(keys)]
        points: dict[tuple[str, ...], list[dict[str, str]]] = {}
        for row in rows:
            values = dict(zip(header, row, strict=True))
            if values["status"] == "ok":
                points.setdefault(tuple(values[k] for k in keys), []).append(values)
        out = []
        for point, runs in points.items():
            measures: dict[str, Measure] = {}
            for column in numeric:
                numbers = [n for n in (_number(r.get(column, "")) for r in runs) if n is not None]
                if numbers:
                    measures[column] = Measure.of(numbers)
            out.append(PointStats(dict(zip(keys, point, strict=True)), len(runs), measures))
        return out

    def csv_text(self) -> str:
        header, rows = self.table()
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        return out.getvalue()

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "exit_code": self.exit_code,
            "sweep_dir": str(self.sweep_dir),
            "axes": {a.key: list(a.values) for a in self.axes},
            "repeat": self.repeat,
            "seeds": self.seeds,
            "base_seed": self.base_seed,
            "report": self.report,
            "spec": self.spec,
            "files": self.files,
            "overrides": self.overrides,
            "runs": [r.to_json(self.name) for r in self.runs],
            **({"statistics": [s.to_json() for s in self.statistics()]} if self.repeat > 1 else {}),
        }

    def save(self) -> None:
        """Replace the sweep folder's summary.csv and sweep.json; ``RunError`` if they
        cannot be written (a run has been made by then)."""
        try:
            SweepFolder(self.sweep_dir).save(self.csv_text(), self.to_json())
        except OSError as e:
            raise RunError(f"cannot write the sweep's summary: {os_error_text(e)}") from e


def reported(processes: Mapping[str, Any], names: Iterable[str]) -> dict[str, str]:
    """Result columns for ``--report``: a process name gives every instance of it.

    A mapping result is spread over one column per key (``collector.sum``); other
    results are one column of JSON text.
    """
    columns: dict[str, str] = {}
    for name in names:
        instances = [
            i for i in processes if i == name or (i.startswith(name + "[") and i.endswith("]"))
        ]
        for instance in instances:
            r = processes[instance]
            value = r.result if hasattr(r, "result") else r.get("result")
            columns.update(_flatten(instance, value))
    return columns


def _flatten(prefix: str, value: Any) -> dict[str, str]:
    if isinstance(value, dict) and value:
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(_flatten(f"{prefix}.{k}", v))
        return out
    if isinstance(value, str):
        return {prefix: value}
    return {prefix: json.dumps(value)}


def run_sweep(
    spec: str | Path,
    axes: Iterable[Axis | str],
    overrides: Overrides = (),
    *,
    repeat: int = 1,
    seed: int | None = None,
    runs_dir: str | Path | None = None,
    keep_going: bool = False,
    report: Iterable[str] = (),
    run: Callable[..., RunResult] | None = None,
    on_start: Callable[[Sweep, SweepRun, int], None] | None = None,
    on_end: Callable[[Sweep, SweepRun], None] | None = None,
    files: Iterable[str | Path] = (),
    jobs: int = 1,
) -> Sweep:
    """Run every point of the sweep (``repeat`` times each), ``jobs`` at a time (then
    ``run`` is called from as many threads: ``in_subprocesses`` makes one that can be).

    Each run is recorded in its own run directory under one sweep directory
    ``<runs>/<name>/sweep-<stamp>-<id>/``, which also receives ``summary.csv`` and
    ``sweep.json`` (rewritten after every run, so they are complete whenever it stops).
    Stops after the first run that is not ok unless ``keep_going``; an interrupted run
    (Ctrl-C, SIGTERM) always stops the sweep. Raises ``SpecError`` when the spec with
    the base overrides is invalid, ``UsageError`` (a ValueError) for a bad axis, and
    ``OSError`` when the sweep folder cannot be created, before anything runs.
    ``run`` is ``topo.api.run`` (replaceable in tests), called as ``run(plan,
    runs_dir=sweep_dir, manifest_extra={"sweep": ...})``; ``on_start(sweep, run, total)``
    and ``on_end(sweep, run)`` report progress.
    """
    from topo import api

    run_fn = run or api.run
    if repeat < 1:
        raise UsageError(f"--repeat must be at least 1, not {repeat}")
    parsed = [a if isinstance(a, Axis) else parse_axis(a) for a in axes]
    points = expand_sweep(parsed)
    base = override_items(overrides)
    laid = [str(Path(f).resolve()) for f in files]  # laid over the spec, as -f files
    plan = api.load(spec, base, seed=seed, files=laid)  # its name, and whether it has a seed
    for axis in parsed:  # a misspelled axis would run every point with the same value
        problem = (
            None
            if adds_a_key(axis.key)
            else override_path_problem(
                plan.document.data, read_override((axis.key, axis.values[0]))[0]
            )
        )
        if problem:
            raise UsageError(f"--sweep {axis.key}: {problem}")
    base_seed = seed if seed is not None else plan.spec.seed
    sweep = Sweep(
        name=plan.name,
        sweep_dir=SweepFolder.create(plan.name, runs_dir).path,
        axes=parsed,
        repeat=repeat,
        seeds="fresh" if base_seed is None else "base+repeat",
        base_seed=base_seed,
        report=list(report),
    )
    sweep.spec = str(Path(spec).resolve())
    sweep.files = laid
    sweep.overrides = [override_text(item) for item in base]
    entries = [
        SweepRun(i + 1, point, r, None if base_seed is None else base_seed + r)
        for i, (point, r) in enumerate(itertools.product(points, range(repeat)))
    ]
    _run_entries(sweep, entries, run_fn, keep_going, on_start, on_end, jobs)
    return sweep


def _run_entries(
    sweep: Sweep,
    entries: list[SweepRun],
    run_fn: Callable[..., RunResult],
    keep_going: bool,
    on_start: Callable[[Sweep, SweepRun, int], None] | None,
    on_end: Callable[[Sweep, SweepRun], None] | None,
    jobs: int = 1,
) -> None:
    """Run ``entries`` into ``sweep`` (each replaces the run of the same index, if any),
    ``jobs`` at a time, saving the summary after each; stop as ``run_sweep`` says (with
    ``jobs`` > 1, the runs already started finish)."""
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

    from topo import api

    total = len(expand_sweep(sweep.axes)) * sweep.repeat
    queued = iter(entries)
    pending: dict[Future[RunResult], SweepRun] = {}
    stop = False

    def finished(entry: SweepRun) -> None:
        nonlocal stop
        sweep.save()
        if on_end is not None:
            on_end(sweep, entry)
        if entry.status == "interrupted" or (entry.exit_code != 0 and not keep_going):
            stop = True

    def start_next(pool: ThreadPoolExecutor | None) -> bool:
        entry = next(queued, None)
        if entry is None:
            return False
        sweep.runs = sorted(
            [r for r in sweep.runs if r.index != entry.index] + [entry], key=lambda r: r.index
        )
        if on_start is not None:
            on_start(sweep, entry, total)
        in_sweep = {
            "dir": str(sweep.sweep_dir),
            "index": entry.index,
            "point": entry.point,
            "repeat": entry.repeat,
            "seeds": sweep.seeds,
        }
        sets: list[Override] = [*sweep.overrides, *entry.point.items()]  # values as they are
        try:
            point_plan = api.load(sweep.spec, sets, seed=entry.seed, files=sweep.files)
        except SpecError as e:
            entry.invalid = e
            finished(entry)
            return True
        entry.seed = point_plan.seed
        options = {"runs_dir": sweep.sweep_dir, "manifest_extra": {"sweep": in_sweep}}
        if pool is None:
            entry.result = run_fn(point_plan, **options)
            finished(entry)
        else:
            pending[pool.submit(run_fn, point_plan, **options)] = entry
        return True

    if jobs <= 1:
        while not stop and start_next(None):
            pass
        return
    with ThreadPoolExecutor(jobs, thread_name_prefix="topo-sweep") as pool:
        while True:
            while not stop and len(pending) < jobs and start_next(pool):
                pass
            if not pending:
                return
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                entry = pending.pop(future)
                entry.result = future.result()
                finished(entry)


class in_subprocesses:
    """A ``run`` for ``run_sweep(jobs=N)``: each point is its own ``topo run`` process
    (a supervisor owns its process's signals, so runs in parallel need one each), quiet,
    its JSON read back. A Ctrl-C reaches them with topo (one process group); a SIGTERM
    to topo is passed on."""

    def __init__(self, *options: str) -> None:
        self.options = list(options)  # --no-watch, --backend X...
        self.running: set[Any] = set()
        self.lock = threading.Lock()

    def __call__(
        self, plan: Any, *, runs_dir: Path, manifest_extra: Mapping[str, Any]
    ) -> RunResult:
        import subprocess
        import sys

        argv = [sys.executable, "-m", "topo", "run", plan.document.path, "-q", "--json"]
        for extra in plan.document.files[1:]:
            argv += ["-f", extra]
        for text in plan.overrides:
            argv += ["--set", text]
        argv += ["--seed", str(plan.seed), "--runs-dir", str(runs_dir), *self.options]
        argv += ["--sweep-entry", json.dumps(to_jsonable(manifest_extra["sweep"]))]
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with self.lock:
            self.running.add(child)
        try:
            out, err = child.communicate()
        finally:
            with self.lock:
                self.running.discard(child)
        try:
            return RunResult.from_json(json.loads(out))
        except (ValueError, KeyError):
            why = (err.strip().splitlines() or ["no output"])[-1]
            return RunResult(plan.name, "failed", plan.seed, dict(plan.params), message=why)

    def stop(self, signum: int) -> None:
        with self.lock:
            for child in self.running:
                with contextlib.suppress(OSError):
                    child.send_signal(signum)


def rerun_failed(
    sweep_dir: str | Path,
    *,
    keep_going: bool = True,
    run: Callable[..., RunResult] | None = None,
    on_start: Callable[[Sweep, SweepRun, int], None] | None = None,
    on_end: Callable[[Sweep, SweepRun], None] | None = None,
) -> Sweep:
    """Run again the points of a recorded sweep that did not end ok, and those it never
    reached (it stopped at a failure): into the same sweep folder, with their numbers
    and seeds (a fresh-seeded sweep draws anew for a point that never ran), from the
    spec the sweep was made from. summary.csv and sweep.json then tell the whole sweep.
    ``UsageError`` when the folder holds no sweep this can rerun."""
    from topo import api

    sweep = Sweep.load(Path(sweep_dir))
    done = {r.index: r for r in sweep.runs}
    points = itertools.product(expand_sweep(sweep.axes), range(sweep.repeat))
    entries = []
    for i, (point, r) in enumerate(points):
        before = done.get(i + 1)
        if before is not None and before.status == "ok":
            continue
        if before is not None:
            seed = before.seed
        else:
            seed = None if sweep.base_seed is None else sweep.base_seed + r
        entries.append(SweepRun(i + 1, point, r, seed))
    _run_entries(sweep, entries, run or api.run, keep_going, on_start, on_end)
    return sweep


# ----- finding runs -----------------------------------------------------------------------


def find_sweep(ref: str | Path, runs_dir: str | Path | None = None) -> Path:
    """The sweep folder named by ``ref``: its path, ``last`` (the latest sweep), or a
    unique prefix of its name (``sweep-20261201-080449``) or of its id (``1b5ab5``)."""
    path = Path(ref)
    if (path / SweepFolder.JSON).is_file():
        return path
    found = sorted(
        (d for d in records.runs_root(runs_dir).glob(f"*/{SweepFolder.PREFIX}*") if d.is_dir()),
        key=lambda d: d.name,
    )
    if str(ref) == "last":
        if not found:
            raise UsageError(f"no sweep recorded under {records.runs_root(runs_dir)}")
        return found[-1]
    text = str(ref)
    matches = [
        d for d in found if d.name.startswith(text) or d.name.rsplit("-", 1)[-1].startswith(text)
    ]
    if len(matches) != 1:
        what = "no sweep" if not matches else f"{len(matches)} sweeps"
        raise UsageError(f"{what} under {records.runs_root(runs_dir)} match {text!r}")
    return matches[0]


def list_runs(runs_dir: str | Path | None = None, *, name: str | None = None) -> list[RunRecord]:
    """Every recorded run under the runs folder (sweeps included), oldest first."""
    found = [r for r in records.records_under(runs_dir) if name is None or r.name == name]
    return sorted(found, key=RunRecord.sort_key)


def runs_in_progress(runs_dir: str | Path | None = None) -> list[RunRecord]:
    """The recorded runs whose topo is still running on this machine, oldest first."""
    return [r for r in list_runs(runs_dir) if r.in_progress]


def follow_logs(
    rec: RunRecord,
    instances: Iterable[str],
    out: Callable[[str, str], None],
    *,
    follow: bool = False,
    poll_s: float = 0.2,
) -> None:
    """Every line of the instances' logs, as ``out(instance, line)``: what is there now,
    and with ``follow`` what comes next until the run is no longer in progress."""
    import time as _time

    folder = rec.folder
    offsets: dict[str, int] = {}
    partial: dict[str, str] = {}

    def read_new() -> None:
        for name in instances:
            path = folder.log_file(name)
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    f.seek(offsets.get(name, 0))
                    text = partial.pop(name, "") + f.read()
                    offsets[name] = f.tell()
            except OSError:
                continue
            *lines, rest = text.split("\n")
            if rest:
                partial[name] = rest
            for line in lines:
                out(name, line)

    def in_progress() -> bool:
        try:
            return RunFolder.load(rec.path).in_progress
        except (OSError, ValueError):
            return False

    read_new()
    while follow and in_progress():
        _time.sleep(poll_s)
        read_new()
    read_new()
    for name, rest in partial.items():  # the last line, without its newline
        out(name, rest)


def find_run(ref: str | Path, runs_dir: str | Path | None = None) -> RunRecord:
    """The run named by ``ref``: a run directory (or its run.json), ``last``, ``last~N``
    (the one N before the last), or a unique prefix of a run id (the folder name
    ``20240501-120000-3fa2c1``, or its hex part ``3fa2c1``)."""
    text = str(ref)
    path = Path(text)
    if path.name == RunFolder.SUMMARY and path.is_file():
        path = path.parent
    if RunFolder.is_run(path):
        try:
            return RunFolder.load(path)
        except (OSError, ValueError):
            raise RunNotFound(
                f"{RunFolder(path).summary_file} is not a readable run record"
            ) from None
    root = records.runs_root(runs_dir)
    runs = list_runs(runs_dir)
    if m := _LAST.fullmatch(text):
        back = int(m.group(1) or 0)
        if back >= len(runs):
            have = f"only {len(runs)} run(s)" if runs else "no runs"
            raise RunNotFound(f"{text!r}: there are {have} under {root}")
        return runs[-1 - back]
    if not text or "/" in text or path.exists():
        raise RunNotFound(f"{text!r} is not a run directory (it has no {RunFolder.SUMMARY})")
    matches = [r for r in runs if r.id.startswith(text) or RunFolder.hex_id(r.id).startswith(text)]
    if not matches:
        raise RunNotFound(f"no run under {root} has an id starting with {text!r}")
    if len(matches) > 1:
        shown = ", ".join(r.id for r in matches[:10]) + (" ..." if len(matches) > 10 else "")
        raise RunNotFound(
            f"{text!r} matches {len(matches)} runs ({shown}); give more of the id, or a path"
        )
    return matches[0]


# ----- params that differ -----------------------------------------------------------------


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and empty mappings stay values."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


_MISSING = object()


def changed_params(params: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The (dotted) params whose value differs from the spec's default, or that it lacks.

    A param the run does not have at all (an override cannot remove one) is left out.
    """
    got, base = flatten(params), flatten(defaults)
    return {k: v for k, v in got.items() if base.get(k, _MISSING) != v or _type_differs(v, base[k])}


def _type_differs(a: Any, b: Any) -> bool:
    # 1 == True == 1.0 in Python, but `workers: true` is not `workers: 1`
    return (
        type(a) is not type(b)
        and isinstance(a, bool | int | float)
        and isinstance(b, bool | int | float)
    )


def run_changed_params(rec: RunRecord) -> dict[str, Any]:
    defaults = rec.spec_defaults()
    return changed_params(rec.params, defaults or {}) if defaults is not None else {}


# ----- rerun ------------------------------------------------------------------------------


def code_changes(manifest: Mapping[str, Any]) -> list[str]:
    """How the code now differs from what the recorded run saw, one sentence each."""
    notes: list[str] = []
    spec_dir = Path(str(manifest.get("spec_dir") or "."))
    if not spec_dir.is_dir():
        return [f"the spec's folder {spec_dir} is gone: targets cannot be imported from it"]
    was = manifest.get("git")
    now = records.git_state(spec_dir)
    if isinstance(was, dict):
        if now is None:
            notes.append(
                f"{spec_dir} is no longer in a git repository "
                f"(the run was at commit {was.get('commit')})"
            )
        else:
            if now["commit"] != was.get("commit"):
                notes.append(
                    f"git commit is now {str(now['commit'])[:12]}, the run was made at "
                    f"{str(was.get('commit'))[:12]}"
                )
            if was.get("dirty"):
                notes.append("the run was made with uncommitted changes in its repository")
            if now["dirty"]:
                notes.append(f"the repository {now.get('root')} has uncommitted changes now")
    elif now is not None:
        notes.append(f"{spec_dir} is now in a git repository; it was not when the run was made")
    targets = manifest.get("targets")
    for module, info in (targets if isinstance(targets, dict) else {}).items():
        if not isinstance(info, dict):
            continue
        file_now = records.module_file(module, spec_dir)
        sha_now = records.sha256_file(file_now) if file_now else None
        if file_now is None and info.get("file"):
            notes.append(f"target module {module!r} is not found any more")
        elif file_now is not None and info.get("file") and file_now != info.get("file"):
            notes.append(
                f"target module {module!r} now comes from {file_now}, not {info.get('file')}"
            )
        elif sha_now != info.get("sha256"):
            notes.append(
                f"target module {module!r} ({file_now}) has changed since the run (sha256 differs)"
            )
    return notes


@dataclass
class Rerun:
    """What ``rerun`` is about to run: the record, the spec file used and the notes."""

    source: RunRecord
    spec_path: Path
    overrides: list[str]
    seed: int | None
    spec_dir: Path
    notes: list[str]


def prepare_rerun(rec: RunRecord, overrides: Iterable[str] = ()) -> Rerun:
    """Decide how to run ``rec`` again.

    Without overrides: its ``resolved.yaml`` (params, overrides and replicas applied),
    with the recorded base seed. With overrides: its ``spec.yaml`` as written with the
    recorded overrides and then the new ones (so that ``--set params.workers=8`` flows
    through ``${params.workers}`` again). Targets are imported from the recorded spec
    folder either way.
    """
    sets = list(overrides)
    manifest = rec.manifest
    seed = manifest.get("seed", rec.summary.get("seed"))
    spec_dir = Path(str(manifest.get("spec_dir") or rec.path))
    if sets:
        # spec.yaml may have no name (it defaults to the file's stem): keep the recorded one
        recorded = [override_text(("name", rec.name))]
        recorded += [str(o) for o in manifest.get("overrides") or []]
        spec_path, sets = rec.folder.spec_file, recorded + sets
    else:
        spec_path = rec.folder.resolved_file
    if not spec_path.is_file():
        raise RunNotFound(f"{rec.path} has no {spec_path.name}: it cannot be run again")
    return Rerun(
        rec,
        spec_path,
        sets,
        seed if isinstance(seed, int) else None,
        spec_dir,
        code_changes(manifest),
    )


def rerun(prepared: Rerun, **run_options: Any) -> RunResult:
    """Run ``prepared`` (see ``prepare_rerun``); ``run_options`` go to ``topo.api.run``."""
    from topo import api

    source = prepared.source
    return api.run(
        prepared.spec_path,
        prepared.overrides,
        seed=prepared.seed,
        spec_dir=prepared.spec_dir,
        manifest_extra={"rerun_of": {"run_dir": str(source.path), "id": source.id}},
        **run_options,
    )


# ----- compare ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One compared field: section (params, environment, run, results, state), key, values."""

    section: str
    key: str
    a: Any
    b: Any

    @property
    def same(self) -> bool:
        return self.a == self.b and type(self.a) is type(self.b)

    @property
    def incidental(self) -> bool:
        """A field that differs between any two runs (times and durations)."""
        return self.section == "durations" or self.key in INCIDENTAL_KEYS

    def to_json(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "key": self.key,
            "a": self.a,
            "b": self.b,
            "same": self.same,
            "incidental": self.incidental,
        }


# fields that differ between any two runs, or say where a run comes from: shown, not counted
INCIDENTAL_KEYS = ("duration_s", "started_at", "rerun of", "sweep")
MISSING = None  # what a side shows for a field it does not have


def environment(summary: Mapping[str, Any]) -> dict[str, Any]:
    m = summary.get("manifest") or {}
    python = m.get("python") or {}
    git = m.get("git") or {}
    return {
        "topo": m.get("topo_version"),
        "python": " ".join(str(python.get(k, "")) for k in ("implementation", "version")).strip()
        or None,
        "platform": m.get("platform"),
        "host": m.get("host"),
        "cpu_count": m.get("cpu_count"),
        "start_method": m.get("start_method"),
        "git commit": git.get("commit"),
        "git dirty": git.get("dirty"),
        "spec sha256": m.get("spec_sha256"),
    }


def compare(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[Row]:
    """Two ``run.json`` documents side by side, field by field, in a stable order."""
    rows: list[Row] = []

    def section(name: str, left: Mapping[str, Any], right: Mapping[str, Any]) -> None:
        keys = list(left) + [k for k in right if k not in left]
        rows.extend(Row(name, k, left.get(k, MISSING), right.get(k, MISSING)) for k in keys)

    section("run", _run_fields(a), _run_fields(b))
    section("params", flatten(a.get("params") or {}), flatten(b.get("params") or {}))
    section("environment", environment(a), environment(b))
    ga, gb = _by_process(a.get("processes") or {}), _by_process(b.get("processes") or {})
    for process in list(ga) + [p for p in gb if p not in ga]:
        left, right = ga.get(process, []), gb.get(process, [])
        if not left or not right or [n for n, _ in left] == [n for n, _ in right]:
            # the same instances, or one run lacks the process: instance by instance
            ones, twos = dict(left), dict(right)
            for instance in list(ones) + [n for n in twos if n not in ones]:
                rows += _instance_rows(instance, ones.get(instance, {}), twos.get(instance, {}))
            continue
        # `worker` against `worker[0..3]`: the process's values side by side, as lists
        label = f"{process} ({_instances_text(left)} / {_instances_text(right)})"
        for key in ("exit_code", "result"):
            rows.append(Row("instances", f"{label} {key}", _values(left, key), _values(right, key)))
        rows.append(
            Row("durations", label, _values(left, "duration_s"), _values(right, "duration_s"))
        )
    section("state", a.get("state") or {}, b.get("state") or {})
    return rows


def _instance_rows(instance: str, one: Mapping[str, Any], two: Mapping[str, Any]) -> list[Row]:
    """One instance in two runs: its exit code, its result (a row per key, dotted, when
    both are mappings) and its duration."""
    rows = [Row("instances", f"{instance} exit_code", one.get("exit_code"), two.get("exit_code"))]
    ra, rb = one.get("result"), two.get("result")
    if isinstance(ra, dict) and isinstance(rb, dict):
        fa, fb = flatten(ra), flatten(rb)
        keys = list(fa) + [k for k in fb if k not in fa]
        rows += [Row("instances", f"{instance} result.{k}", fa.get(k), fb.get(k)) for k in keys]
    else:
        rows.append(Row("instances", f"{instance} result", ra, rb))
    rows.append(Row("durations", instance, one.get("duration_s"), two.get("duration_s")))
    return rows


def _by_process(processes: Mapping[str, Any]) -> dict[str, list[tuple[str, Mapping[str, Any]]]]:
    """Instances grouped by process: ``worker[2]`` is process ``worker``'s."""
    grouped: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
    for instance, doc in processes.items():
        grouped.setdefault(instance.partition("[")[0], []).append((instance, doc or {}))
    return grouped


def _instances_text(instances: list[tuple[str, Any]]) -> str:
    names = [n for n, _ in instances]
    if not names:
        return "none"
    if len(names) == 1:
        return names[0]
    return f"{names[0].partition('[')[0]}[0..{len(names) - 1}]"


def _values(instances: list[tuple[str, Mapping[str, Any]]], key: str) -> Any:
    """One instance's value, or every instance's as a list (missing for none)."""
    if not instances:
        return MISSING
    values = [doc.get(key) for _, doc in instances]
    return values[0] if len(values) == 1 else values


def _run_fields(summary: Mapping[str, Any]) -> dict[str, Any]:
    m = summary.get("manifest") or {}
    return {
        "name": summary.get("name"),
        "status": summary.get("status"),
        "exit_code": summary.get("exit_code"),
        "seed": summary.get("seed"),
        "duration_s": summary.get("duration_s"),
        "started_at": m.get("started_at"),
        "overrides": m.get("overrides"),
        "rerun of": (m.get("rerun_of") or {}).get("id"),
        "sweep": (m.get("sweep") or {}).get("dir"),
    }
