"""What topo says and how it exits: the error funnel, the printer, tables, a run's summary,
and the command lines remembered for ``topo run``.

No typer here: ``topo run`` of a command line already parsed once goes through this
module alone (see ``topo.entry``), and typer (with its parameter adapters, ~55 ms) is imported
only to parse a new one. Human output goes to stderr; stdout carries only what a
command is asked for (JSON, a schema, a graph).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
import sys
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from topo.errors import Diagnostic
    from topo.supervise import InstanceStatus

EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_INTERRUPTED = 130
EXIT_UNWRITTEN = 120  # the output could not be written: as Python exits then
DEBUG_ENV = "TOPO_DEBUG"  # TOPO_DEBUG=1: an error shows its traceback too

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


def stderr_console() -> Any:
    """topo's voice: rich on a terminal; plain lines otherwise (a pipe, a file, CI),
    which also spares every run rich's import (~25 ms of topo's fixed cost)."""
    if sys.stderr.isatty() or os.environ.get("FORCE_COLOR") or os.environ.get("TTY_COMPATIBLE"):
        from rich.console import Console

        return Console(stderr=True, highlight=False, soft_wrap=True)
    return PlainConsole()


class PlainConsole:
    """What topo uses of rich's Console, for a stderr that is not a terminal."""

    is_terminal = False
    _rich: Any = None

    def print(self, obj: Any = "", *, markup: bool = True, **_style: Any) -> None:
        if isinstance(obj, str):
            text = re.sub(r"\[/?bold\]", "", obj) if markup else obj
        elif hasattr(obj, "plain"):  # rich Text
            text = obj.plain
        else:  # a table or anything else rich draws: let rich draw it, plainly
            if self._rich is None:
                from rich.console import Console

                self._rich = Console(stderr=True, highlight=False, soft_wrap=True)
            self._rich.print(obj)
            return
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


def print_table(
    console: Any,
    headers: list[str],
    rows: list[list[str]],
    *,
    title: str = "",
    styles: list[str | None] | None = None,
) -> None:
    """A table that stays readable: columns aligned, every value whole (no wrapped
    fragments, no truncated numbers). When it is wider than the terminal, one record
    per line instead (``field: value`` pairs); in a pipe, as wide as it is."""
    width = shutil.get_terminal_size().columns if console.is_terminal else None
    top = [title] if title else []  # the lines above the rows: bold on a terminal
    body = plain_table("", headers, rows).splitlines()
    if width is not None and max(map(len, body), default=0) > width:
        body = [
            "  ".join(f"{h}: {v}" for h, v in zip(headers, row, strict=True) if v) for row in rows
        ]
    else:
        top, body = [*top, body[0]], body[1:]  # the header row goes on top
    if not console.is_terminal or not styles:
        console.print("\n".join([*top, *body]), markup=False)
        return
    from rich.text import Text

    for line in top:
        console.print(Text(line, style="bold"))
    for line, style in zip(body, styles, strict=False):
        console.print(Text(line, style=style or ""))


def plain_table(title: str, headers: list[str], rows: list[list[str]]) -> str:
    """A table in plain text, columns aligned (docker ps style): for pipes and logs."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [title] if title else []
    for row in [headers, *rows]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


class Printer:
    """Prefixes each instance's lines with its name in a stable colour; one line at a time."""

    def __init__(self, full_stacks: bool = False) -> None:
        self.console = stderr_console()
        self.lock = threading.Lock()
        # Not a terminal (a pipe, a file, CI): no colours to draw, so plain writes,
        # several times faster than rich's, for instances that print a lot.
        self.plain = not self.console.is_terminal
        self.stacks: Any = None  # a deadlock's stacks: the user's frames first
        if not full_stacks:
            from topo.stacks import StackFolder

            self.stacks = StackFolder()

    def __call__(self, name: str, line: str) -> None:
        if self.stacks is not None and self.stacks.folds(name, line):
            for shown in self.stacks(name, line):
                self._print(name, shown)
            return
        self._print(name, line)

    def _print(self, name: str, line: str) -> None:
        # topo's own text may hold several lines (the starts of one step): each is
        # prefixed, and all are written at once.
        lines = line.split("\n") if not name else [line]
        prefix = f"{name} | " if name else "topo: "
        if self.plain:
            with self.lock:
                sys.stderr.write("".join(f"{prefix}{one}\n" for one in lines))
            return
        from rich.text import Text

        style = _COLOURS[zlib.crc32(name.encode()) % len(_COLOURS)] if name else "bold"
        text = Text()
        for i, one in enumerate(lines):
            if i:
                text.append("\n")
            text.append(prefix, style=style)
            text.append(one)
        with self.lock:
            self.console.print(text)


