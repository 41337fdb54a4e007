"""``topo report RUN``: one self-contained HTML file to look at a recorded run.

The topology (Graphviz's SVG when ``dot`` is installed, else the DOT text), the
timeline as a Gantt chart per instance, each queue's depth over time, each instance's
shares of its time, the results and the final state. The charts are matplotlib's SVG,
inlined: the file needs no network and no script to open. matplotlib is the optional
extra ``topo[report]`` (a well-kept library that writes plain SVG, rather than charts
drawn by hand); nothing else of topo imports it.
"""

from __future__ import annotations

import html
import io
import json
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from topo.errors import UsageError

if TYPE_CHECKING:
    from topo.record import RunRecord

COLOURS = {"running": "#4c9f70", "channels": "#e0a43a", "locks": "#c0504d"}
STYLE = (
    "body{font-family:Helvetica,Arial,sans-serif;margin:2em;max-width:70em}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em;"
    "text-align:left;vertical-align:top}small{color:#777}"
    ".bottleneck{font-weight:bold}svg{max-width:100%;height:auto}"
)


def _pyplot() -> Any:
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise UsageError("topo report needs matplotlib: pip install 'topo[report]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _svg(fig: Any) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # inline: no XML prologue or doctype


def render(rec: RunRecord) -> str:
    """The report of ``rec`` as HTML text."""
    plt = _pyplot()
    summary = rec.summary
    trace = _trace(rec)
    parts = [
        f"<h1>{html.escape(rec.name)} <small>{html.escape(rec.id)}</small></h1>",
        "<p>"
        + html.escape(
            f"status {summary.get('status')} (exit {summary.get('exit_code')}), "
            f"{summary.get('duration_s', 0):.2f} s on the {summary.get('backend', 'local')} "
            f"backend, seed {summary.get('seed')}"
        )
        + "</p>",
    ]
    if summary.get("message"):
        parts.append(f"<p class=message>{html.escape(str(summary['message']))}</p>")
    if summary.get("bottleneck"):
        parts.append(f"<p class=bottleneck>{html.escape(summary['bottleneck']['reason'])}</p>")
    parts += ["<h2>Topology</h2>", _topology(rec)]
    if trace is not None:
        parts += ["<h2>Timeline</h2>", _gantt(plt, trace)]
        depths = _depths(plt, trace)
        if depths:
            parts += ["<h2>Queue depth</h2>", depths]
    shares = {n: p["shares"] for n, p in summary.get("processes", {}).items() if "shares" in p}
    if shares:
        parts += ["<h2>Time shares</h2>", _shares(plt, shares)]
    parts += [
        "<h2>Results</h2>",
        _table(
            ["instance", "state", "exit", "restarts", "seconds", "result"],
            [
                [
                    n,
                    p.get("state"),
                    p.get("exit_code"),
                    p.get("restarts"),
                    p.get("duration_s"),
                    json.dumps(p.get("result")),
                ]
                for n, p in summary.get("processes", {}).items()
            ],
        ),
        "<h2>Final state</h2>",
        _table(
            ["channel", "value"],
            [[k, json.dumps(v)] for k, v in (summary.get("state") or {}).items()],
        ),
    ]
    style = STYLE
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(rec.name)} {html.escape(rec.id)}</title>"
        f"<style>{style}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )


def render_sweep(sweep_dir: Path) -> str:
    """A sweep's report: each number it measured (duration, and the --report results)
    against the first swept parameter, mean and spread over repeats, one line per value
    of the other axes; and the summary table."""
    import csv
    import statistics

    plt = _pyplot()
    from topo.record import SweepFolder

    try:
        info = json.loads((sweep_dir / SweepFolder.JSON).read_text())
        with open(sweep_dir / SweepFolder.SUMMARY, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, ValueError) as e:
        raise UsageError(f"{sweep_dir} is not a readable sweep: {e}") from None
    axes = list(info.get("axes") or {})
    skip = {"run", "repeat", "seed", "status", "run_dir", *axes}
    metrics = [c for c in (rows[0] if rows else {}) if c not in skip and _numbers(rows, c)]
    parts = [
        f"<h1>{html.escape(str(info.get('name')))} "
        f"<small>{html.escape(sweep_dir.name)}</small></h1>",
        "<p>"
        + html.escape(
            f"{len(rows)} runs, status {info.get('status')}, axes {', '.join(axes) or '(none)'}"
            f", repeat {info.get('repeat')}"
        )
        + "</p>",
    ]
    if axes:
        x_key, others = axes[0], axes[1:]
        for metric in metrics:
            fig, ax = plt.subplots(figsize=(7, 3.2))
            groups: dict[tuple[str, ...], dict[float, list[float]]] = defaultdict(
                lambda: defaultdict(list)
            )
            for row in rows:
                try:
                    x, y = float(row[x_key]), float(row[metric])
                except ValueError:
                    continue
                groups[tuple(row[o] for o in others)][x].append(y)
            for key, points in groups.items():
                xs = sorted(points)
                means = [statistics.fmean(points[x]) for x in xs]
                spread = [statistics.pstdev(points[x]) for x in xs]
                label = ", ".join(f"{o}={v}" for o, v in zip(others, key, strict=True)) or metric
                ax.errorbar(xs, means, yerr=spread, marker="o", capsize=3, label=label)
            ax.set_xlabel(x_key)
            ax.set_ylabel(metric)
            if others:
                ax.legend(fontsize=8)
            parts += [f"<h2>{html.escape(metric)}</h2>", _svg(fig)]
            plt.close(fig)
    if rows:
        header = [c for c in rows[0] if c != "run_dir"]
        parts += ["<h2>Runs</h2>", _table(header, [[r[c] for c in header] for r in rows])]
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(sweep_dir.name)}</title><style>{STYLE}</style></head><body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )


