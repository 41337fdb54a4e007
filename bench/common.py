"""Shared helpers of the benchmarks: interleaved runs, statistics, tables, results.

Every benchmark compares variants (topo and the same work by hand) measured in the
same run, interleaved A B A B ... so that noise from other work on the machine (test
suites, other benchmarks) falls on both alike; it reports medians, min/max and the
ratio of each pair (topo / hand of the same round), whose median is the headline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PYTHON = sys.executable

# Python's default is to cache bytecode in __pycache__; some machines turn it off for
# everything (PYTHONDONTWRITEBYTECODE=1), and then every process, topo's and the
# hand-written ones alike, compiles its modules again at each start. The benchmarks
# measure what a default Python does, so every process they start caches bytecode.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


@dataclass
class Comparison:
    """One measured case: samples of each variant, round by round."""

    bench: str
    case: str  # e.g. "spawn, 2 workers, 100000 items"
    unit: str  # "s", "us/msg"...
    samples: dict[str, list[float]]  # variant -> one value per round, in order
    baseline: str  # the variant ratios are taken against (the hand-written one)
    extra: dict[str, Any] = field(default_factory=dict)

    def ratios(self, variant: str) -> list[float]:
        """variant / baseline, round by round (pair by pair)."""
        return [
            a / b
            for a, b in zip(self.samples[variant], self.samples[self.baseline], strict=True)
            if b > 0
        ]

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for variant, values in self.samples.items():
            out[variant] = describe(values)
            if variant != self.baseline:
                out[variant]["ratio"] = describe(self.ratios(variant))
                out[variant]["ratio"]["pairs"] = self.ratios(variant)
        return out

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.summary()}


def describe(values: Sequence[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def interleave(
    variants: dict[str, Callable[[], float]],
    rounds: int,
    *,
    warmup: int = 1,
    progress: str = "",
) -> dict[str, list[float]]:
    """Run every variant once per round, in the given order (A B A B ...).

    Each callable returns its own measurement (seconds, µs per message...). ``warmup``
    rounds are run first and thrown away (page cache, .pyc files, CPU frequency).
    """
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(warmup + rounds):
        for name, fn in variants.items():
            value = fn()
            if r >= warmup:
                samples[name].append(value)
        if progress:
            state = "warm-up" if r < warmup else f"round {r - warmup + 1}/{rounds}"
            print(f"  {progress}: {state}", file=sys.stderr, flush=True)
    return samples


def timed_run(
    argv: Sequence[str], *, timeout: float = 600, env: dict[str, str] | None = None
) -> float:
    """Wall-clock seconds from launching ``argv`` to its exit; fails on a non-zero exit."""
    started = time.perf_counter()
    proc = subprocess.run(
        list(argv),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{tail}")
    return elapsed


def topo_cmd(*args: str) -> list[str]:
    """``topo ...``: the console script installed beside this interpreter.

    Called by its real path, not through a version manager's shim (pyenv's adds a
    bash script and ~50 ms to every call); ``python -m topo`` if there is none.
    """
    script = Path(PYTHON).parent / "topo"
    if script.is_file():
        return [str(script), *args]
    return [PYTHON, "-m", "topo", *args]


# ----- output ---------------------------------------------------------------------------------


def fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.3f}"
    if unit in ("us/msg", "us"):
        return f"{value:.1f}" if value < 1000 else f"{value:.0f}"
    return f"{value:.3g}"


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table (Markdown pipe syntax, so it can be pasted into the docs)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    out = [f"### {title}", "", line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def comparison_rows(comparisons: Sequence[Comparison]) -> tuple[list[str], list[list[str]]]:
    """Table rows: one per (case, variant), with median [min-max] and the ratio to hand."""
    headers = ["case", "variant", "median", "min", "max", "ratio to hand: median [min-max]"]
    rows = []
    for c in comparisons:
        summary = c.summary()
        for variant in c.samples:
            s = summary[variant]
            if variant == c.baseline:
                ratio = "1 (baseline)"
            else:
                r = s["ratio"]
                ratio = f"{r['median']:.3f} [{r['min']:.3f}-{r['max']:.3f}]"
            rows.append(
                [
                    c.case,
                    variant,
                    f"{fmt(s['median'], c.unit)} {c.unit}",
                    fmt(s["min"], c.unit),
                    fmt(s["max"], c.unit),
                    ratio,
                ]
            )
    return headers, rows


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_at_start": os.getloadavg(),
    }


def save(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"bench": name, "machine": machine(), "time": time.time(), **payload}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def standalone(
    run: Callable[..., dict[str, Any]],
    doc: str | None,
    argv: list[str] | None = None,
    **extra: int | str,
) -> int:
    """``python bench/NAME.py [--quick] [--pairs N]``: run one benchmark, print its tables.

    ``extra`` names further options with their defaults, of their type (``pairs_1m=5``).
    """
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--pairs", type=int, default=5)
    for name, default in extra.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    args = parser.parse_args(argv)
    options = [getattr(args, name) for name in extra]
    for text in run(args.quick, args.pairs, *options)["tables"]:
        print(text)
    return 0
