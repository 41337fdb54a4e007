"""The stages of topo as Python functions: load, validate, run.

The CLI is a thin layer over these; notebooks and tests can call them directly.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from topo import cache
from topo.document import Document, read_source
from topo.errors import Diagnostic, RunError, SpecError, UsageError, os_error_text
from topo.resolve import (
    SPEC_DATA,
    Override,
    Overrides,
    Plan,
    build_plan,
    override_items,
    override_text,
    spec_data,
    validated_document,
)
from topo.result import RunResult
from topo.supervise import OutputSink, RunOptions, StatusSink, Supervisor

if TYPE_CHECKING:
    from topo.backends import Backend
    from topo.model import Spec


def _backend(backend: str | Backend | None, address: str | None = None) -> Backend:
    """A backend by name, or as given; None: ``$TOPO_BACKEND``, else the local one.
    ``address`` (or ``$TOPO_ADDRESS``) is the cluster, for a backend that has clusters."""
    from topo.backends import get_backend

    if backend is None or isinstance(backend, str):
        name = backend or os.environ.get("TOPO_BACKEND") or "local"
        address = address or os.environ.get("TOPO_ADDRESS") or None
        try:
            return get_backend(name, address=address)
        except ValueError as e:
            raise UsageError(str(e)) from None
    if address is not None:
        raise UsageError("give the address to the backend itself, not beside it")
    return backend


def load(
    path: str | Path,
    overrides: Overrides | None = None,
    *,
    seed: int | None = None,
    spec_dir: str | Path | None = None,
    files: Iterable[str | Path] = (),
) -> Plan:
    """Read, validate and resolve a spec into a Plan; raise ``SpecError`` if it is invalid.

    ``files`` are laid over the spec in order, as docker compose's ``-f`` files are
    (mappings merge key by key, anything else is replaced). A ``.env`` file beside the
    spec feeds ``${env.X}``; the environment wins over it.

    ``overrides`` is a mapping of dotted keys to values, set as they are
    (``{"params.label": "8"}`` sets the text "8"), or ``key=value`` texts whose values
    are read as YAML scalars, as ``--set`` reads them (``["params.workers=8"]``).
    Only the document is checked here; ``check`` runs the reference and graph checks.
    ``spec_dir`` is the folder targets are imported from (default: the spec file's);
    ``topo rerun`` uses it to run a recorded spec with the original folder's modules.
    """
    items = override_items(overrides)
    spec, document, data = _validated([str(path), *map(str, files)], items)
    texts = [override_text(item) for item in items]  # for the record
    plan = build_plan(spec, document, seed=seed, overrides=texts, spec_dir=spec_dir)
    plan.cache[SPEC_DATA] = data  # for the record, which would build pydantic's serializer
    return plan


def _validated(paths: list[str], items: list[Override]) -> tuple[Spec, Document, dict[str, Any]]:
    """The spec file ``paths[0]``, with the files after it laid over it and ``items``
    applied, validated: the spec, its document and the spec as plain data.

    From the cache when the same files (byte for byte, at the same places), the same
    overrides and the same values of the environment variables it reads were validated
    before, with this topo and this pydantic: validating a spec again costs ~20 ms
    (yaml, then pydantic's schema and its plugin lookup). The checks that follow
    (targets, graph) run either way.
    """
    sources = [read_source(p) for p in paths]
    environ = environment(Path(paths[0]).parent)
    entry_key = cache.key(
        "validated",
        [[p, hashlib.sha256(raw).hexdigest()] for p, raw in zip(paths, sources, strict=True)],
        [item if isinstance(item, str) else [item[0], repr(item[1])] for item in items],
    )
    kept = cache.load_objects(entry_key, "validated")
    if (
        isinstance(kept, dict)
        and kept.keys() == {"spec", "document", "data", "environ"}
        and all(environ.get(k) == v for k, v in kept["environ"].items())
    ):
        return kept["spec"], kept["document"], kept["data"]
    from topo.yamlpos import compose, load_bytes  # PyYAML: only for a spec not seen before

    document = load_bytes(sources[0], paths[0])
    for p, raw in zip(paths[1:], sources[1:], strict=True):
        document = compose(document, load_bytes(raw, p))
    read = _ReadEnviron(environ)
    spec, document = validated_document(document, items, read)
    data = spec_data(spec)
    from topo.spec import frozen

    spec = frozen(spec)  # what a run reads, and unpickles next time without pydantic
    kept = {"spec": spec, "document": document, "data": data, "environ": read.seen}
    cache.store_objects(entry_key, "validated", kept)
    return spec, document, data


class _ReadEnviron(Mapping[str, str]):
    """The environment, noting each variable asked for (its value, None if unset): what
    a cached validation must find unchanged."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.seen: dict[str, str | None] = {}

    def __getitem__(self, name: str) -> str:
        self.seen[name] = self.environ.get(name)
        return self.environ[name]

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str):
            self.seen[name] = self.environ.get(name)
        return name in self.environ

    def __iter__(self) -> Iterator[str]:
        return iter(self.environ)

    def __len__(self) -> int:
        return len(self.environ)


def check(
    plan: Plan,
    *,
    select: Iterable[str] = (),
    ignore: Iterable[str] = (),
    backend: str | Backend | None = None,
) -> list[Diagnostic]:
    """Every reference, graph and placement diagnostic of a Plan for a run on
    ``backend`` (errors and warnings)."""
    from topo.checks import run_checks

    return run_checks(plan, select=select, ignore=ignore, backend=_backend(backend))


def validate(
    path: str | Path,
    overrides: Overrides | None = None,
    *,
    select: Iterable[str] = (),
    ignore: Iterable[str] = (),
    backend: str | Backend | None = None,
    files: Iterable[str | Path] = (),
) -> list[Diagnostic]:
    """All diagnostics of a spec file (with ``files`` laid over it, as ``load``
    does); never raises for a bad spec."""
    try:
        plan = load(path, overrides, seed=0, files=files)
    except SpecError as e:
        return e.diagnostics
    return check(plan, select=select, ignore=ignore, backend=backend)


def environment(folder: Path) -> Mapping[str, str]:
    """What ``${env.X}`` reads: the environment over the ``.env`` file in ``folder``."""
    dotenv_file = folder / ".env"
    if not dotenv_file.is_file():
        return os.environ
    from dotenv import dotenv_values

    try:
        values = dotenv_values(dotenv_file, interpolate=False)
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(
            [Diagnostic(str(dotenv_file), 1, 1, "error", "T000", f"cannot read: {e}")]
        ) from None
    return {**{k: v for k, v in values.items() if v is not None}, **os.environ}


def _stderr_sink(name: str, line: str) -> None:
    if name:
        sys.stderr.write(f"{name} | {line}\n")
    else:  # topo's own text may hold several lines
        sys.stderr.write("".join(f"topo: {one}\n" for one in line.split("\n")))


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
    lifecycle: bool = False,
    watch: bool = True,
    trace: bool = True,
    spec_dir: str | Path | None = None,
    files: Iterable[str | Path] = (),
    backend: str | Backend | None = None,
    address: str | None = None,
    manifest_extra: Mapping[str, Any] | None = None,
) -> RunResult:
    """Run a spec to its end on ``backend`` (default: ``$TOPO_BACKEND`` or local) and
    return what happened.

    ``spec`` is a spec file or a Plan from ``load`` (then ``overrides``, ``seed`` and
    ``spec_dir`` are already in it). Raises ``SpecError`` (before anything starts)
    when the spec has errors; warnings go to ``output``. Raises ``OSError``, before
    anything starts too, when the run's record cannot be created (its message says
    which folder or file). Failures of the instances are in the result, not raised;
    so is a record that could not be completed once they had started (the run then
    fails, and ``message`` says why). ``manifest_extra`` keys go into the record's
    manifest (the sweep a run belongs to, the run it reruns). ``status`` is called with
    a StatusBoard every STATUS_INTERVAL_S; with ``lifecycle``, every start and end of an
    instance is said to ``output`` as it happens (``worker[0] exited (0)``), those of one
    step of the supervisor in one call, a line each (``output("", "a running\\nb running")``).
    """
    say = output or _stderr_sink
    chosen = _backend(backend, address)
    plan = (
        spec
        if isinstance(spec, Plan)
        else load(spec, overrides, seed=seed, spec_dir=spec_dir, files=files)
    )
    diagnostics = check(plan, backend=chosen)
    errors = [d for d in diagnostics if d.is_error]
    if errors:
        raise SpecError(errors)
    for d in diagnostics:
        say("", str(d))
    options = RunOptions(quiet=quiet, watch=watch, status=status, trace=trace, lifecycle=lifecycle)
    if not record:
        return _run(plan, chosen, options, say)
    from topo.record import RunFolder

    folder = RunFolder.create(
        plan, runs_dir, extra={**(manifest_extra or {}), "backend": chosen.name}
    )
    options = replace(options, run_dir=folder.path, log=folder.log, events=folder.event)
    try:
        result = _run(plan, chosen, options, say)
    except BaseException as e:
        folder.finish(error=e)  # the record says how it ended, never "running"
        raise
    folder.finish(result)
    return result


def _run(plan: Plan, backend: Backend, options: RunOptions, say: OutputSink) -> RunResult:
    started = time.monotonic()
    launcher = backend.launcher(plan, options)
    try:
        result = Supervisor(plan, launcher, options, say).run()
    except OSError as e:  # the result tells what instances did; this is about topo itself
        raise RunError(f"the run could not go on: {os_error_text(e)}") from e
    result.backend = backend.name
    result.cluster = getattr(launcher, "cluster", None)
    result.duration_s = time.monotonic() - started
    return result


def undelivered(run_dir: str | Path) -> dict[str, list[Any]]:
    """The messages a recorded run left in its channels (``run.json``'s ``undelivered``
    counts them), by channel; one that could not be read back is a ``topo.RawItem``."""
    from topo.record import RunFolder

    return RunFolder(run_dir).load_undelivered()
