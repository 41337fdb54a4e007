"""What the timeline costs: the pipeline spec with tracing on (the default) against
``--no-trace``, whole runs of ``topo run``, rounds interleaved (on, off, on, off...).

    python bench/trace_cost.py [--quick]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "pipeline.yaml"


def once(*more: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "topo",
            "run",
            str(SPEC),
            "--no-record",
            "-q",
            "--set",
            "params.items=20000",
            "--set",
            "timeout=120",
            *more,
        ],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    return time.perf_counter() - started


def main(quick: bool) -> None:
    rounds = 4 if quick else 12
    on: list[float] = []
    off: list[float] = []
    for _ in range(rounds):
        on.append(once())
        off.append(once("--no-trace"))
    ratios = [a / b for a, b in zip(on, off, strict=True)]
    print(f"pipeline spec, 20,000 items, {rounds} interleaved rounds (seconds, whole run)")
    for label, samples in (("tracing on: ", on), ("--no-trace: ", off)):
        print(
            f"  {label} median {statistics.median(samples):.3f}"
            f" (min {min(samples):.3f}, max {max(samples):.3f})"
        )
    print(
        f"  on / off:    median {statistics.median(ratios):.3f} "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f})"
    )


if __name__ == "__main__":
    main("--quick" in sys.argv)
