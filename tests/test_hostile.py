"""Broken and hostile input: topo.validate always answers with diagnostics, never raises.

Hypothesis mutates the valid specs in specs/ as text (bytes dropped, inserted,
repeated) and as data (any node replaced by another YAML value), and the CLI is fed
the classic attacks, each of which must end in a clean message and exit 2, fast.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from topo.api import validate
from topo.errors import Diagnostic

SPECS = sorted((Path(__file__).resolve().parents[1] / "specs").glob("*.yaml"))
TEXTS = [p.read_text() for p in SPECS]
FIXTURE_OK = [HealthCheck.function_scoped_fixture]  # tmp_path is only written to, then read

yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)


def _validate_text(tmp_path: Path, text: str | bytes) -> list[Diagnostic]:
    path = tmp_path / "mutant.yaml"
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    else:
        path.write_bytes(text)
    found = validate(path)
    assert all(isinstance(d, Diagnostic) for d in found)
    for d in found:
        assert d.line >= 1 and d.col >= 1 and d.code.startswith("T") and d.message
    return found


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    index=st.integers(0, len(TEXTS) - 1),
    cut=st.integers(0, 10_000),
    length=st.integers(0, 40),
    insert=st.binary(max_size=12),
)
def test_text_mutations_never_raise(
    tmp_path: Path, index: int, cut: int, length: int, insert: bytes
) -> None:
    raw = TEXTS[index].encode()
    at = cut % (len(raw) + 1)
    _validate_text(tmp_path, raw[:at] + insert + raw[at + length :])


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            found += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _paths(v, (*prefix, i))
    return found


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(index=st.integers(0, len(TEXTS) - 1), pick=st.integers(0, 10_000), value=yaml_values)
def test_data_mutations_never_raise(tmp_path: Path, index: int, pick: int, value: Any) -> None:
    data = yaml.safe_load(TEXTS[index])
    paths = _paths(data)
    path = paths[pick % len(paths)]
    if not path:
        data = value
    else:
        node = data
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
    _validate_text(tmp_path, yaml.safe_dump(data, allow_unicode=True))


BILLION_LAUGHS = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(
            f"{c}: &{c} [{','.join([f'*{p}'] * 9)}]"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        ),
    ]
)

HOSTILE: dict[str, bytes] = {
    "empty": b"",
    "list at top": b"- a\n- b\n",
    "scalar at top": b"42\n",
    "binary garbage": bytes(range(256)) * 4,
    "not utf-8": b"processes:\n  p: {target: \xff\xfe}\n",
    "python tag": b'processes: !!python/object/apply:os.system ["echo pwned"]\n',
    "python name": b"processes: !!python/name:os.system\n",
    "billion laughs": BILLION_LAUGHS.encode(),
    "recursive alias": b"processes: &p {p: *p}\n",
    "deep flow nesting": b"[" * 50_000 + b"]" * 50_000,
    "deep block nesting": b"- " * 50_000 + b"x\n",
    "negative replicas": b"processes:\n  p: {target: m:f, replicas: -3}\n",
    "text replicas": b"processes:\n  p: {target: m:f, replicas: many}\n",
    "bad names": b"processes:\n  bad-name: {target: m:f}\n  '1x': {target: m:f}\n",
    "name used twice": b"processes:\n  p: {target: m:f}\n  p: {target: m:g}\n",
    "wrong types everywhere": b"topo: x\nseed: []\nparams: 3\nchannels: [1]\nprocesses: {}\n",
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_input_is_a_clean_error_fast(tmp_path: Path, name: str) -> None:
    path = tmp_path / "hostile.yaml"
    path.write_bytes(HOSTILE[name])
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "topo", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"{path}:" in done.stderr and "error[T0" in done.stderr
    assert not (tmp_path / "pwned").exists()
    assert elapsed < 3.0  # the parse itself is well under a second; the rest is start-up
