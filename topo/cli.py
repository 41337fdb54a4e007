"""The ``topo`` command: parse flags, call the core, print, map outcomes to exit codes.

No logic lives here. Human output goes to stderr; stdout carries only what a
command is asked for (JSON, a schema, a graph).
"""

from __future__ import annotations

import json
import sys
import threading
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from topo.backend import InstanceStatus
    from topo.errors import Diagnostic

EXIT_INVALID = 2

app = typer.Typer(
    name="topo",
    help="Declarative runner for Python multiprocessing topologies.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_COLOURS = [
    "cyan",
    "magenta",
    "green",
    "yellow",
    "blue",
    "bright_red",
    "bright_cyan",
    "bright_magenta",
    "bright_green",
    "bright_yellow",
    "bright_blue",
]


def _stderr() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


class _Printer:
    """Prefixes each instance's lines with its name in a stable colour; one line at a time."""

    def __init__(self) -> None:
        self.console = _stderr()
        self.lock = threading.Lock()

    def __call__(self, name: str, line: str) -> None:
        from rich.text import Text

        text = Text()
        if name:
            colour = _COLOURS[zlib.crc32(name.encode()) % len(_COLOURS)]
            text.append(f"{name} | ", style=colour)
        else:
            text.append("topo: ", style="bold")
        text.append(line)
        with self.lock:
            self.console.print(text)


def _show_diagnostic(console: Any, d: Diagnostic, source: list[str] | None) -> None:
    from rich.text import Text

    style = "bold red" if d.is_error else "bold yellow"
    text = Text()
    text.append(f"{d.path}:{d.line}:{d.col}: ")
    text.append(f"{d.severity}[{d.code}]", style=style)
    text.append(f": {d.message}")
    console.print(text)
    if source and 0 < d.line <= len(source):
        line = source[d.line - 1].rstrip("\n")
        console.print(Text(f"  {d.line:>4} | {line}", style="dim"))
        console.print(Text(f"       | {' ' * (d.col - 1)}^", style=style))


def _source_lines(path: str) -> list[str] | None:
    try:
        return Path(path).read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError):
        return None


def _report(diagnostics: list[Diagnostic], console: Any) -> None:
    sources: dict[str, list[str] | None] = {}
    for d in diagnostics:
        if d.path not in sources:
            sources[d.path] = _source_lines(d.path)
        _show_diagnostic(console, d, sources[d.path])


@app.command()
def validate(
    specs: Annotated[list[Path], typer.Argument(help="Spec files to check.", show_default=False)],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a key: dotted.path=value.")
    ] = None,
    strict: Annotated[bool, typer.Option(help="Treat warnings as errors.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print diagnostics as JSON.")] = False,
    select: Annotated[
        list[str] | None, typer.Option(help="Only these warning codes (or prefixes).")
    ] = None,
    ignore: Annotated[
        list[str] | None, typer.Option(help="Skip these warning codes (or prefixes).")
    ] = None,
) -> None:
    """Check specs without running them: exit 0 when there are no errors, 2 otherwise."""
    from topo.api import validate as validate_spec

    console = _stderr()
    found: list[Diagnostic] = []
    for path in specs:
        found += validate_spec(path, set_ or [], select=select or [], ignore=ignore or [])
    failing = [d for d in found if d.is_error or strict]
    if as_json:
        print(json.dumps([d.to_json() for d in found], indent=2))
    else:
        _report(found, console)
        errors = sum(d.is_error for d in found)
        warnings = len(found) - errors
        if found:
            console.print(
                f"Found {errors} error(s) and {warnings} warning(s) in {len(specs)} spec(s)."
            )
        else:
            console.print(f"{len(specs)} spec(s) valid.")
    raise typer.Exit(EXIT_INVALID if failing else 0)


