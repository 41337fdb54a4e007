"""Each queue transport against multiprocessing.Queue, faster-fifo and the limits.

One writer process puts N messages, one reader process gets them; the time runs from
the moment both are ready (a barrier) to the reader's last message. Rounds interleave
every variant (A B C ... A B C ...); ratios are taken against ``mp.Queue`` round by
round.

- small messages (a 16-byte bytes object): mp.Queue, topo's ``socket`` and ``pipe``
  transports (topo/backends/local/transport.py), faster-fifo (if installed,
  ``pip install -e '.[bench]'``), and the limit: a raw ``os.write`` of 16 bytes into a
  pipe read in 1 MiB chunks (no pickling, no framing).
- 1 MiB and 16 MiB numpy arrays: mp.Queue, ``socket``, ``pipe``, ``transport: shm``
  (shared-memory slots), and the limit: ``np.copyto`` of the same array in one process
  (a plain memcpy: every transport copies each array at least once).

    python bench/transports.py [--quick]
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from functools import partial
from typing import Any

from common import Comparison, comparison_rows, interleave, save, standalone, table

from topo.backends.local import transport
from topo.backends.local.shm import ShmQueue

MP = multiprocessing.get_context("fork")  # start-up is not timed here
MiB = 1 << 20
SMALL = b"0123456789abcdef"  # 16 bytes


def _has_faster_fifo() -> bool:
    try:
        import faster_fifo  # noqa: F401
    except ImportError:
        return False
    return True


def _make(variant: str, size: int) -> tuple[Any, Any]:
    """(the queue, what to free it with)"""
    if variant == "mp.Queue":
        return MP.Queue(), None
    if variant in ("socket", "pipe"):
        q = transport.build("queue", variant, 0, MP)
        return q, q.free
    if variant == "shm":
        q = ShmQueue(MP, 8, size + 4096)
        return q, q.unlink
    if variant == "faster-fifo":
        import faster_fifo

        return faster_fifo.Queue(max_size_bytes=64 * MiB), None
    raise AssertionError(variant)


def _writer(q: Any, payload: Any, n: int, barrier: Any, times: Any) -> None:
    barrier.wait()
    times.put(("start", time.monotonic()))
    for _ in range(n):
        q.put(payload)


def _reader(q: Any, n: int, barrier: Any, times: Any) -> None:
    barrier.wait()
    for _ in range(n):
        q.get()
    times.put(("end", time.monotonic()))


def _raw_writer(fd: int, n: int, barrier: Any, times: Any) -> None:
    barrier.wait()
    times.put(("start", time.monotonic()))
    for _ in range(n):
        os.write(fd, SMALL)


def _raw_reader(fd: int, n: int, barrier: Any, times: Any) -> None:
    barrier.wait()
    left = n * len(SMALL)
    while left > 0:
        left -= len(os.read(fd, MiB))
    times.put(("end", time.monotonic()))


def one_round(variant: str, n: int, size: int) -> float:
    """µs per message for one run of n messages of ``size`` bytes (0: small)."""
    if variant == "memcpy":
        import numpy as np

        src = np.ones(size, dtype="uint8")
        dst = np.empty_like(src)
        start = time.monotonic()
        for _ in range(n):
            np.copyto(dst, src)
        return (time.monotonic() - start) / n * 1e6
    barrier = MP.Barrier(2)
    times = MP.SimpleQueue()
    free = None
    if variant == "os.pipe":
        read_end, write_end = os.pipe()
        writer = MP.Process(target=_raw_writer, args=(write_end, n, barrier, times))
        reader = MP.Process(target=_raw_reader, args=(read_end, n, barrier, times))
    else:
        q, free = _make(variant, size)
        if size:
            import numpy as np

            payload: Any = np.ones(size, dtype="uint8")
        else:
            payload = SMALL
        writer = MP.Process(target=_writer, args=(q, payload, n, barrier, times))
        reader = MP.Process(target=_reader, args=(q, n, barrier, times))
    writer.start()
    reader.start()
    stamps = dict(times.get() for _ in range(2))
    writer.join()
    reader.join()
    if variant == "os.pipe":
        os.close(read_end)
        os.close(write_end)
    if free is not None:
        free()
    return (stamps["end"] - stamps["start"]) / n * 1e6


def run(quick: bool = False, pairs: int = 5) -> dict[str, Any]:
    scale = 0.2 if quick else 1.0
    small = ["mp.Queue", "socket", "pipe", *(["faster-fifo"] if _has_faster_fifo() else [])]
    cases = [
        (0, int(100_000 * scale), [*small, "os.pipe"]),
        (MiB, int(400 * scale), ["mp.Queue", "socket", "pipe", "shm", "memcpy"]),
        (16 * MiB, int(40 * scale), ["mp.Queue", "socket", "pipe", "shm", "memcpy"]),
    ]
    comparisons = []
    for size, n, variants in cases:
        what = "16-byte messages" if not size else f"{size // MiB} MiB numpy arrays"
        label = f"{what} ({n:,})"
        samples = interleave(
            {v: partial(one_round, v, n, size) for v in variants}, pairs, progress=label
        )
        comparisons.append(
            Comparison("transports", label, "us/msg", samples, "mp.Queue", {"size": size, "n": n})
        )
    headers, rows = comparison_rows(comparisons)
    text = table("transports: one writer, one reader (µs per message, median)", headers, rows)
    rates = []
    for c in comparisons:
        size = c.extra["size"]
        for variant, values in c.samples.items():
            med = sorted(values)[len(values) // 2]
            rate = f"{1e6 / med:,.0f} msgs/s" if not size else f"{size / med / 1e3:.2f} GB/s"
            rates.append([c.case, variant, f"{med:.2f}", rate])
    headers = ["case", "variant", "us", "rate"]
    text += "\n\n" + table("throughput (from the medians)", headers, rates)
    save("transports", {"comparisons": [c.to_json() for c in comparisons], "quick": quick})
    return {"tables": [text], "comparisons": comparisons}


if __name__ == "__main__":
    sys.exit(standalone(run, __doc__))
