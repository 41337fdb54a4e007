"""Start N instances of a target by hand, the baseline of bench/startup.py.

Each instance calls the target (which returns time.time() and time.process_time() at
its start) and sends the values back; the script prints, as JSON, the latest time (the
moment all N were running) and the median CPU an instance spent before its target.
Under forkserver the target's module is preloaded in the fork server, as topo does.

    python bench/hand_startup.py --dir DIR --target startup_target:stamp -n 8 --start-method spawn
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing
import statistics
import sys
from typing import Any


def instance(target: str, out: Any) -> None:
    module, _, name = target.partition(":")
    out.put(getattr(importlib.import_module(module), name)())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, help="folder of the target's module")
    parser.add_argument("--target", required=True, help="module:function")
    parser.add_argument("-n", type=int, default=1)
    parser.add_argument("--start-method", default="spawn", choices=["spawn", "fork", "forkserver"])
    args = parser.parse_args(argv)
    sys.path.insert(0, args.dir)
    mp = multiprocessing.get_context(args.start_method)
    if args.start_method == "forkserver":
        mp.set_forkserver_preload([args.target.partition(":")[0]])
    out = mp.SimpleQueue()
    procs = [mp.Process(target=instance, args=(args.target, out)) for _ in range(args.n)]
    for p in procs:
        p.start()
    stamps = [out.get() for _ in procs]
    for p in procs:
        p.join()
    if any(p.exitcode for p in procs):
        return 1
    print(json.dumps([max(at for at, _ in stamps), statistics.median(cpu for _, cpu in stamps)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