@app.command()
def run(
    spec: Annotated[Path, typer.Argument(help="The spec file to run.", show_default=False)],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a key: dotted.path=value (repeatable)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the run's summary as one JSON document.")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Hide the instances' own output.")
    ] = False,
    seed: Annotated[int | None, typer.Option(help="Base seed (overrides the spec's).")] = None,
    runs_dir: Annotated[
        Path | None,
        typer.Option(help="Where run records go [default: $TOPO_RUNS_DIR or ./runs]."),
    ] = None,
    no_record: Annotated[
        bool, typer.Option("--no-record", help="Do not write a run directory.")
    ] = False,
    no_watch: Annotated[
        bool,
        typer.Option("--no-watch", help="Hand targets the raw primitives: no deadlock detection."),
    ] = False,
) -> None:
    """Validate a spec, start every process, supervise them and report the outcome."""
    from topo.api import run as run_spec
    from topo.errors import SpecError

    printer = _Printer()
    status = _LiveStatus(printer.console) if printer.console.is_terminal else _StatusLines(printer)
    try:
        with status:
            result = run_spec(
                spec,
                set_ or [],
                seed=seed,
                runs_dir=runs_dir,
                record=not no_record,
                quiet=quiet,
                output=printer,
                status=status,
                watch=not no_watch,
            )
    except SpecError as e:
        _report(e.diagnostics, printer.console)
        if as_json:
            name = spec.stem
            print(
                json.dumps(
                    {
                        "name": name,
                        "status": "invalid",
                        "exit_code": EXIT_INVALID,
                        "diagnostics": [d.to_json() for d in e.diagnostics],
                    }
                )
            )
        raise typer.Exit(EXIT_INVALID) from None
    _summary(result, printer.console)
    if as_json:
        print(json.dumps(result.to_json()))
    raise typer.Exit(result.exit_code or 0)


class _LiveStatus:
    """On a terminal: a table of every instance, redrawn under the scrolling output."""

    def __init__(self, console: Any) -> None:
        from rich.live import Live

        self.live = Live(console=console, auto_refresh=False, transient=True)

    def __enter__(self) -> _LiveStatus:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(None, None, None)

    def __call__(self, rows: list[InstanceStatus]) -> None:
        from rich.table import Table

        table = Table(box=None, header_style="bold")
        for column in ("instance", "pid", "state", "restarts", "ops"):
            table.add_column(column)
        for r in rows:
            table.add_row(r.name, str(r.pid or ""), r.state, str(r.restarts), str(r.operations))
        self.live.update(table, refresh=True)


class _StatusLines:
    """Elsewhere: one plain line each time an instance changes state."""

    def __init__(self, printer: _Printer) -> None:
        self.printer = printer
        self.seen: dict[str, str] = {}

    def __enter__(self) -> _StatusLines:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def __call__(self, rows: list[InstanceStatus]) -> None:
        for r in rows:
            coarse = "running" if r.state.startswith("blocked") else r.state
            if self.seen.get(r.name) != coarse:
                self.seen[r.name] = coarse
                if coarse != "not started":
                    pid = f" (pid {r.pid})" if r.pid and r.state == "running" else ""
                    self.printer("", f"{r.name} {r.state}{pid}")


def _summary(result: Any, console: Any) -> None:
    from rich.table import Table

    table = Table(title=f"{result.name}: {result.status}", title_justify="left")
    for column in ("instance", "state", "exit", "restarts", "seconds", "result"):
        table.add_column(column)
    for name, r in result.processes.items():
        shown = json.dumps(r.result)
        table.add_row(
            name,
            r.state,
            str(r.exit_code),
            str(r.restarts),
            f"{r.duration_s:.2f}",
            shown if len(shown) < 60 else shown[:57] + "...",
        )
    console.print(table)
    if result.message:
        console.print(f"topo: {result.message}")
    if result.run_dir:
        console.print(f"topo: run recorded in {result.run_dir}")


@app.command()
def graph(
    spec: Annotated[Path, typer.Argument(help="The spec file to draw.", show_default=False)],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a key: dotted.path=value.")
    ] = None,
    format_: Annotated[
        str, typer.Option("--format", "-f", help="mermaid or dot (for text output).")
    ] = "mermaid",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Render to .svg, .png or .pdf with Graphviz."),
    ] = None,
) -> None:
    """Print the topology as Mermaid or DOT, or render it to an image with Graphviz."""
    from topo.api import load
    from topo.errors import SpecError, TopoError
    from topo.render import render_file, to_dot, to_mermaid

    console = _stderr()
    if format_ not in ("mermaid", "dot"):
        console.print(f"topo: --format must be mermaid or dot, not {format_!r}")
        raise typer.Exit(EXIT_INVALID)
    try:
        plan = load(spec, set_ or [], seed=0)
    except SpecError as e:
        _report(e.diagnostics, console)
        raise typer.Exit(EXIT_INVALID) from None
    if output is None:
        print(to_mermaid(plan) if format_ == "mermaid" else to_dot(plan), end="")
        return
    try:
        render_file(to_dot(plan), output)
    except TopoError as e:
        console.print(f"topo: {e}")
        raise typer.Exit(1) from None
    console.print(f"topo: wrote {output}")


@app.command()
def schema() -> None:
    """Print the JSON Schema of the spec format (for editors)."""
    from topo.spec import json_schema

    print(json.dumps(json_schema(), indent=2))


def main() -> None:
    """Console entry point; a bad command line exits 2, as click does."""
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover - outside a run
        sys.stderr.write("topo: interrupted\n")
        sys.exit(130)
