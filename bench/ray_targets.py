"""Targets of bench/ray.py: a writer and a reader that time themselves."""

from __future__ import annotations

import time
from typing import Any


def write(out: Any, n: int, size: int) -> float:
    """Put ``n`` messages (an int, or a numpy array of ``size`` bytes); the start time."""
    if size:
        import numpy as np

        payload: Any = np.ones(size // 8, dtype=np.float64)
    else:
        payload = 12345
    started = time.monotonic()
    for _ in range(n):
        out.put(payload)
    out.put(None)
    return started


def read(inbox: Any) -> dict[str, Any]:
    """Get until None; the time of the last message and how many bytes came."""
    count = nbytes = 0
    while (item := inbox.get()) is not None:
        count += 1
        nbytes += getattr(item, "nbytes", 8)
    return {"ended": time.monotonic(), "count": count, "bytes": nbytes}
