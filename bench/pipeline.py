"""End to end: specs/pipeline.yaml through `topo run` against bench/hand_pipeline.py.

Both are timed as subprocesses, wall clock from launch to exit, interleaved
(topo, topo --no-watch, hand) round after round. The ratio is topo / hand of the
same round. --no-watch turns the deadlock detector off (no sampler thread in the
instances), so "topo --no-watch" vs "topo" is what the detector costs.

    python bench/pipeline.py            # full: 100,000 and 1,000,000 items (~14 min)
    python bench/pipeline.py --quick    # 10,000 items, spawn and fork, 2 workers
"""

from __future__ import annotations

import sys
from typing import Any

from common import (
    PYTHON,
    ROOT,
    Comparison,
    comparison_rows,
    interleave,
    save,
    standalone,
    table,
    timed_run,
)
from common import topo_cmd as topo

SPEC = "specs/pipeline.yaml"
HAND = str(ROOT / "bench" / "hand_pipeline.py")

# One 1,000,000-item run takes ~14 s (topo or hand, 2 workers) on the 2-core machine
# of docs/performance.md: the four configurations (2 and 4 workers, spawn and fork)
# are measured topo against hand, PAIRS_1M rounds each and no warm-up round (the
# 100,000-item runs before them warm the caches): ~10 minutes.
PAIRS_1M = 5


def variants(items: int, workers: int, method: str, no_watch: bool = True) -> dict[str, Any]:
    sets = [
        "--set", f"params.items={items}",
        "--set", f"params.workers={workers}",
        "--set", f"start_method={method}",
        "--set", "timeout=600",
    ]  # fmt: skip
    base = ["run", "--json", "-q", "--no-record", SPEC, *sets]
    hand = [PYTHON, HAND, "--items", str(items), "--workers", str(workers)]
    hand += ["--start-method", method]
    out: dict[str, Any] = {"topo": lambda: timed_run(topo(*base))}
    if no_watch:
        out["topo --no-watch"] = lambda: timed_run(topo(*base, "--no-watch"))
    out["hand"] = lambda: timed_run(hand)
    return out


def run(quick: bool = False, pairs: int = 5, pairs_1m: int = PAIRS_1M) -> dict[str, Any]:
    comparisons: list[Comparison] = []
    if quick:
        cases = [(10_000, 2, m) for m in ("spawn", "fork")]
    else:
        cases = [(100_000, w, m) for m in ("spawn", "fork") for w in (2, 4)]
    for k, (items, workers, method) in enumerate(cases):
        label = f"{items:,} items, {workers} workers, {method}"
        # --no-watch (the detector's cost) with 2 workers only, to stay in budget
        samples = interleave(
            variants(items, workers, method, no_watch=workers == 2),
            pairs,
            warmup=1 if k == 0 or quick else 0,
            progress=label,
        )
        comparisons.append(Comparison("pipeline", label, "s", samples, "hand"))
    big = [(1_000_000, w, m) for m in ("spawn", "fork") for w in (2, 4)]
    for items, workers, method in big if not quick and pairs_1m > 0 else []:
        label = f"{items:,} items, {workers} workers, {method}"
        samples = interleave(
            variants(items, workers, method, no_watch=False), pairs_1m, warmup=0, progress=label
        )
        comparisons.append(Comparison("pipeline", label, "s", samples, "hand"))
    headers, rows = comparison_rows(comparisons)
    text = table("pipeline: topo run vs hand-written multiprocessing, wall clock", headers, rows)
    save("pipeline", {"comparisons": [c.to_json() for c in comparisons], "quick": quick})
    return {"tables": [text], "comparisons": comparisons}


if __name__ == "__main__":
    sys.exit(standalone(run, __doc__, pairs_1m=PAIRS_1M))