def show_diagnostic(console: Any, d: Diagnostic, source: list[str] | None) -> None:
    from rich.text import Text

    style = "bold red" if d.is_error else "bold yellow"
    text = Text()
    text.append(f"{d.path}:{d.line}:{d.col}: " if d.line else f"{d.path}: ")
    text.append(f"{d.severity}[{d.code}]", style=style)
    text.append(f": {d.message}")
    console.print(text)
    if source and 0 < d.line <= len(source):
        line = source[d.line - 1].rstrip("\n")
        console.print(Text(f"  {d.line:>4} | {line}", style="dim"))
        console.print(Text(f"       | {' ' * (d.col - 1)}^", style=style))


def source_lines(path: str) -> list[str] | None:
    try:
        return Path(path).read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError):
        return None


def report_diagnostics(diagnostics: list[Diagnostic], console: Any) -> None:
    sources: dict[str, list[str] | None] = {}
    for d in diagnostics:
        if d.path not in sources:
            sources[d.path] = source_lines(d.path)
        show_diagnostic(console, d, sources[d.path])


# ----- the error funnel ----------------------------------------------------------------------


@contextlib.contextmanager
def error_funnel(as_json: bool = False, name: str | None = None) -> Iterator[None]:
    """The one place where an exception becomes what topo says and its exit code.

    ============================== ======================================= ==== ===========
    raised                         on stderr                               exit --json status
    ============================== ======================================= ==== ===========
    SpecError                      its diagnostics, located                2    invalid
    UsageError (RunNotFound...)    ``topo: error: <message>``              2    invalid
    OSError                        ``topo: error: cannot create run ...``  2    invalid
    PlacementError                 ``topo: error: the run needs 4 CPUs...``2    invalid
    TopoError (RunError...)        ``topo: error: <message>``              1    failed
    KeyboardInterrupt              ``topo: interrupted``                   130  interrupted
    anything else                  ``topo: internal error: ...`` + a hint  1    failed
    ============================== ======================================= ==== ===========

    An OSError that reaches this far happened before anything started: the core turns
    one after the start into a failed run (see ``topo.api.run``) or a RunError. With
    ``--json``, stdout gets ``outcome_document`` (named ``name``); with TOPO_DEBUG=1,
    stderr gets the traceback too. A command says its exit code with ``SystemExit``,
    which passes (it is no Exception).
    """
    from topo.errors import PlacementError, SpecError, TopoError, UsageError, os_error_text

    def fail(
        status: str,
        exit_code: int,
        message: str,
        said: str | None = None,
        diagnostics: Sequence[Diagnostic] = (),
    ) -> NoReturn:
        from topo.errors import outcome_document

        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            import traceback

            traceback.print_exc()
        if said is not None:
            sys.stderr.write(said + "\n")
        if as_json:
            shown = None if diagnostics else message
            print(json.dumps(outcome_document(name, status, exit_code, diagnostics, shown)))
        raise SystemExit(exit_code)

    try:
        yield
    except SpecError as e:
        report_diagnostics(e.diagnostics, stderr_console())
        fail("invalid", EXIT_INVALID, str(e), diagnostics=e.diagnostics)
    except (UsageError, PlacementError) as e:
        fail("invalid", EXIT_INVALID, str(e), f"topo: error: {e}")
    except BrokenPipeError:
        # whoever read stdout has gone (`topo runs --json | head -1`): nothing to tell it
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(EXIT_FAILED) from None
    except OSError as e:
        fail("invalid", EXIT_INVALID, os_error_text(e), f"topo: error: {os_error_text(e)}")
    except TopoError as e:
        fail("failed", EXIT_FAILED, str(e), f"topo: error: {e}")
    except KeyboardInterrupt:
        fail("interrupted", EXIT_INTERRUPTED, "interrupted", "topo: interrupted")
    except Exception as e:
        what = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        hint = (
            f"topo: this is a bug in topo, not in your spec: please report it"
            f" (run again with {DEBUG_ENV}=1 to see the traceback)"
        )
        fail(
            "failed",
            EXIT_FAILED,
            f"internal error: {what}",
            f"topo: internal error: {what}\n{hint}",
        )


