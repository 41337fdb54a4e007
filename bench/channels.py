"""Per-message cost of each channel kind as topo hands it to targets, against the raw object.

A producer process sends N messages and a consumer process receives them; the time
runs from the moment both are ready (a barrier) to the consumer's last message.
"watched (topo)" is what a target gets from `topo run`: the multiprocessing object
itself, with the deadlock detector's board attached and its sampler thread looking
at the main thread's stack every 50 ms in each process, as in a run; "raw" is the
same object with no detector. Rounds interleave raw and watched.

Kinds: queue (multiprocessing.Queue), simple_queue, pipe (one-way), manager dict
(the producer sets key i, the consumer then gets it: one message = one set + one
get; topo hands the DictProxy itself, unwrapped, so both variants are the same
object and their ratio shows the noise). Payloads: a small int and 1 MiB of bytes.

    python bench/channels.py [--quick]
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from functools import partial
from typing import Any

from common import Comparison, comparison_rows, interleave, save, standalone, table

from topo.backends.local import instrument as watch
from topo.spec import CHANNEL_MODELS

MiB = 1 << 20
KINDS = ("queue", "simple_queue", "pipe", "dict")
MP = multiprocessing.get_context("fork")  # start-up is not timed here


def _payload(size: int) -> Any:
    return 12345 if size == 0 else b"x" * size


def _attach(board: watch.Board | None, slot: int, kind: str, chan: Any) -> None:
    if board is not None:
        watch.attach(board, slot)
        if CHANNEL_MODELS[kind].traits.blocking:  # what a run's sampler watches
            watch.sample({id(chan): 0})


def _producer(
    kind: str, chan: Any, n: int, size: int, barrier: Any, out: Any, go: Any, board: Any
) -> None:
    _attach(board, 0, kind, chan)
    msg = _payload(size)
    barrier.wait()
    out.put(("start", time.monotonic()))
    if kind == "pipe":
        for _ in range(n):
            chan.send(msg)
    elif kind == "dict":
        for i in range(n):
            chan[i] = msg
        go.set()
    else:
        for _ in range(n):
            chan.put(msg)


def _consumer(
    kind: str, chan: Any, n: int, size: int, barrier: Any, out: Any, go: Any, board: Any
) -> None:
    _attach(board, 1, kind, chan)
    barrier.wait()
    if kind == "pipe":
        for _ in range(n):
            chan.recv()
    elif kind == "dict":
        go.wait()  # until every key is set
        for i in range(n):
            chan[i]
    else:
        for _ in range(n):
            chan.get()
    out.put(("end", time.monotonic()))


def one_round(kind: str, n: int, size: int, watched: bool, manager: Any) -> float:
    """µs per message for one run of n messages."""
    board = watch.Board(2, 1) if watched else None
    raw: Any
    ends: tuple[Any, Any]
    if kind == "queue":
        raw = MP.Queue()
        ends = (raw, raw)
    elif kind == "simple_queue":
        raw = MP.SimpleQueue()
        ends = (raw, raw)
    elif kind == "pipe":
        recv_end, send_end = MP.Pipe(duplex=False)
        ends = (send_end, recv_end)
    else:
        raw = manager.dict()
        ends = (raw, raw)
    barrier = MP.Barrier(2)
    times = MP.Queue()
    go = MP.Event()  # dict only: the consumer starts once the producer is done
    args = (n, size, barrier, times, go, board)
    producer = MP.Process(target=_producer, args=(kind, ends[0], *args))
    consumer = MP.Process(target=_consumer, args=(kind, ends[1], *args))
    producer.start()
    consumer.start()
    stamps = dict(times.get(timeout=300) for _ in range(2))
    producer.join()
    consumer.join()
    if kind == "dict":
        raw.clear()
    return (stamps["end"] - stamps["start"]) / n * 1e6


def counts(quick: bool) -> dict[tuple[str, int], int]:
    # Sized for roughly 0.3-1 s per run on a 2-core machine.
    scale = 0.25 if quick else 1.0
    base = {
        ("queue", 0): 40_000,
        ("simple_queue", 0): 40_000,
        ("pipe", 0): 60_000,
        ("dict", 0): 5_000,
        ("queue", MiB): 300,
        ("simple_queue", MiB): 300,
        ("pipe", MiB): 300,
        ("dict", MiB): 100,
    }
    return {k: max(20, int(v * scale)) for k, v in base.items()}


def run(quick: bool = False, pairs: int = 5) -> dict[str, Any]:
    comparisons = []
    with MP.Manager() as manager:
        for (kind, size), n in counts(quick).items():
            label = f"{kind}, {'1 MiB' if size else 'small'} ({n:,} msgs)"
            # Small messages are the noisiest (two processes, a queue's feeder thread and
            # the samplers share two cores): more rounds for them.
            rounds = pairs if quick or size else max(pairs, 9)
            samples = interleave(
                {
                    "watched (topo)": partial(one_round, kind, n, size, True, manager),
                    "raw": partial(one_round, kind, n, size, False, manager),
                },
                rounds,
                progress=label,
            )
            comparisons.append(
                Comparison(
                    "channels",
                    label,
                    "us/msg",
                    samples,
                    "raw",
                    extra={"kind": kind, "size": size, "n": n},
                )
            )
    headers, rows = comparison_rows(comparisons)
    # messages/s and MB/s beside µs/message, from the medians
    headers = [*headers, "msgs/s", "MB/s"]
    i = 0
    for c in comparisons:
        for variant in c.samples:
            us = c.summary()[variant]["median"]
            rate = 1e6 / us
            mbs = rate * c.extra["size"] / 1e6 if c.extra["size"] else 0
            rows[i] += [f"{rate:,.0f}", f"{mbs:,.0f}" if mbs else "-"]
            i += 1
    text = table("channels: µs per message, producer process -> consumer process", headers, rows)
    save("channels", {"comparisons": [c.to_json() for c in comparisons], "quick": quick})
    return {"tables": [text], "comparisons": comparisons}


if __name__ == "__main__":
    sys.exit(standalone(run, __doc__))
