"""topo.cache: graph-check findings reused for an unchanged spec, recomputed otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from topo import cache
from topo.api import validate

CHECKS = Path(__file__).resolve().parent / "checks"
UNUSED = CHECKS / "t104_unused.yaml"  # two T104 warnings


def _validate_in_a_new_process(spec: Path, folder: Path, *sets: str) -> dict[str, object]:
    """Diagnostics of ``spec`` and whether networkx was imported, in a fresh interpreter."""
    script = (
        "import json, sys\n"
        "from topo.api import validate\n"
        "found = validate(sys.argv[1], sys.argv[2:])\n"
        "print(json.dumps({'diagnostics': [str(d) for d in found],\n"
        "                  'networkx': 'networkx' in sys.modules}))\n"
    )
    env = {**os.environ, "TOPO_CACHE_DIR": str(folder)}
    out = subprocess.run(
        [sys.executable, "-c", script, str(spec), *sets],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    )
    doc: dict[str, object] = json.loads(out.stdout)
    return doc


def test_an_unchanged_spec_is_not_analysed_again(tmp_path: Path) -> None:
    first = _validate_in_a_new_process(UNUSED, tmp_path)
    second = _validate_in_a_new_process(UNUSED, tmp_path)
    assert first["networkx"] is True
    assert second["networkx"] is False  # the findings came from the cache
    assert second["diagnostics"] == first["diagnostics"]
    assert len(first["diagnostics"]) == 2  # type: ignore[arg-type]
    assert all("warning[T104]" in d for d in first["diagnostics"])  # type: ignore[attr-defined]
    assert len(list((tmp_path / "graph").glob("*.json"))) == 1


def test_a_changed_document_is_analysed_again(tmp_path: Path) -> None:
    _validate_in_a_new_process(UNUSED, tmp_path)
    changed = _validate_in_a_new_process(UNUSED, tmp_path, "processes.consumer.replicas=2")
    assert changed["networkx"] is True
    assert len(list((tmp_path / "graph").glob("*.json"))) == 2


def test_cached_findings_keep_positions_selection_and_silencing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOPO_CACHE_DIR", str(tmp_path))
    spec = tmp_path / "spec.yaml"
    spec.write_text(UNUSED.read_text())
    (tmp_path / "noop.py").write_text((CHECKS / "noop.py").read_text())
    cold = [str(d) for d in validate(spec)]
    warm = [str(d) for d in validate(spec)]
    assert warm == cold
    assert warm[0].startswith(f"{spec}:4:3: warning[T104]: channel 'spare'")
    moved = tmp_path / "moved.yaml"  # the same document, one line lower: the same key
    moved.write_text("# one more line\n" + UNUSED.read_text())
    assert str(validate(moved)[0]).startswith(f"{moved}:5:3: warning[T104]: channel 'spare'")
    assert len(list((tmp_path / "graph").glob("*.json"))) == 1
    assert validate(spec, ignore=["T104"]) == []
    assert validate(spec, select=["T2"]) == []


def test_a_damaged_entry_is_recomputed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOPO_CACHE_DIR", str(tmp_path))
    expected = [str(d) for d in validate(UNUSED)]
    (entry,) = (tmp_path / "graph").glob("*.json")
    damages = [
        "{not json",
        json.dumps({"a": 1}),
        json.dumps([["T104", "warning", ["x"]]]),
        json.dumps([["T104", "fatal", ["channels"], "m", False, None]]),
        json.dumps([["T104", "warning", ["channels"], "m", False, "nobody"]]),
        json.dumps([["T030", "warning", ["channels"], "m", False, None]]),
    ]
    for damage in damages:
        entry.write_text(damage)
        assert [str(d) for d in validate(UNUSED)] == expected


def test_turned_off_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOPO_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("TOPO_CACHE", "0")
    assert len(validate(UNUSED)) == 2
    assert not (tmp_path / "graph").exists()
    assert cache.cache_dir() is None


def test_an_unwritable_folder_is_only_a_miss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("TOPO_CACHE_DIR", str(blocker / "cache"))  # under a file: cannot exist
    assert len(validate(UNUSED)) == 2


def test_default_folder_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOPO_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.cache_dir() == tmp_path / "topo"


def test_key_depends_on_every_input() -> None:
    base = cache.key({"processes": {"a": {}}}, [], 2)
    assert base == cache.key({"processes": {"a": {}}}, [], 2)
    assert len({base, cache.key({"processes": {}}, [], 2), cache.key({}, [1], 2)}) == 3
    assert base != cache.key({"processes": {"a": {}}}, [], 4)
    assert cache.key({1: "a", "b": 2}, [], 2) is None  # keys of mixed types: not cached


def test_runs_of_an_unseeded_spec_share_the_entry(tmp_path: Path) -> None:
    # Each run of a spec without a seed draws a new base seed: still the same graph.
    script = (
        "import sys\n"
        "from topo.api import run\n"
        "result = run(sys.argv[1], record=False, quiet=True, output=lambda *a: None)\n"
        "print(result.status, result.seed, 'networkx' in sys.modules)\n"
    )
    spec = tmp_path / "spec.yaml"
    spec.write_text("processes:\n  only:\n    target: noop:run\n")
    (tmp_path / "noop.py").write_text((CHECKS / "noop.py").read_text())
    env = {**os.environ, "TOPO_CACHE_DIR": str(tmp_path)}
    runs = [
        subprocess.run(
            [sys.executable, "-c", script, str(spec)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
            timeout=60,
        ).stdout.split()
        for _ in range(2)
    ]
    assert [r[0] for r in runs] == ["ok", "ok"]
    assert runs[0][1] != runs[1][1]  # two different seeds
    assert [r[2] for r in runs] == ["True", "False"]


def test_old_entries_are_pruned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOPO_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cache, "MAX_ENTRIES", 4)
    for n in range(4):
        cache.store(cache.key({"n": n}, 0, 1), "graph", [n])
        entry = tmp_path / "graph" / f"{cache.key({'n': n}, 0, 1)}.json"
        os.utime(entry, (1000.0 + n, 1000.0 + n))  # n = 0 is the oldest
    cache.store(cache.key({"n": 4}, 0, 1), "graph", [4])  # the fifth: over the limit
    kept = [n for n in range(5) if cache.load(cache.key({"n": n}, 0, 1), "graph") == [n]]
    assert kept == [3, 4]  # pruned to the newest half


# ----- validated specs --------------------------------------------------------------------

ECHO = """\
topo: 1
name: echo
params: {size: 3, label: "${env.TOPO_TEST_LABEL:-none}"}
processes:
  p:
    target: echo_target:echo
    args: {n: "${params.size}", label: "${params.label}"}
