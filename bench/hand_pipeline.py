"""specs/pipeline.yaml written by hand with multiprocessing: the baseline of bench/pipeline.py.

Same target functions (topo.examples.pipeline), same channels (a Queue of maxsize 64
for tasks, an unbounded Queue for results, a shared 64-bit Value), same start method.

    python bench/hand_pipeline.py --items 100000 --workers 4 --start-method spawn
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
from types import SimpleNamespace
from typing import Any

from topo.examples.pipeline import collect, produce, square


def run_collector(inbox: Any, workers: int, report: Any) -> None:
    # collect() reads only ctx.name and ctx.params["workers"].
    ctx = SimpleNamespace(name="collector", params={"workers": workers})
    report.put(collect(inbox=inbox, ctx=ctx))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--start-method", default="spawn", choices=["spawn", "fork", "forkserver"])
    args = parser.parse_args(argv)

    mp = multiprocessing.get_context(args.start_method)
    tasks = mp.Queue(64)
    results = mp.Queue()
    total = mp.Value("q", 0)
    report = mp.SimpleQueue()
    procs = [
        mp.Process(target=produce, kwargs={"out": tasks, "n": args.items, "workers": args.workers})
    ]
    procs += [
        mp.Process(
            target=square,
            kwargs={"inbox": tasks, "outbox": results, "total": total, "worker_id": i},
        )
        for i in range(args.workers)
    ]
    procs.append(mp.Process(target=run_collector, args=(results, args.workers, report)))
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    outcome = report.get()
    expected = sum(i * i for i in range(args.items))
    if any(p.exitcode for p in procs) or outcome["sum"] != expected or total.value != expected:
        print(f"hand pipeline failed: {outcome}, total {total.value}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
