"""The ``topo`` command: parse flags, call the core, print, map outcomes to exit codes.

No logic lives here. Human output goes to stderr; stdout carries only what a
command is asked for (JSON, a schema, a graph). Every command runs inside ``error_funnel``,
the one place where an exception becomes a message and an exit code.
"""

from __future__ import annotations

import contextlib
import functools
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from topo.console import (
    EXIT_INVALID,
    LiveStatus,
    Printer,
    error_funnel,
    leave_after,
    plain_table,
    print_table,
    remember_run,
    report_diagnostics,
    run_and_report,
    run_once,
    short,
    spec_name,
    stderr_console,
)

if TYPE_CHECKING:
    from topo.errors import Diagnostic


app = typer.Typer(
    name="topo",
    help="Declarative runner for Python multiprocessing topologies.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish...)
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: rich's help renderer costs ~0.2 s to import
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _argument_metavar_alone() -> None:
    """An argument with a metavar is shown by it alone (``SPEC...``), as an option is:
    typer appends its Python type (``SPEC... <list[Path]>``) to arguments only."""
    from typer.core import TyperArgument

    shown = getattr(TyperArgument, "display_type_rich", None)
    if shown is None:  # another typer: leave its help as it is
        return

    def display_type_rich(self: Any, ctx: Any) -> str | None:
        return None if self.metavar else shown(self, ctx)

    TyperArgument.display_type_rich = display_type_rich  # type: ignore[method-assign]


_argument_metavar_alone()


def _version(asked: bool) -> None:
    if asked:
        import platform

        from topo import __version__

        print(f"topo {__version__} (Python {platform.python_version()})")
        raise typer.Exit()


@app.callback()
def _topo(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", callback=_version, is_eager=True, help="Print topo's version."
        ),
    ] = False,
) -> None:
    """Declarative runner for Python multiprocessing topologies."""


# Options several commands share.
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a key: dotted.path=value, +dotted.path=value to add one (repeatable).",
    ),
]
FileOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--file",
        "-f",
        metavar="PATH",
        help="A spec laid over the spec, as docker compose's -f (repeatable: later wins).",
    ),
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="Hide the instances' own output.")]
RunJsonOption = Annotated[
    bool, typer.Option("--json", help="Print the run's summary as one JSON document.")
]
BackendOption = Annotated[
    str | None,
    typer.Option(
        "--backend",
        metavar="NAME",
        help="Where to run: local or ray [default: $TOPO_BACKEND or local].",
        show_default=False,
    ),
]
AddressOption = Annotated[
    str | None,
    typer.Option(
        "--address",
        metavar="ADDRESS",
        help="With --backend ray: the cluster (auto, HOST:PORT, ray://...) "
        "[default: $TOPO_ADDRESS, else a local Ray started for the run].",
        show_default=False,
    ),
]

_FUNNELED: set[Callable[..., None]] = set()  # every command's callback, as registered


