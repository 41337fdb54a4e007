"""Shared helpers for the unit tests: small specs and modules written into tmp_path.

The helpers are handed out as fixtures (``write_spec``, ``write_module``) so that test
files never import ``conftest`` by name (tests/e2e has a conftest of its own).
"""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# This machine, and CI's, sets PYTHONDONTWRITEBYTECODE=1: every topo process and every
# instance the tests start would compile topo's modules again (an editable install has
# no bytecode of them), ~10% of the suite's time. A default Python writes its bytecode,
# and so do the tests and the processes they start.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False


@pytest.fixture(autouse=True, scope="session")
def _topo_cache_of_this_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # topo caches graph-check findings (topo/cache.py); tests keep theirs apart from the
    # user's ~/.cache, in a folder the CLI runs they start inherit.
    folder = tmp_path_factory.mktemp("topo-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("TOPO_CACHE_DIR", str(folder))
    yield
    mp.undo()


def write_spec_file(folder: Path, text: str, name: str = "spec.yaml") -> Path:
    """Write ``text`` (dedented) as ``folder/name`` and return its path."""
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def write_module_file(folder: Path, name: str, text: str) -> Path:
    """Write the Python module ``folder/<name>.py`` (dedented) and return its path."""
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def write_spec() -> Callable[..., Path]:
    """``write_spec(tmp_path, text, name="spec.yaml")`` -> the spec's path."""
    return write_spec_file


@pytest.fixture
def write_module() -> Callable[..., Path]:
    """``write_module(tmp_path, "mod", text)`` -> the module's path."""
    return write_module_file


@pytest.fixture(autouse=True)
def _restore_import_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Targets are imported with the spec's folder first on sys.path: undo that after each
    test and forget modules imported from temporary folders, so that modules of the same
    name in different tests never meet."""
    path = list(sys.path)
    base = str(tmp_path_factory.getbasetemp())
    yield
    sys.path[:] = path
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(base):
            del sys.modules[name]