def spec_name(specs: Sequence[Path | str | None]) -> str | None:
    """What a JSON document is named after: the spec's file name, if there is one spec."""
    return Path(specs[0]).stem if len(specs) == 1 and specs[0] is not None else None


def run_and_report(start: Callable[..., Any], as_json: bool, full_stacks: bool = False) -> NoReturn:
    """Run ``start(output=, status=, lifecycle=)`` (``api.run``'s options of what is
    shown) under the live status, print its outcome, exit with its code."""
    printer = Printer(full_stacks)
    # A terminal gets the live table; elsewhere the supervisor says each start and end.
    status = LiveStatus(printer.console) if printer.console.is_terminal else None
    with status or contextlib.nullcontext():
        result = start(output=printer, status=status, lifecycle=status is None)
    summary(result, printer.console)
    if as_json:
        print(json.dumps(result.to_json()))
    raise SystemExit(result.exit_code or 0)


class LiveStatus:
    """On a terminal: a table of every instance, redrawn under the scrolling output."""

    def __init__(self, console: Any) -> None:
        from rich.live import Live

        self.live = Live(console=console, auto_refresh=False, transient=True)

    def __enter__(self) -> LiveStatus:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(None, None, None)

    def __call__(self, rows: list[InstanceStatus]) -> None:
        from rich.table import Table

        elapsed = getattr(rows, "elapsed_s", None)
        depths = getattr(rows, "depths", {})
        caption = " · ".join(
            [
                *([f"elapsed {elapsed:.1f} s"] if elapsed is not None else []),
                *(f"{q}: {d} queued" for q, d in depths.items()),
            ]
        )
        table = Table(
            box=None, header_style="bold", caption=caption or None, caption_justify="left"
        )
        for column in ("instance", "pid", "state", "restarts", "cpu s", "up s", "running"):
            table.add_column(column)
        for r in rows:
            cpu = "" if r.cpu_s is None else f"{r.cpu_s:.1f}"
            up = "" if r.up_s is None else f"{r.up_s:.1f}"
            share = "" if r.running_share is None else f"{r.running_share:.0%}"
            table.add_row(r.name, str(r.pid or ""), r.label, str(r.restarts), cpu, up, share)
        self.live.update(table, refresh=True)


def summary(result: Any, console: Any) -> None:
    title = f"{result.name}: {result.status}"
    headers = ["instance", "state", "exit", "restarts", "seconds", "result"]
    rows = []
    for name, r in result.processes.items():
        shown = json.dumps(r.result)
        rows.append(
            [
                name,
                str(r.state),
                str(r.exit_code),
                str(r.restarts),
                f"{r.duration_s:.2f}",
                shown if len(shown) < 60 else shown[:57] + "...",
            ]
        )
    if console.is_terminal:
        from rich.table import Table

        table = Table(title=title, title_justify="left")
        for column in headers:
            table.add_column(column)
        for row in rows:
            table.add_row(*row)
        console.print(table)
    else:
        console.print(plain_table(title, headers, rows), markup=False)
    for key, value in result.state.items():  # the final values, arrays, dicts...
        console.print(f"state {key} = {short(value, 100)}", markup=False)
    if result.message:
        console.print(f"topo: {result.message}")
    if result.run_dir:  # else result.message says what could not be written
        from topo.record import RunFolder

        recorded = result.record_complete and RunFolder.is_run(result.run_dir)
        console.print(
            f"topo: run recorded in {result.run_dir}"
            if recorded
            else f"topo: the run's record in {result.run_dir} is incomplete",
            markup=False,
        )


def short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= width else text[: width - 3] + "..."


# ----- a plain run, and the command lines remembered for it --------------------------------