def _command(**options: Any) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register a command with typer, running inside ``error_funnel``; its ``--json`` flag
    is its ``as_json`` argument, and the JSON document of an error is named after its
    ``spec`` (or the only one of its ``specs``)."""

    def register(command: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(command)
        def funneled(**kwargs: Any) -> None:
            name = spec_name(kwargs.get("specs") or [kwargs.get("spec")])
            with error_funnel(as_json=bool(kwargs.get("as_json")), name=name):
                command(**kwargs)

        _FUNNELED.add(funneled)
        app.command(**options)(funneled)
        return funneled

    return register


# ----- commands ------------------------------------------------------------------------------


@_command()
def validate(
    specs: Annotated[
        list[Path],
        typer.Argument(metavar="SPEC", help="Spec files to check.", show_default=False),
    ],
    set_: SetOption = None,
    files: FileOption = None,
    strict: Annotated[bool, typer.Option(help="Treat warnings as errors.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print diagnostics as JSON.")] = False,
    select: Annotated[
        list[str] | None,
        typer.Option(metavar="CODE", help="Only these warning codes (or prefixes)."),
    ] = None,
    ignore: Annotated[
        list[str] | None,
        typer.Option(metavar="CODE", help="Skip these warning codes (or prefixes)."),
    ] = None,
) -> None:
    """Check specs without running them: exit 0 when there are no errors, 2 otherwise."""
    from topo.api import validate as validate_spec
    from topo.errors import outcome_document

    console = stderr_console()
    found: list[Diagnostic] = []
    for path in specs:
        found += validate_spec(
            path, set_ or [], select=select or [], ignore=ignore or [], files=files or []
        )
    failing = [d for d in found if d.is_error or strict]
    if as_json:
        status, code = ("invalid", EXIT_INVALID) if failing else ("ok", 0)
        print(json.dumps(outcome_document(spec_name(specs), status, code, found), indent=2))
    else:
        report_diagnostics(found, console)
        errors = sum(d.is_error for d in found)
        warnings = len(found) - errors
        if found:
            console.print(
                f"Found {errors} error(s) and {warnings} warning(s) in {len(specs)} spec(s)."
            )
        else:
            console.print(f"{len(specs)} spec(s) valid.")
    raise SystemExit(EXIT_INVALID if failing else 0)


@_command()
def run(
    spec: Annotated[
        Path, typer.Argument(metavar="SPEC", help="The spec file to run.", show_default=False)
    ],
    set_: SetOption = None,
    files: FileOption = None,
    as_json: RunJsonOption = False,
    quiet: QuietOption = False,
    seed: Annotated[
        int | None, typer.Option(metavar="N", help="Base seed (overrides the spec's).")
    ] = None,
    runs_dir: Annotated[
        Path | None,
        typer.Option(
            metavar="PATH", help="Where run records go [default: $TOPO_RUNS_DIR or ./runs]."
        ),
    ] = None,
    no_record: Annotated[
        bool, typer.Option("--no-record", help="Do not write a run directory.")
    ] = False,
    no_watch: Annotated[
        bool,
        typer.Option("--no-watch", help="Hand targets the raw primitives: no deadlock detection."),
    ] = False,
    sweep: Annotated[
        list[str] | None,
        typer.Option(
            "--sweep",
            metavar="KEY=V1,V2,...",
            help="Run once per value: dotted.path=v1,v2,... (repeatable: the cartesian product).",
        ),
    ] = None,
    repeat: Annotated[
        int,
        typer.Option(
            metavar="N",
            help="Run each sweep point this many times, seeds base+0, base+1, ...",
            min=1,
        ),
    ] = 1,
    keep_going: Annotated[
        bool, typer.Option("--keep-going", help="Sweeps: go on after a run that fails.")
    ] = False,
    jobs: Annotated[
        int,
        typer.Option("--jobs", "-j", metavar="N", min=1, help="Sweeps: run N points at a time."),
    ] = 1,
    oversubscribe: Annotated[
        bool,
        typer.Option(
            "--oversubscribe",
            help="Sweeps: run -j N points at a time even when their instances outnumber the CPUs.",
        ),
    ] = False,
    sweep_entry: Annotated[
        str | None, typer.Option("--sweep-entry", hidden=True)  # a point of a -j sweep
    ] = None,
    report: Annotated[
        list[str] | None,
        typer.Option(
            metavar="INSTANCE",
            help="Sweeps: show the results of this process or instance (repeatable).",
        ),
    ] = None,
    backend: BackendOption = None,
    address: AddressOption = None,
    no_trace: Annotated[
        bool,
        typer.Option(
            "--no-trace", help="Keep no timeline: no trace.json, channel flow or bottleneck."
        ),
    ] = False,
    full_stacks: Annotated[
        bool,
        typer.Option(
            "--full-stacks",
            help="A deadlock's stacks with every frame, topo's and the standard library's too.",
        ),
    ] = False,
) -> None:
    """Validate a spec, start every process, supervise them and report the outcome.

    With --sweep or --repeat, run every point of the sweep one after another, each
    recorded under one sweep directory, and print a summary table (also summary.csv).
    """
    if sweep or repeat > 1:
        if no_record:
            from topo.errors import UsageError

            raise UsageError("sweeps are always recorded: drop --no-record")
        _run_sweep(
            spec,
            sweep or [],
            set_ or [],
            repeat=repeat,
            seed=seed,
            runs_dir=runs_dir,
            keep_going=keep_going,
            report=report or [],
            as_json=as_json,
            quiet=quiet,
            watch=not no_watch,
            backend=backend,
            address=address,
            trace=not no_trace,
            files=files or [],
            jobs=jobs,
            oversubscribe=oversubscribe,
        )
        return
    arguments: dict[str, Any] = {
        "spec": spec,
        "overrides": set_ or [],
        "files": files or [],
        "seed": seed,
        "runs_dir": runs_dir,
        "record": not no_record,
        "quiet": quiet,
        "watch": not no_watch,
        "trace": not no_trace,
        "backend": backend,
        "address": address,
        "sweep_entry": sweep_entry,
        "as_json": as_json,
        "full_stacks": full_stacks,
    }
    remember_run(arguments)
    run_once(**arguments)


@_command()
def init(
    folder: Annotated[
        Path,
        typer.Argument(
            metavar="FOLDER", help="Where to write them [default: here].", show_default=False
        ),
    ] = Path("."),
    name: Annotated[
        str,
        typer.Option(metavar="NAME", help="The spec's name, and its files' (NAME.yaml, NAME.py)."),
    ] = "starter",
) -> None:
    """Write a commented starter spec and the module of its targets, ready to run."""
    from importlib.resources import files

    from topo.errors import UsageError

    if not name.isidentifier():
        raise UsageError(f"--name {name!r}: the name of a Python module, such as my_pipeline")
    spec, module = folder / f"{name}.yaml", folder / f"{name}.py"
    existing = [str(p) for p in (spec, module) if p.exists()]
    if existing:
        raise UsageError(f"{' and '.join(existing)} already exist: topo init overwrites nothing")
    templates = files("topo") / "starter"
    folder.mkdir(parents=True, exist_ok=True)
    for path, template in ((spec, "spec.yaml.tmpl"), (module, "targets.py.tmpl")):
        text = (templates / template).read_text(encoding="utf-8")
        path.write_text(text.replace("__NAME__", name), encoding="utf-8")
    console = stderr_console()
    console.print(f"topo: wrote {spec} and {module}; run it: topo run {spec}", markup=False)


@_command()
def graph(
    spec: Annotated[
        Path, typer.Argument(metavar="SPEC", help="The spec file to draw.", show_default=False)
    ],
    set_: SetOption = None,
    format_: Annotated[
        str,
        typer.Option("--format", "-f", metavar="FORMAT", help="mermaid or dot (for text output)."),
    ] = "mermaid",
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", metavar="PATH", help="Render to .svg, .png or .pdf with Graphviz."
        ),
    ] = None,
) -> None:
    """Print the topology as Mermaid or DOT, or render it to an image with Graphviz."""
    from topo.api import load
    from topo.errors import UsageError
    from topo.render import render_file, to_dot, to_mermaid

    if format_ not in ("mermaid", "dot"):
        raise UsageError(f"--format must be mermaid or dot, not {format_!r}")
    plan = load(spec, set_ or [], seed=0)
    if output is None:
        print(to_mermaid(plan) if format_ == "mermaid" else to_dot(plan), end="")
        return
    render_file(to_dot(plan), output)
    stderr_console().print(f"topo: wrote {output}", markup=False)


@_command()
def schema() -> None:
    """Print the JSON Schema of the spec format (for editors)."""
    from topo.spec import json_schema

    print(json.dumps(json_schema(), indent=2))


# ----- experiments: sweeps, runs, show, rerun, compare ---------------------------------------


def _run_sweep(
    spec: Path,
    axes: list[str],
    overrides: list[str],
    *,
    repeat: int,
    seed: int | None,
    runs_dir: Path | None,
    keep_going: bool,
    report: list[str],
    as_json: bool,
    quiet: bool,
    watch: bool,
    backend: str | None = None,
    address: str | None = None,
    trace: bool = True,
    failed_of: Path | None = None,
    files: list[Path] | None = None,
    jobs: int = 1,
    oversubscribe: bool = False,
) -> None:
    """Run a sweep, or with ``failed_of``, the points of that recorded sweep that did
    not end ok; say how each run went and print the summary."""
    from functools import partial

    from topo.api import run as run_spec
    from topo.experiments import (
        Sweep,
        SweepRun,
        in_subprocesses,
        point_overrides,
        rerun_failed,
        run_sweep,
    )

    printer = Printer()
    console = printer.console

    def quiet_output(name: str, line: str) -> None:
        # -q: one line per run; each run's bottleneck is in its record (topo show)
        if name or not line.startswith("bottleneck: "):
            printer(name, line)

    def run_one(plan: Any, **options: Any) -> Any:
        status = LiveStatus(console) if console.is_terminal else None
        with status or contextlib.nullcontext():
            return run_spec(
                plan,
                **options,
                quiet=quiet,
                output=quiet_output if quiet else printer,
                status=status,
                lifecycle=status is None and not quiet,  # -q: one line per run, below
                watch=watch,
                backend=backend,
                address=address,
                trace=trace,
            )

    def described(sweep: Sweep, entry: SweepRun, total: int) -> str:
        point = " ".join(point_overrides(entry.point)) or "(no sweep axes)"
        again = f", repeat {entry.repeat + 1}/{sweep.repeat}" if sweep.repeat > 1 else ""
        seed_text = f", seed {entry.seed}" if entry.seed is not None else ", fresh seed"
        return f"topo: sweep run {entry.index}/{total}: {point}{again}{seed_text}"

    planned = {"runs": 0}

    def on_start(sweep: Sweep, entry: SweepRun, total: int) -> None:
        planned["runs"] = total
        if not quiet:  # with -q, one line per run: its end says what it was
            console.print(described(sweep, entry, total), markup=False)

    def on_end(sweep: Sweep, entry: SweepRun) -> None:
        if entry.invalid is not None:
            report_diagnostics(entry.invalid.diagnostics, console)
        elif entry.result is not None:
            r = entry.result
            why = f": {r.message}" if r.message else ""
            outcome = f"{r.status} in {r.duration_s:.2f}s{why}"
            if quiet:
                line = f"{described(sweep, entry, planned['runs'])}: {outcome}"
                console.print(line, markup=False)
            else:
                console.print(f"topo: sweep run {entry.index}: {outcome}", markup=False)

    parallel = in_subprocesses(
        *(["--no-watch"] if not watch else []),
        *(["--no-trace"] if not trace else []),
        *(["--backend", backend] if backend else []),
        *(["--address", address] if address else []),
    )
    if jobs > 1:
        _refuse_oversubscription(spec, overrides, jobs, oversubscribe, backend, address)
        # a SIGTERM to topo reaches the points' own topo processes (Ctrl-C does by itself)
        signal.signal(signal.SIGTERM, lambda signum, frame: parallel.stop(signum))
    if failed_of is not None:
        sweep = rerun_failed(failed_of, run=partial(run_one), on_start=on_start, on_end=on_end)
    else:
        sweep = run_sweep(
            spec,
            axes,
            overrides,
            repeat=repeat,
            seed=seed,
            runs_dir=runs_dir,
            keep_going=keep_going,
            report=report,
            run=partial(run_one) if jobs == 1 else parallel,
            on_start=on_start,
            on_end=on_end,
            files=files or [],
            jobs=jobs,
        )
    _sweep_table(sweep, console)
    if as_json:
        print(json.dumps(sweep.to_json()))
    raise SystemExit(sweep.exit_code)


def _refuse_oversubscription(
    spec: Path,
    overrides: list[str],
    jobs: int,
    allowed: bool,
    backend: str | None,
    address: str | None,
) -> None:
    """-j N runs N points at a time: refused when their instances outnumber the CPUs
    (they would share them, and what the runs measure would not be theirs alone)."""
    from topo.api import _backend, load
    from topo.errors import UsageError

    instances = len(load(spec, overrides, seed=0).instances)
    cpus = _backend(backend, address).cpus()
    if jobs * instances > cpus and not allowed:
        raise UsageError(
            f"-j {jobs} runs {jobs} points of {instances} instance(s) at a time on {cpus} "
            "CPU(s): they would share them, and what each run measures would not be its "
            "own. Lower -j, or add --oversubscribe to run them so anyway"
        )


def _sweep_table(sweep: Any, console: Any) -> None:
    header, rows = sweep.table()  # mapping results already spread over dotted columns
    seeds = "seeds base+repeat" if sweep.seeds == "base+repeat" else "fresh seeds"
    done = sum(r.exit_code == 0 for r in sweep.runs)
    shown = [c for c in header if c != "run_dir"]
    values = [dict(zip(header, row, strict=True)) for row in rows]
    print_table(
        console,
        shown,
        [[v[c] for c in shown] for v in values],
        title=f"sweep {sweep.name}: {done}/{len(sweep.runs)} ok ({seeds})",
        styles=[None if v["status"] == "ok" else "bold red" for v in values],
    )
    if sweep.repeat > 1:
        _sweep_statistics(sweep, console)
    console.print(f"topo: sweep recorded in {sweep.sweep_dir} (summary.csv)")


def _sweep_statistics(sweep: Any, console: Any) -> None:
    """Each point over its repeats: mean ± standard deviation [min, max] of each number."""
    stats = sweep.statistics()
    keys = [a.key for a in sweep.axes]
    measured = list(dict.fromkeys(m for s in stats for m in s.measures))
    headers = [*keys, "ok", *measured]
    rows = [
        [
            *(s.point[k] for k in keys),
            f"{s.ok}/{sweep.repeat}",
            *(s.measures[m].text() if m in s.measures else "" for m in measured),
        ]
        for s in stats
    ]
    title = f"over {sweep.repeat} repeats: mean ± standard deviation [min, max]"
    console.print(plain_table(title, headers, rows), markup=False)


_RUNS_DIR_OPTION = typer.Option(
    metavar="PATH", help="Where run records are [default: $TOPO_RUNS_DIR or ./runs]."
)


def _when(started_at: str) -> str:
    import datetime as dt

    try:
        return dt.datetime.fromisoformat(started_at).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return started_at or "?"


def _seconds(value: Any) -> str:
    return f"{value:.2f}s" if isinstance(value, int | float) else "-"


def _shown(value: Any) -> str:
    """A value whole, as text: numbers as written, None as null."""
    return value if isinstance(value, str) else json.dumps(value)


@_command()
def runs(
    name: Annotated[
        str | None, typer.Option(metavar="NAME", help="Only runs of this spec name.")
    ] = None,
    last: Annotated[
        int | None, typer.Option(metavar="N", help="Only the N most recent runs.", min=1)
    ] = None,
    runs_dir: Annotated[Path | None, _RUNS_DIR_OPTION] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the runs as JSON.")] = False,
) -> None:
    """List past runs, oldest first: id, name, when, status, duration, changed params."""

    from topo.experiments import format_value, list_runs, run_changed_params

    found = list_runs(runs_dir, name=name)
    if last is not None:
        found = found[-last:]
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "id": r.id,
                        "run_dir": str(r.path),
                        "name": r.name,
                        "started_at": r.started_at,
                        "status": r.status,
                        "duration_s": r.duration_s,
                        "changed_params": run_changed_params(r),
                        "sweep": r.sweep,
                    }
                    for r in found
                ],
                indent=2,
            )
        )
        return
    console = stderr_console()
    if not found:
        from topo.record import runs_root

        console.print(f"topo: no runs recorded under {runs_root(runs_dir)}")
        return
    rows, styles = [], []
    for r in found:
        changed = " ".join(f"{k}={format_value(v)}" for k, v in run_changed_params(r).items())
        styles.append({"ok": None, "running": "yellow"}.get(r.status, "red"))
        rows.append(
            [
                r.id,  # whole: it is what people copy into show and rerun
                r.name,
                _when(r.started_at),
                r.status,
                _seconds(r.duration_s),
                changed,
                r.sweep.rsplit("-", 1)[-1] if r.sweep else "",  # the sweep folder's short id
            ]
        )
    headers = ["id", "name", "when", "status", "duration", "params", "sweep"]
    print_table(console, headers, rows, styles=styles)


@_command()
def ps(
    runs_dir: Annotated[Path | None, _RUNS_DIR_OPTION] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the runs as JSON.")] = False,
) -> None:
    """List the runs in progress on this machine: id, name, started, topo's pid."""
    from topo.experiments import runs_in_progress

    found = runs_in_progress(runs_dir)
    rows: list[dict[str, Any]] = [
        {
            "id": r.id,
            "name": r.name,
            "run_dir": str(r.path),
            "started_at": r.started_at,
            "pid": r.manifest.get("pid"),
            "instances": list(r.manifest.get("seeds") or {}),
        }
        for r in found
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    console = stderr_console()
    if not rows:
        console.print("topo: no run in progress")
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("id", "name", "started", "pid", "instances"):
        table.add_column(column, no_wrap=column != "instances")
    for row, r in zip(rows, found, strict=True):
        table.add_row(
            row["id"],
            row["name"],
            _when(r.started_at),
            str(row["pid"]),
            str(len(row["instances"])),
        )
    console.print(table)


@_command()
def logs(
    run_ref: Annotated[
        str,
        typer.Argument(
            metavar="RUN", help="A run directory, an id prefix, last or last~N.", show_default=False
        ),
    ],
    instances: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[INSTANCE]...", help="Only these instances (default: all).", show_default=False
        ),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Go on printing until the run ends.")
    ] = False,
    runs_dir: Annotated[Path | None, _RUNS_DIR_OPTION] = None,
) -> None:
    """Print what a run's instances printed, prefixed with their names; with -f, follow
    a run in progress (from another terminal) until it ends."""
    from topo.errors import UsageError
    from topo.experiments import find_run, follow_logs

    rec = find_run(run_ref, runs_dir)
    known = list(rec.manifest.get("seeds") or {}) or sorted(
        p.stem for p in rec.folder.logs_dir.glob("*.log")
    )
    chosen = instances or known
    unknown = [i for i in chosen if i not in known]
    if unknown:
        from topo.hints import did_you_mean

        raise UsageError(
            f"run {rec.id} has no instance {unknown[0]!r}{did_you_mean(unknown[0], known)}"
        )
    width = max((len(n) for n in chosen), default=0)

    def out(name: str, line: str) -> None:
        sys.stdout.write(f"{name:<{width}} | {line}\n" if len(chosen) > 1 else f"{line}\n")
        sys.stdout.flush()

    try:
        follow_logs(rec, chosen, out, follow=follow)
    except KeyboardInterrupt:
        raise SystemExit(130) from None