def _numbers(rows: list[dict[str, str]], column: str) -> bool:
    try:
        return bool(rows) and all(float(r[column]) == float(r[column]) for r in rows if r[column])
    except ValueError:
        return False


def _trace(rec: RunRecord) -> dict[str, Any] | None:
    from topo.record import TRACE

    try:
        trace: dict[str, Any] = json.loads((rec.path / TRACE).read_text())
    except (OSError, ValueError):
        return None
    return trace


def _topology(rec: RunRecord) -> str:
    from topo.api import load
    from topo.render import to_dot

    try:
        dot_text = to_dot(load(rec.folder.resolved_file, spec_dir=rec.path))
    except Exception as e:  # an old or damaged record: the rest of the report stands
        return f"<p>(no picture: {html.escape(str(e))})</p>"
    dot = shutil.which("dot")
    if dot is not None:
        done = subprocess.run(
            [dot, "-Tsvg"], input=dot_text.encode(), capture_output=True, timeout=30, check=False
        )
        text = done.stdout.decode(errors="replace")
        if done.returncode == 0 and "<svg" in text:
            return text[text.index("<svg") :]
    return f"<pre>{html.escape(dot_text)}</pre>"


def _gantt(plt: Any, trace: dict[str, Any]) -> str:
    events = trace["traceEvents"]
    names = {e["tid"]: e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    order = sorted(names)
    bars: dict[int, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for e in events:
        if e["ph"] == "X" and e["tid"] in names:
            bars[e["tid"]][e.get("cat", "running")].append((e["ts"] / 1e6, e["dur"] / 1e6))
    fig, ax = plt.subplots(figsize=(10, 0.4 * len(order) + 1))
    for row, tid in enumerate(order):
        for category, spans in bars[tid].items():
            ax.broken_barh(
                spans, (row - 0.4, 0.8), color=COLOURS.get(category, "#888"), label=category
            )
    ax.set_yticks(range(len(order)), [names[t] for t in order])
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the run started")
    handles = {h.get_label(): h for h in ax.get_legend_handles_labels()[0]}
    if handles:
        ax.legend(handles.values(), handles.keys(), loc="upper right", fontsize=8)
    svg = _svg(fig)
    plt.close(fig)
    return svg


def _depths(plt: Any, trace: dict[str, Any]) -> str | None:
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for e in trace["traceEvents"]:
        if e["ph"] == "C" and e["name"].startswith("depth "):
            series[e["name"][6:]].append((e["ts"] / 1e6, e["args"]["depth"]))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(10, 2.5))
    for queue, points in series.items():
        ax.step([t for t, _ in points], [d for _, d in points], where="post", label=queue)
    ax.set_xlabel("seconds since the run started")
    ax.set_ylabel("items")
    ax.legend(fontsize=8)
    svg = _svg(fig)
    plt.close(fig)
    return svg


def _shares(plt: Any, shares: dict[str, dict[str, float]]) -> str:
    names = list(shares)
    fig, ax = plt.subplots(figsize=(10, 0.4 * len(names) + 1))
    left = [0.0] * len(names)
    for category in ("running", "channels", "locks"):
        values = [shares[n].get(category, 0.0) for n in names]
        ax.barh(names, values, left=left, color=COLOURS[category], label=category)
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the instance's time")
    ax.legend(fontsize=8, loc="lower right")
    svg = _svg(fig)
    plt.close(fig)
    return svg


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"
