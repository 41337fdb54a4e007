"""Run the benchmarks, save bench/results/*.json, draw docs/performance.png, print the tables.

    python bench/run.py                      # everything (~10 minutes on 2 cores)
    python bench/run.py --quick              # smoke version (~1-2 minutes)
    python bench/run.py pipeline channels    # a subset, by name
    python bench/run.py --chart-only         # redraw the chart from bench/results/*.json

Needs the `bench` extra: pip install -e '.[bench]' (matplotlib, numpy).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from common import RESULTS, ROOT, machine

BENCHES = ("validate", "startup", "channels", "payloads", "transports", "pipeline")
CHART = ROOT / "docs" / "performance.png"


def _ratio_bars(
    ax: Any,
    labels: list[str],
    series: dict[str, list[dict[str, float]]],
    title: str,
    target: float | None,
    ylabel: str,
) -> None:
    import numpy as np

    x = np.arange(len(labels))
    width = 0.8 / max(1, len(series))
    for i, (name, stats) in enumerate(series.items()):
        med = [s["median"] for s in stats]
        low = [s["median"] - s["min"] for s in stats]
        high = [s["max"] - s["median"] for s in stats]
        ax.bar(x + i * width - 0.4 + width / 2, med, width, yerr=[low, high], capsize=3, label=name)
    ax.axhline(1.0, color="black", linewidth=0.8)
    if target is not None:
        ax.axhline(target, color="red", linestyle="--", linewidth=1, label=f"target {target:g}")
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.legend(fontsize=7)


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def chart(path: Path = CHART) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(16, 9.5))
    axes = axes.ravel()
    pipeline = _load("pipeline")
    if pipeline:
        cs = pipeline["comparisons"]
        series: dict[str, list[Any]] = {"topo": [], "topo --no-watch": []}
        for c in cs:
            for v in series:
                s = c["summary"].get(v, {}).get("ratio")
                series[v].append(s or {"median": 0, "min": 0, "max": 0})
        _ratio_bars(
            axes[0],
            [c["case"] for c in cs],
            series,
            "pipeline end to end: topo / hand (wall clock)",
            1.05,
            "ratio",
        )
    channels = _load("channels")
    if channels:
        cs = channels["comparisons"]
        _ratio_bars(
            axes[1],
            [c["case"] for c in cs],
            {"watched / raw": [c["summary"]["watched (topo)"]["ratio"] for c in cs]},
            "channels: µs/msg, as topo hands them (detector on) / raw object",
            1.05,
            "ratio",
        )
    startup = _load("startup")
    if startup:
        cs = startup["comparisons"]
        _ratio_bars(
            axes[2],
            [c["case"] for c in cs],
            {"topo / hand": [c["summary"]["topo"]["ratio"] for c in cs]},
            "start-up: launch to all instances running, topo / hand",
            1.10,
            "ratio",
        )
        ws = startup["wall"]
        ax = axes[3]
        labels = [c["case"] for c in ws]
        diffs = [
            [a - b for a, b in zip(c["samples"]["topo"], c["samples"]["hand"], strict=True)]
            for c in ws
        ]
        ax.boxplot(diffs, tick_labels=labels)
        ax.axhline(
            0.2, color="red", linestyle="--", linewidth=1, label="target +0.2 s (1 instance)"
        )
        ax.set_xticks(range(1, len(labels) + 1), labels, rotation=30, ha="right", fontsize=7)
        ax.set_title("start-up wall clock: topo - hand, pair by pair (s)", fontsize=9)
        ax.legend(fontsize=7)
    validate = _load("validate")
    if validate:
        cs = validate["comparisons"]
        ax = axes[4]
        labels = [c["case"] for c in cs]
        labelled: set[str] = set()
        for i, c in enumerate(cs):
            for j, (variant, s) in enumerate(c["summary"].items()):
                if variant == c["baseline"]:
                    role, colour, marker = "floor (by hand)", "C2", "s"
                elif "no graph cache" in variant:
                    role, colour, marker = "topo, graph checks not cached", "C1", "o"
                else:
                    role, colour, marker = "topo", "C0", "o"
                ax.errorbar(
                    i + (j - 1) * 0.2,
                    s["median"],
                    yerr=[[s["median"] - s["min"]], [s["max"] - s["median"]]],
                    fmt=marker,
                    color=colour,
                    capsize=3,
                    label=None if role in labelled else role,
                )
                labelled.add(role)
            target = c.get("extra", {}).get("target_s")
            if target:
                ax.hlines(
                    target,
                    i - 0.4,
                    i + 0.4,
                    color="red",
                    linestyles="--",
                    label=f"target {target:g} s",
                )
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=7)
        ax.set_title("topo --help and topo validate: wall clock (s)", fontsize=9)
        ax.legend(fontsize=7)
    payloads = _load("payloads")
    if payloads:
        c = payloads["comparisons"][0]
        ax = axes[5]
        names = list(c["summary"])
        gbs = [(1 << 20) / c["summary"][v]["median"] / 1e3 for v in names]
        ax.bar(names, gbs, color=["C0", "C2"][: len(names)])
        ax.set_title("1 MiB numpy arrays through a queue (GB/s, median)", fontsize=9)
        ax.set_ylabel("GB/s", fontsize=8)
    for ax in axes:
        if not ax.has_data():
            ax.set_axis_off()
    m = machine()
    fig.suptitle(
        f"topo vs hand-written multiprocessing - {m['nproc']} cores, {m['cpu']}, "
        f"Python {m['python']} (bars: median, whiskers: min-max over pairs)",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"subset of {', '.join(BENCHES)}")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--pairs", type=int, default=5, help="rounds of each comparison")
    parser.add_argument(
        "--pairs-1m",
        type=int,
        default=None,
        help="rounds of the 1,000,000-item pipeline (default: bench/pipeline.py's)",
    )
    parser.add_argument("--chart-only", action="store_true")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {BENCHES}")
    if not args.chart_only:
        m = machine()
        print(
            f"machine: {m['nproc']} cores, {m['cpu']}, Python {m['python']}, "
            f"load average {m['load_avg_at_start'][0]:.2f}",
            file=sys.stderr,
        )
        tables = []
        for name in args.names or BENCHES:
            started = time.monotonic()
            print(f"== {name}", file=sys.stderr, flush=True)
            kwargs: dict[str, Any] = {"quick": args.quick, "pairs": args.pairs}
            if name == "pipeline" and args.pairs_1m is not None:
                kwargs["pairs_1m"] = args.pairs_1m
            result = importlib.import_module(name).run(**kwargs)
            took = time.monotonic() - started
            print(f"== {name}: {took:.0f} s", file=sys.stderr, flush=True)
            tables += result["tables"]
            tables.append(f"({name}: {took:.0f} s)")
        print("\n\n".join(tables))
    print(f"chart: {chart().relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
