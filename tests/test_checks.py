"""topo.checks: every reference check, triggered by a bad spec, and quiet on good ones."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import topo.checks.document
import topo.checks.placement
import topo.checks.topology  # noqa: F401
from topo.api import validate
from topo.checks import REGISTRY, run_checks

SPECS = sorted((Path(__file__).resolve().parents[1] / "specs").glob("*.yaml"))

TARGETS = """\
def anything(**kwargs):
    pass


def takes_a(a):
    pass


class Pool:
    def __init__(self, size):
        self.size = size
"""


@pytest.fixture
def check(
    tmp_path: Path, write_spec: Callable[..., Path], write_module: Callable[..., Path]
) -> Callable[[str], list[str]]:
    """``check(text)``: the reference diagnostics (T0xx) of a spec written beside the module
    ``tmod``, without the file name. Graph checks (T1xx) are tested on their own."""
    write_module(tmp_path, "tmod", TARGETS)

    def run(text: str) -> list[str]:
        path = write_spec(tmp_path, text)
        found = [d for d in validate(path) if d.code.startswith("T0")]
        return [str(d).removeprefix(f"{path}:") for d in found]

    return run


def test_registry_holds_the_reference_checks() -> None:
    for code in ("T030", "T031", "T032", "T033", "T040", "T041", "T050", "T051", "T052"):
        assert REGISTRY[code].severity == "error"
        assert REGISTRY[code].code == code
        assert REGISTRY[code].summary


# ----- T030 -------------------------------------------------------------------------------


def test_t030_binding_names_nothing(check: Callable[[str], list[str]]) -> None:
    assert check(
        """\
        channels:
          tasks: queue
        processes:
          p:
            target: tmod:anything
            inputs:
              inbox: taks
            uses:
              x: nothing
        """
    ) == [
        "7:14: error[T030]: process 'p' binds 'taks' under inputs, but no channel or lock has "
        "that name (did you mean 'tasks'?)",
        "9:10: error[T030]: process 'p' binds 'nothing' under uses, but no channel or lock has "
        "that name",
    ]


# ----- T031 -------------------------------------------------------------------------------


def test_t031_lock_outside_uses(check: Callable[[str], list[str]]) -> None:
    assert check(
        """\
        locks:
          l: lock
        processes:
          p:
            target: tmod:anything
            inputs: {lk: l}
            outputs: {lk2: l}
        """
    ) == [
        "6:18: error[T031]: lock 'l' is under inputs of 'p': locks go under uses",
        "7:20: error[T031]: lock 'l' is under outputs of 'p': locks go under uses",
    ]


def test_t031_one_way_pipe_under_uses(check: Callable[[str], list[str]]) -> None:
    assert check(
        """\
        channels:
          link: {kind: pipe, duplex: false}
        processes:
          p:
            target: tmod:anything
            uses: {pp: link}
          q:
            target: tmod:anything
            inputs: {rx: link}
        """
    ) == [
        "6:16: error[T031]: one-way pipe 'link' is under uses of 'p', so it is not clear which "
        "end it gets: put it under inputs (receiving end) or outputs (sending end)",
    ]


# ----- T032 -------------------------------------------------------------------------------


def test_t032_after(check: Callable[[str], list[str]]) -> None:
    assert check(
        """\
        processes:
          p:
            target: tmod:anything
            after: [p, q, prodcer]
          producer:
            target: tmod:anything
        """
    ) == [
        "4:13: error[T032]: process 'p' waits for itself to finish, so it never starts",
        "4:16: error[T032]: process 'p' waits for 'q', which is not a process",
        "4:19: error[T032]: process 'p' waits for 'prodcer', which is not a process "
        "(did you mean 'producer'?)",
    ]


# ----- T033 -------------------------------------------------------------------------------


def test_t033_channel_and_lock_share_a_name(check: Callable[[str], list[str]]) -> None:
    assert check(
        """\
        channels:
          x: queue
        locks:
          x: lock
        processes:
          p:
            target: tmod:anything
        """
    ) == [
        "4:3: error[T033]: 'x' is both a channel and a lock: bindings could not tell which "
        "one is meant",
    ]


# ----- T040 -------------------------------------------------------------------------------


def test_t040_target_cannot_be_imported(check: Callable[[str], list[str]]) -> None:
    assert check(
        """\
        processes:
          p:
            target: tmod_nope_zzz:f
          q:
            target: tmod:nope
        """
    ) == [
        "3:13: error[T040]: target of 'p': module 'tmod_nope_zzz' is not found",
        "5:13: error[T040]: target of 'q': 'tmod' has no attribute 'nope'",
    ]


def test_t040_import_error_in_the_target_module(
    check: Callable[[str], list[str]], tmp_path: Path, write_module: Callable[..., Path]
) -> None:
    write_module(tmp_path, "tmod_broken", "raise RuntimeError('no database')\n")
    assert check("processes:\n  p:\n    target: tmod_broken:run\n") == [
        "3:13: error[T040]: target of 'p': importing 'tmod_broken' fails: "
        "RuntimeError: no database",
    ]


def test_t040_object_factory(check: Callable[[str], list[str]]) -> None:
    assert check(
        """\
        channels:
          o: {kind: object, factory: "tmod:Nope"}
        processes:
          p:
            target: tmod:anything
            uses: {o: o}
        """
    ) == ["2:30: error[T040]: factory of 'o': 'tmod' has no attribute 'Nope'"]


# ----- T041 -------------------------------------------------------------------------------


def test_t041_signature(check: Callable[[str], list[str]]) -> None:
    assert check(
        """\
        channels:
          q: queue
        processes:
          r:
            target: tmod:takes_a
            args: {b: 1}
          s:
            target: tmod:takes_a
          t:
            target: tmod:takes_a
            outputs: {a: q}
        """
    ) == [
        "6:12: error[T041]: tmod:takes_a takes no parameter 'b': it is takes_a(a), and calling "
        "it for 'r' would fail",
        "8:13: error[T041]: tmod:takes_a needs 'a', which the spec does not give: it is "
        "takes_a(a), and calling it for 's' would fail",
    ]


def test_t041_and_t040_say_what_was_meant(check: Callable[[str], list[str]]) -> None:
    assert check(
        """\
        processes:
          r:
            target: tmod:takes_a
            args: {aa: 1}
          s:
            target: tmod:takes_aa
          t:
            target: tmood:takes_a
        """
    ) == [
        "4:12: error[T041]: tmod:takes_a takes no parameter 'aa' (did you mean 'a'?): it is "
        "takes_a(a), and calling it for 'r' would fail",
        "6:13: error[T040]: target of 's': 'tmod' has no attribute 'takes_aa' (did you mean "
        "'takes_a'?)",
        "8:13: error[T040]: target of 't': module 'tmood' is not found (did you mean 'tmod'?)",
    ]


def test_t041_object_factory(check: Callable[[str], list[str]]) -> None:
    assert check(
        """\
        channels:
          o2: {kind: object, factory: "tmod:Pool", args: {sz: 1}}
        processes:
          p:
            target: tmod:anything
            uses: {o: o2}
        """
    ) == [
        "2:31: error[T041]: tmod:Pool takes no parameter 'sz': building 'o2' would fail",
    ]


# ----- T050 -------------------------------------------------------------------------------


def test_t050_duplex_pipe_needs_two_instances(check: Callable[[str], list[str]]) -> None:
    assert check(
        """\
        channels:
          d: pipe
          e: pipe
        processes:
          a:
            target: tmod:anything
            replicas: 2
            uses: {d: d}
          b:
            target: tmod:anything
            uses: {d: d}
        """
    ) == [
        "2:3: error[T050]: duplex pipe 'd' has two ends but is bound by 3 instance(s) "
        "(a[0], a[1], b): it needs exactly two (sharing an end corrupts data)",
        "3:3: error[T050]: duplex pipe 'e' has two ends but is bound by 0 instance(s) "
        "(no instance): it needs exactly two (sharing an end corrupts data)",
    ]


def test_t050_one_way_pipe_end_shared(check: Callable[[str], list[str]]) -> None:
    assert check(
        """\
        channels:
          one: {kind: pipe, duplex: false}
        processes:
          reader:
            target: tmod:anything
            replicas: 2
            inputs: {rx: one}
          writer:
            target: tmod:anything
            outputs: {tx: one}
        """
    ) == [
        "2:3: error[T050]: the receiving end of one-way pipe 'one' is held by 2 instances "
        "(reader[0], reader[1]): a pipe end used by several processes at once corrupts data",
    ]


# ----- T051 -------------------------------------------------------------------------------


def test_t051_condition_lock(check: Callable[[str], list[str]]) -> None:
    assert check(
        """\
        locks:
          c1: {kind: condition, lock: nolock}
          c2: {kind: condition, lock: sem}
          c3: {kind: condition, lock: ml}
          c4: {kind: condition, lock: rl}
          c5: {kind: condition, lock: lok}
          c6: condition
          sem: semaphore
          ml: {kind: lock, via: manager}
          rl: rlock
          lk: lock
        processes:
          p:
            target: tmod:anything
        """
    ) == [
        "2:31: error[T051]: condition 'c1' is over 'nolock', which is not a lock",
        "3:31: error[T051]: condition 'c2' is over 'sem', a semaphore: a condition needs a "
        "lock or rlock",
        "4:31: error[T051]: condition 'c3' and its lock 'ml' must both be built by the "
        "manager, or neither",
        "6:31: error[T051]: condition 'c5' is over 'lok', which is not a lock (did you mean 'lk'?)",
    ]


# ----- T052 -------------------------------------------------------------------------------


def test_t052_pipe_transport_with_several_readers(check: Callable[[str], list[str]]) -> None:
    assert check(
        """\
        channels:
          jobs: {kind: queue, transport: pipe}
          one: {kind: queue, transport: pipe}
          any: {kind: queue, transport: socket}
        processes:
          boss:
            target: tmod:anything
            outputs: {a: jobs, b: one, c: any}
          worker:
            target: tmod:anything
            replicas: 6
            inputs: {a: jobs, c: any}
          single:
            target: tmod:anything
            inputs: {b: one}
        """
    ) == [
        "2:34: error[T052]: queue 'jobs' has transport: pipe, which one reader reads ahead "
        "in batches, but 6 instances read it (worker[0], worker[1], worker[2], worker[3] "
        "and 2 more): use transport: auto (or socket) for several readers",
    ]


# ----- select, ignore, good specs ---------------------------------------------------------


def test_errors_cannot_be_ignored(
    tmp_path: Path, write_spec: Callable[..., Path], write_module: Callable[..., Path]
) -> None:
    write_module(tmp_path, "tmod", TARGETS)
    path = write_spec(tmp_path, "processes:\n  p:\n    target: tmod:anything\n    after: [q]\n")
    for kwargs in ({"ignore": ["T032"]}, {"ignore": ["T"]}, {"select": ["T1"]}):
        assert [d.code for d in validate(path, **kwargs) if d.is_error] == ["T032"]


def test_run_checks_is_sorted_and_unique(
    tmp_path: Path, write_spec: Callable[..., Path], write_module: Callable[..., Path]
) -> None:
    from topo.api import load

    write_module(tmp_path, "tmod", TARGETS)
    path = write_spec(
        tmp_path,
        "processes:\n  p:\n    target: tmod:anything\n    after: [q]\n    uses: {x: nothing}\n",
    )
    found = run_checks(load(path))
    assert found == sorted(set(found))
    assert [d.code for d in found if d.code.startswith("T0")] == ["T032", "T030"]  # by position


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_good_specs_have_no_errors(spec: Path) -> None:
    errors = [d for d in validate(spec) if d.is_error]
    assert errors == []


def test_there_are_good_specs() -> None:
    assert len(SPECS) >= 10


def test_ndarray_with_an_unknown_dtype_is_t060(
    tmp_path: Path, write_spec: Callable[..., Path]
) -> None:
    path = write_spec(
        tmp_path,
        "channels:\n  img: {kind: ndarray, shape: [2], dtype: floaty}\n"
        "processes:\n  p: {target: topo.examples.arrays:inspect, uses: {image: img}}\n",
    )
    found = [str(d) for d in validate(path) if d.code == "T060"]
    assert found == [
        f"{path}:2:43: error[T060]: ndarray 'img' has dtype 'floaty', which numpy does not "
        "know (try float64, int32)"
    ]