@_command()
def report(
    run_ref: Annotated[
        str,
        typer.Argument(
            metavar="RUN", help="A run directory, an id prefix, last or last~N.", show_default=False
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="PATH",
            help="The HTML file [default: report.html in the run].",
        ),
    ] = None,
    runs_dir: Annotated[Path | None, _RUNS_DIR_OPTION] = None,
) -> None:
    """Write one self-contained HTML file of a run: topology, timeline, queue depths,
    time shares, results and final state; of a sweep folder: each measured number
    against the swept parameter (needs the extra topo[report])."""
    from topo.experiments import find_run
    from topo.record import SweepFolder, write_atomic
    from topo.report import render, render_sweep

    folder = Path(run_ref)
    if folder.is_dir() and SweepFolder.is_sweep_name(folder.name):
        path = output or folder / "report.html"
        write_atomic(path, render_sweep(folder))
    else:
        rec = find_run(run_ref, runs_dir)
        path = output or rec.path / "report.html"
        write_atomic(path, render(rec))
    stderr_console().print(f"topo: report written to {path}", markup=False)


@_command()
def show(
    run_ref: Annotated[
        str,
        typer.Argument(
            metavar="RUN", help="A run directory, an id prefix, last or last~N.", show_default=False
        ),
    ],
    runs_dir: Annotated[Path | None, _RUNS_DIR_OPTION] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run's run.json.")] = False,
) -> None:
    """One run's summary: status, params, each instance's exit code and result, final state."""
    from rich.table import Table

    from topo.experiments import find_run, flatten, format_value, run_changed_params

    rec = find_run(run_ref, runs_dir)
    if as_json:
        print(json.dumps(rec.summary, indent=2))
        return
    console = stderr_console()
    s = rec.summary
    m = rec.manifest
    console.print(
        f"[bold]{rec.name}[/bold] {rec.id}: {rec.status} (exit code {s.get('exit_code')})"
    )
    console.print(f"  started   {_when(rec.started_at)}, took {_seconds(rec.duration_s)}")
    console.print(f"  seed      {s.get('seed')}")
    changed = run_changed_params(rec)
    params = " ".join(
        f"{k}={format_value(v)}{'*' if k in changed else ''}"
        for k, v in flatten(rec.params).items()
    )
    console.print(
        f"  params    {params or '-'}" + ("   (* differs from the spec)" if changed else "")
    )
    if m.get("overrides"):
        console.print(f"  overrides {' '.join(m['overrides'])}")
    if m.get("spec_path"):
        console.print(f"  spec      {m['spec_path']}")
    if s.get("message"):
        console.print(f"  message   {s['message']}")
    table = Table(box=None, header_style="bold")
    for column in ("instance", "state", "exit", "restarts", "seconds", "result"):
        table.add_column(column)
    for instance, r in (s.get("processes") or {}).items():
        table.add_row(
            instance,
            str(r.get("state")),
            str(r.get("exit_code")),
            str(r.get("restarts")),
            _seconds(r.get("duration_s")),
            short(r.get("result")),
            style=None if r.get("exit_code") == 0 else "red",
        )
    console.print(table)
    for key, value in (s.get("state") or {}).items():
        console.print(f"  state {key} = {short(value, 100)}", markup=False)
    for instance, r in (s.get("processes") or {}).items():
        if r.get("error"):  # what its target raised: the traceback from the user's code
            console.print(f"  {instance} raised:", markup=False)
            for line in str(r["error"]).rstrip().splitlines():
                console.print(f"    {line}", markup=False)
    folder = rec.folder
    console.print(f"  logs      {folder.log_file('<instance>')}, events in {folder.events_file}")