"""


@pytest.fixture
def echo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TOPO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TOPO_TEST_LABEL", raising=False)
    (tmp_path / "echo_target.py").write_text("def echo(n, label):\n    return n, label\n")
    spec = tmp_path / "echo.yaml"
    spec.write_text(ECHO)
    return spec


@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Each call of the validation itself, as ``api.load`` makes it."""
    import topo.api

    calls: list[object] = []
    real = topo.api.validated_document

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(args)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(topo.api, "validated_document", counted)
    return calls


def _args(plan: object) -> list[dict[str, object]]:
    return [i.args for i in plan.instances]  # type: ignore[attr-defined]


def test_a_spec_validated_before_is_not_validated_again(
    echo: Path, validations: list[object]
) -> None:
    from topo.api import load

    first = load(echo, ["params.size=5"])
    again = load(echo, ["params.size=5"])
    assert len(validations) == 1
    assert _args(first) == _args(again) == [{"n": 5, "label": "none"}]
    assert again.spec == first.spec and again.document.positions == first.document.positions
    assert first.seed != again.seed  # not seeded by the spec: a new seed each run still


def test_what_a_validation_read_changing_validates_again(
    echo: Path, validations: list[object], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from topo.api import load

    load(echo)
    monkeypatch.setenv("TOPO_TEST_OTHER", "x")  # not read by the spec: still the same
    load(echo)
    assert len(validations) == 1
    monkeypatch.setenv("TOPO_TEST_LABEL", "set")  # read by the spec
    assert _args(load(echo)) == [{"n": 3, "label": "set"}]
    assert len(validations) == 2
    assert _args(load(echo, ["params.size=4"])) == [{"n": 4, "label": "set"}]
    assert len(validations) == 3
    echo.write_text(ECHO.replace("size: 3", "size: 6"))
    assert _args(load(echo)) == [{"n": 6, "label": "set"}]
    assert len(validations) == 4
    overlay = tmp_path / "over.yaml"
    overlay.write_text("params: {size: 7}\n")
    assert _args(load(echo, files=[overlay])) == [{"n": 7, "label": "set"}]
    overlay.write_text("params: {size: 8}\n")
    assert _args(load(echo, files=[overlay])) == [{"n": 8, "label": "set"}]
    assert len(validations) == 6
    load(echo, files=[overlay])
    assert len(validations) == 6


def test_a_damaged_validated_entry_is_validated_again(
    echo: Path, validations: list[object], tmp_path: Path
) -> None:
    import pickle

    from topo.api import load

    load(echo)
    (entry,) = (tmp_path / "cache" / "validated").glob("*.pickle")
    for n, damage in enumerate([b"not a pickle", pickle.dumps([1, 2]), pickle.dumps({})], 2):
        entry.write_bytes(damage)
        assert _args(load(echo)) == [{"n": 3, "label": "none"}]
        assert len(validations) == n


def test_an_invalid_spec_is_refused_every_time(echo: Path, validations: list[object]) -> None:
    from topo.api import load
    from topo.errors import SpecError

    echo.write_text(ECHO.replace("args:", "argz:"))
    for _ in range(2):
        with pytest.raises(SpecError, match="unknown key 'argz'"):
            load(echo)
    assert len(validations) == 2


def _printed_in_a_new_process(script: str, args: list[str], folder: Path) -> list[str]:
    """The words ``script`` prints, run in a new interpreter in ``folder`` with its cache."""
    env = {**os.environ, "TOPO_CACHE_DIR": str(folder / "cache")}
    out = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True, text=True, env=env, timeout=60, cwd=folder,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_a_run_of_a_spec_validated_before_records_it_without_pydantic_again(
    echo: Path, tmp_path: Path
) -> None:
    # The record holds the resolved spec, which pydantic would dump by building its
    # serializer (~20 ms): the validation's cache entry keeps the spec's plain data, and
    # a recorded run does not import pydantic either.
    script = (
        "import sys\n"
        "from topo.api import run\n"
        "result = run(sys.argv[1], runs_dir=sys.argv[2], output=lambda *a: None)\n"
        "print(result.status, 'pydantic' in sys.modules)\n"
    )
    recorded = [str(echo), str(tmp_path / "runs")]
    assert _printed_in_a_new_process(script, recorded, tmp_path) == ["ok", "True"]  # validated
    assert _printed_in_a_new_process(script, recorded, tmp_path) == ["ok", "False"]  # cached
    first, again = [
        [line for line in path.read_text().splitlines() if not line.startswith("seed:")]
        for path in (tmp_path / "runs" / "echo").glob("*/resolved.yaml")
    ]
    assert first == again and "  size: 3" in first  # the same record, but for the seed


def test_a_spec_validated_before_is_run_without_yaml_or_pydantic(
    echo: Path, tmp_path: Path
) -> None:
    script = (
        "import sys\n"
        "from topo.api import run\n"
        "result = run(sys.argv[1], ['params.size=4'], record=False, output=lambda *a: None)\n"
        "print(result.status, 'yaml' in sys.modules, 'pydantic' in sys.modules)\n"
    )
    assert _printed_in_a_new_process(script, [str(echo)], tmp_path) == ["ok", "True", "True"]
    # Neither PyYAML (~10 ms) nor pydantic (~55 ms, with topo's models) is imported: the
    # cache holds the spec as frozen objects (topo/model.py).
    assert _printed_in_a_new_process(script, [str(echo)], tmp_path) == ["ok", "False", "False"]


def test_an_edit_anywhere_in_topo_is_a_miss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import topo

    fake = tmp_path / "topo"
    (fake / "checks").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    nested = fake / "checks" / "topology.py"  # the graph checks live in a subpackage
    nested.write_text("RULE = 1\n")
    (fake / "checks" / ".#topology.py").symlink_to("user@host.1234:1")  # an editor's lock
    monkeypatch.setattr(topo, "__file__", str(fake / "__init__.py"))
    monkeypatch.setattr(cache, "_fingerprint", None)
    before = cache.key("anything")  # the dangling link is no error
    nested.write_text("RULE = 22\n")
    monkeypatch.setattr(cache, "_fingerprint", None)
    assert cache.key("anything") != before