def run_once(
    spec: Path,
    overrides: list[str],
    files: list[Path],
    *,
    seed: int | None,
    runs_dir: Path | None,
    record: bool,
    quiet: bool,
    watch: bool,
    trace: bool,
    backend: str | None,
    address: str | None,
    sweep_entry: str | None,
    as_json: bool,
    full_stacks: bool,
) -> NoReturn:
    """``topo run`` of one spec (no sweep): run it, print its outcome, exit with its code."""
    from topo.api import run as run_spec

    def start(**shown: Any) -> Any:
        return run_spec(
            spec,
            overrides,
            seed=seed,
            runs_dir=runs_dir,
            record=record,
            quiet=quiet,
            watch=watch,
            backend=backend,
            address=address,
            trace=trace,
            manifest_extra={"sweep": json.loads(sweep_entry)} if sweep_entry else None,
            files=files,
            **shown,
        )

    run_and_report(start, as_json, full_stacks)


# The ``topo run`` command line being run (see topo.entry); None when typer's app is
# called otherwise (tests, other commands).
_command_line: list[str] | None = None
_REMEMBERED = "commands"  # the cache's folder of parsed command lines


def remember_run(arguments: dict[str, Any]) -> None:
    """Keep what typer parsed of this ``topo run`` command line as ``run_once``'s
    arguments, for ``run_remembered`` to run the same command line again without typer."""
    if _command_line is None or arguments.get("sweep_entry"):  # a sweep's point: once
        return
    from topo import cache

    encoded = {k: _encoded(v) for k, v in arguments.items()}
    cache.store(cache.key(_REMEMBERED, _command_line), _REMEMBERED, encoded)


def run_remembered(argv: list[str]) -> None:
    """Run the ``topo run`` command line ``argv`` from typer's parse of it, remembered;
    if there is none, return, having noted ``argv`` for ``remember_run`` to keep what
    typer makes of it."""
    global _command_line
    _command_line = argv
    if os.environ.get("_TOPO_COMPLETE"):  # shell completion: typer's
        return
    from topo import cache

    remembered = cache.load(cache.key(_REMEMBERED, argv), _REMEMBERED)
    code = run_once.__code__
    parameters = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
    if not isinstance(remembered, dict) or sorted(remembered) != sorted(parameters):
        return  # none, or not one this topo wrote: typer parses the command line
    try:
        arguments = {k: _decoded(v) for k, v in remembered.items()}
    except (KeyError, TypeError):
        return
    with error_funnel(as_json=bool(arguments.get("as_json")), name=spec_name([arguments["spec"]])):
        run_once(**arguments)


def _encoded(value: Any) -> Any:
    if isinstance(value, Path):
        return {"path": str(value)}
    if isinstance(value, list):
        return [_encoded(v) for v in value]
    return value


def _decoded(value: Any) -> Any:
    if isinstance(value, dict):
        return Path(value["path"])
    if isinstance(value, list):
        return [_decoded(v) for v in value]
    return value


def leave_after(command: Callable[[], object]) -> NoReturn:
    """Run ``command`` (a typer app, or what ``topo.entry`` makes of a command line) and
    exit with its outcome: a bad command line exits 2, as click does. Errors inside a
    command are ``error_funnel``'s; this catches only a Ctrl-C outside any command."""
    code: int | str | None = 0
    try:
        command()
    except SystemExit as e:
        code = e.code
    except KeyboardInterrupt:  # pragma: no cover - outside a command
        sys.stderr.write("topo: interrupted\n")
        code = EXIT_INTERRUPTED
    _leave(code)


def _leave(code: int | str | None) -> NoReturn:
    """Exit with ``code`` without tearing the interpreter down.

    Everything a normal exit does that matters runs first: the atexit handlers
    (multiprocessing's finalizers, logging's flush, Ray's shutdown) and a flush of
    stdout and stderr. What is skipped is freeing every object of every module one by
    one, which the operating system does at once: it took ~40 ms of each run, a
    fifth of topo's fixed cost. Only topo's own process leaves this way; instances
    and their exits are not touched.
    """
    if code is not None and not isinstance(code, int):
        sys.stderr.write(f"{code}\n")  # as sys.exit("message") prints it
        code = 1
    atexit._run_exitfuncs()
    status = code or 0
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # its reader is gone, or it is closed
            pass
        except OSError as e:  # a full disk: what was asked for is lost, and is said so
            from topo.errors import os_error_text

            said = f"topo: error: cannot write the output: {os_error_text(e)}\n"
            with contextlib.suppress(OSError):
                os.write(2, said.encode())
            status = status or EXIT_UNWRITTEN
    os._exit(status)