@_command()
def rerun(
    run_ref: Annotated[
        str,
        typer.Argument(
            metavar="RUN", help="A run directory, an id prefix, last or last~N.", show_default=False
        ),
    ],
    set_: SetOption = None,
    as_json: RunJsonOption = False,
    quiet: QuietOption = False,
    runs_dir: Annotated[Path | None, _RUNS_DIR_OPTION] = None,
    backend: BackendOption = None,
    address: AddressOption = None,
    failed: Annotated[
        bool,
        typer.Option(
            "--failed",
            help="RUN is a sweep (its folder, id, or last): run again the points that did "
            "not end ok, into the same sweep.",
        ),
    ] = False,
) -> None:
    """Run a recorded run again: its resolved spec, the same seeds, targets from its folder.

    Says on stderr when the code differs from the record (git commit, uncommitted
    changes, target files). With --set, the spec as written is resolved again with the
    recorded overrides followed by the new ones. With --failed, RUN is a sweep, and its
    points that did not end ok (or never ran) run again with their numbers and seeds.
    """
    from topo.experiments import find_run, find_sweep, prepare_rerun
    from topo.experiments import rerun as rerun_record

    if failed:
        if set_:
            from topo.errors import UsageError

            raise UsageError("--failed reruns a sweep as it was made: drop --set")
        folder = find_sweep(run_ref, runs_dir)
        _run_sweep(
            folder,
            [],
            [],
            repeat=1,
            seed=None,
            runs_dir=runs_dir,
            keep_going=True,
            report=[],
            as_json=as_json,
            quiet=quiet,
            watch=True,
            backend=backend,
            address=address,
            failed_of=folder,
        )
        return
    rec = find_run(run_ref, runs_dir)
    with error_funnel(as_json, rec.name):  # from here on, a JSON document is named after the run
        prepared = prepare_rerun(rec, set_ or [])
        console = stderr_console()
        console.print(
            f"topo: running {rec.id} again (seed {prepared.seed}) from {prepared.spec_path}",
            markup=False,
        )
        for note in prepared.notes:
            console.print(
                f"topo: warning: code differs from the record: {note}", style="yellow", markup=False
            )

        run_and_report(
            functools.partial(
                rerun_record,
                prepared,
                runs_dir=runs_dir,
                quiet=quiet,
                backend=backend,
                address=address,
            ),
            as_json,
        )


