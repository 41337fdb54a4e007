"""The stages of topo as Python functions: load, validate, run.

The CLI is a thin layer over these; notebooks and tests can call them directly.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from topo.backend import OutputSink, RunOptions, StatusSink, get_backend
from topo.errors import Diagnostic, RunError, SpecError, os_error_doing, os_error_text
from topo.resolve import (
    Overrides,
    Plan,
    build_plan,
    override_items,
    override_text,
    prepare_document,
    resolved_spec,
)
from topo.result import EXIT_CODES, RunResult
from topo.spec import spec_from_document
from topo.yamlpos import load_path


def load(
    path: str | Path,
    overrides: Overrides | None = None,
    *,
    seed: int | None = None,
    spec_dir: str | Path | None = None,
) -> Plan:
    """Read, validate and resolve a spec into a Plan; raise ``SpecError`` if it is invalid.

    ``overrides`` is a mapping of dotted keys to values, set as they are
    (``{"params.label": "8"}`` sets the text "8"), or ``key=value`` texts whose values
    are read as YAML scalars, as ``--set`` reads them (``["params.workers=8"]``).
    Only the document is checked here; ``check`` runs the reference and graph checks.
    ``spec_dir`` is the folder targets are imported from (default: the spec file's);
    ``topo rerun`` uses it to run a recorded spec with the original folder's modules.
    """
    items = override_items(overrides)
    document = prepare_document(load_path(path), items)
    spec = spec_from_document(document)
    plan = build_plan(spec, document, seed=seed)
    plan.overrides = tuple(override_text(item) for item in items)
    if spec_dir is not None:
        plan.spec_dir = Path(spec_dir).resolve()
    return plan


def check(
    plan: Plan, *, select: Iterable[str] = (), ignore: Iterable[str] = ()
) -> list[Diagnostic]:
    """Every reference and graph diagnostic of a Plan (errors and warnings)."""
    from topo.checks import run_checks

    return run_checks(plan, select=select, ignore=ignore)


def validate(
    path: str | Path,
    overrides: Overrides | None = None,
    *,
    select: Iterable[str] = (),
    ignore: Iterable[str] = (),
) -> list[Diagnostic]:
    """All diagnostics of a spec file; never raises for a bad spec."""
    try:
        plan = load(path, overrides, seed=0)
    except SpecError as e:
        return e.diagnostics
    return check(plan, select=select, ignore=ignore)


def _stderr_sink(name: str, line: str) -> None:
    sys.stderr.write(f"{name} | {line}\n" if name else f"topo: {line}\n")


def run(
    spec: str | Path | Plan,
    overrides: Overrides | None = None,
    *,
    seed: int | None = None,
    runs_dir: str | Path | None = None,
    record: bool = True,
    quiet: bool = False,
    output: OutputSink | None = None,
    status: StatusSink | None = None,
    watch: bool = True,
    spec_dir: str | Path | None = None,
) -> RunResult:
    """Run a spec to its end and return what happened.

    ``spec`` is a spec file or a Plan from ``load`` (then ``overrides``, ``seed`` and
    ``spec_dir`` are already in it). Raises ``SpecError`` (before anything starts)
    when the spec has errors; warnings go to ``output``. Raises ``OSError``, before
    anything starts too, when the run's record cannot be created (its message says
    which folder or file). Failures of the instances are in the result, not raised;
    so is a record that could not be completed once they had started (the run then
    fails, and ``message`` says why).
    """
    from topo import record as records

    say = output or _stderr_sink
    plan = spec if isinstance(spec, Plan) else load(spec, overrides, seed=seed, spec_dir=spec_dir)
    diagnostics = check(plan)
    errors = [d for d in diagnostics if d.is_error]
    if errors:
        raise SpecError(errors)
    for d in diagnostics:
        say("", str(d))
    options = RunOptions(quiet=quiet, watch=watch, status=status)
    if not record:
        return _run(plan, options, say)
    run_dir = records.new_run_dir(plan.name, runs_dir)
    manifest = records.manifest(
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
    try:
        records.write_start(run_dir, plan.document.text, resolved_spec(plan))
        records.write_summary(
            run_dir,
            {
                "name": plan.name,
                "status": "running",
                "exit_code": None,
                "seed": plan.seed,
                "params": dict(plan.params),
                "run_dir": str(run_dir),
                "manifest": manifest,
            },
        )
        recorder = records.Recorder(run_dir)
    except OSError as e:
        shutil.rmtree(run_dir, ignore_errors=True)  # nothing started: no half record left
        raise os_error_doing(f"cannot write the run record in {run_dir}", e) from e
    options = replace(options, run_dir=run_dir, log=recorder.log, events=recorder.event)
    try:
        result = _run(plan, options, say)
    finally:
        recorder.close()
    if recorder.error is not None:
        _record_failed(result, f"the logs and events in {run_dir}", recorder.error)
    manifest["distributions"] = records.distributions()
    try:
        records.write_summary(run_dir, {**result.to_json(), "manifest": manifest})
    except OSError as e:
        _record_failed(result, str(run_dir / records.SUMMARY), e)
    return result


def _record_failed(result: RunResult, what: str, error: OSError) -> None:
    """The run's record could not be completed: the run fails (whatever its instances
    did), and its message says what was not written and why."""
    why = f"{what} could not be written: {error.strerror or error}"
    if result.ok:
        result.status, result.exit_code = "failed", EXIT_CODES["failed"]
    result.message = f"{result.message}; {why}" if result.message else why


def _run(plan: Plan, options: RunOptions, say: OutputSink) -> RunResult:
    started = time.monotonic()
    try:
        result = get_backend("local").run(plan, options, say)
    except OSError as e:  # the backend reports what instances do; this is about topo itself
        raise RunError(f"the run could not go on: {os_error_text(e)}") from e
    result.duration_s = time.monotonic() - started
    return result
