"""Results and final state in JSON types, whatever targets return.

A module of its own, free of dataclasses and pydantic, because every instance
imports it to send its result back.
"""

from __future__ import annotations

import math
import sys
from typing import Any

# Tuples made once: ``bool | int | str`` written in the function would make a new union
# at each call (every instance calls this for its result).
_AS_IS = (bool, int, str)
_BYTES = (bytes, bytearray)
_SEQUENCES = (list, tuple, set, frozenset)
_SETS = (set, frozenset)


def to_jsonable(value: Any, _depth: int = 0) -> Any:
    """Convert to JSON types: tuples and sets become lists, bytes text, others their repr."""
    if _depth > 100:
        return repr(value)
    if value is None or isinstance(value, _AS_IS):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, _BYTES):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {str(k): to_jsonable(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, _SEQUENCES):
        items = sorted(value, key=repr) if isinstance(value, _SETS) else value
        return [to_jsonable(v, _depth + 1) for v in items]
    dataclasses = sys.modules.get("dataclasses")  # none can exist before it is imported
    if dataclasses and dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value), _depth + 1)
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars
    if callable(tolist):
        try:
            return to_jsonable(tolist(), _depth + 1)
        except Exception:
            pass
    return repr(value)