@_command()
def compare(
    run_a: Annotated[
        str, typer.Argument(metavar="RUN_A", help="The first run.", show_default=False)
    ],
    run_b: Annotated[
        str, typer.Argument(metavar="RUN_B", help="The second run.", show_default=False)
    ],
    runs_dir: Annotated[Path | None, _RUNS_DIR_OPTION] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")] = False,
) -> None:
    """Two runs side by side: params, environment, status, durations, results, state."""
    from topo.experiments import compare as compare_runs
    from topo.experiments import find_run

    a, b = find_run(run_a, runs_dir), find_run(run_b, runs_dir)
    rows = compare_runs(a.summary, b.summary)
    differences = [r for r in rows if not r.same and not r.incidental]
    if as_json:
        print(
            json.dumps(
                {
                    "a": str(a.path),
                    "b": str(b.path),
                    "differences": len(differences),
                    "rows": [r.to_json() for r in rows],
                },
                indent=2,
            )
        )
        return
    console = stderr_console()
    shown, styles = [], []
    for r in rows:
        if r.same:
            mark, style = "", None
        else:
            mark, style = ("~" if r.incidental else "≠"), ("dim" if r.incidental else "bold yellow")
        shown.append([mark, r.section, r.key, _shown(r.a), _shown(r.b)])
        styles.append(style)
    headers = ["", "section", "field", f"A {a.id}", f"B {b.id}"]
    print_table(console, headers, shown, styles=styles)
    console.print(
        f"topo: {len(differences)} difference(s) (≠), besides times and durations (~)"
        if differences
        else "topo: no differences besides times and durations"
    )


def main() -> None:
    """The entry point of installs made before ``topo.entry`` (their ``topo`` script
    imports this): typer's parse every time."""
    leave_after(app)
