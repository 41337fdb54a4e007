"""An on-disk cache of what topo worked out before: an unchanged spec is not analysed
or validated twice, a command line not parsed twice.

Three kinds of entries:

- **graph findings** (``graph/``). The graph checks (T1xx, topo/graph.py) are pure
  functions of the resolved document, the instances' bindings and the number of usable
  CPUs. Importing networkx and running them is most of what ``topo run`` costs before
  anything starts (~0.1 s of ~0.3 s), so their findings are kept, keyed by the resolved
  document (after ``--set``, ``${params...}`` and ``${env:...}``), each instance's
  bindings (with ``${replica}`` and the like filled in) and the usable CPUs; not the
  seed, which changes at every run that does not fix it. Positions are not cached:
  findings name places in the document, turned into ``file:line:col`` against the
  document being checked. The reference and target checks (T0xx) are never cached:
  they import the targets, whose code can change anywhere.
- **command lines** (``commands/``). What typer made of a ``topo run`` command line
  (topo/console.py): parsing it again would import typer and build its pydantic
  parameter adapters (~55 ms). Keyed by the arguments alone; the spec they name is read
  and checked afresh at every run.
- **validated specs** (``validated/``, pickled: the cache is the user's own, as their
  bytecode is). The spec and document ``topo.api.load`` validated, keyed by the bytes
  and names of the files, the overrides, and checked against the values of the
  environment variables the validation read: yaml's parse, pydantic's schema and its
  plugin lookup cost ~20 ms. Seeds and instances are worked out afresh from them.

Every key also covers topo itself (its version and the size and mtime of each of its
modules), the installed networkx and typer (where each is, its size and mtime), and
the Python version: an upgrade or an edit of topo's code is a miss.

Where: ``$TOPO_CACHE_DIR``, else ``$XDG_CACHE_HOME/topo``, else ``~/.cache/topo``.
``TOPO_CACHE=0`` turns the cache off. Any problem reading or writing it is a miss,
never an error; entries beyond ``MAX_ENTRIES`` are pruned, oldest first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Any

MAX_ENTRIES = 512
_FORMAT = 1  # bump when the shape of an entry changes

_fingerprint: str | None = None


def cache_dir() -> Path | None:
    """The cache's folder, or None when the cache is turned off."""
    if os.environ.get("TOPO_CACHE", "1") == "0":
        return None
    explicit = os.environ.get("TOPO_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "topo"


def _code_fingerprint() -> str:
    """topo's code and its libraries' as installed, computed once per process."""
    global _fingerprint
    if _fingerprint is None:
        import topo

        parts: list[Any] = [_FORMAT, topo.__version__, sys.version]
        root = Path(topo.__file__).parent
        for path in sorted(root.rglob("*.py")):  # the checks' and backends' modules too
            with contextlib.suppress(OSError):  # an editor's lock file, a dangling link
                st = path.stat()
                parts.append((str(path.relative_to(root)), st.st_size, st.st_mtime_ns))
        for library in ("networkx", "typer", "pydantic", "yaml"):
            spec = find_spec(library)  # where it is, without importing it
            if spec is not None and spec.origin:
                with contextlib.suppress(OSError):
                    st = os.stat(spec.origin)
                    parts.append((spec.origin, st.st_size, st.st_mtime_ns))
        _fingerprint = json.dumps(parts)
    return _fingerprint


def key(*inputs: Any) -> str | None:
    """The cache key of what a result depends on (JSON values); None if they cannot be hashed."""
    try:
        text = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):  # keys of mixed types, values JSON cannot hold
        return None
    digest = hashlib.sha256(_code_fingerprint().encode())
    digest.update(text.encode())
    return digest.hexdigest()


def load(cache_key: str | None, kind: str) -> Any:
    """The entry stored under ``cache_key``, or None on a miss."""
    raw = _read(cache_key, kind, ".json")
    try:
        return None if raw is None else json.loads(raw)
    except ValueError:
        return None


def store(cache_key: str | None, kind: str, entry: Any) -> None:
    """Keep ``entry`` (JSON) under ``cache_key``; silently does nothing on failure."""
    _write(cache_key, kind, ".json", json.dumps(entry).encode())


def load_objects(cache_key: str | None, kind: str) -> Any:
    """The Python objects stored under ``cache_key`` by ``store_objects``, or None.
    Pickled: the cache folder is the user's own, as their bytecode is."""
    raw = _read(cache_key, kind, ".pickle")
    try:
        return None if raw is None else pickle.loads(raw)
    except Exception:  # damaged, or written by objects that have changed since: a miss
        return None


def store_objects(cache_key: str | None, kind: str, entry: Any) -> None:
    """Keep ``entry`` (picklable objects) under ``cache_key``; nothing on failure."""
    try:
        raw = pickle.dumps(entry, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # pickling runs the objects' own code: any failure is a miss
        return
    _write(cache_key, kind, ".pickle", raw)


def _read(cache_key: str | None, kind: str, suffix: str) -> bytes | None:
    folder = cache_dir()
    if cache_key is None or folder is None:
        return None
    try:
        return (folder / kind / f"{cache_key}{suffix}").read_bytes()
    except OSError:
        return None


def _write(cache_key: str | None, kind: str, suffix: str, raw: bytes) -> None:
    folder = cache_dir()
    if cache_key is None or folder is None:
        return
    folder = folder / kind
    tmp = folder / f".{cache_key}.{os.getpid()}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(raw)
        os.replace(tmp, folder / f"{cache_key}{suffix}")  # atomic: readers see all or nothing
        _prune(folder)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def _prune(folder: Path) -> None:
    entries = list(os.scandir(folder))
    if len(entries) <= MAX_ENTRIES:
        return
    entries.sort(key=lambda e: e.stat().st_mtime_ns)
    for entry in entries[: len(entries) - MAX_ENTRIES // 2]:
        with contextlib.suppress(OSError):  # another topo pruning at the same time
            os.unlink(entry.path)
