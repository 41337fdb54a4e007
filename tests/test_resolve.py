"""topo.resolve: --set overrides, ${...} interpolation, replicas, seeds, pipe ends."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import topo
from topo.api import load
from topo.errors import SpecError
from topo.resolve import (
    Binding,
    Overrides,
    Plan,
    apply_override,
    build_plan,
    derive_seed,
    instance_name,
    override_text,
    parse_override,
    prepare_document,
    resolved_spec,
    scalar_text,
    validated_document,
    yaml_scalar,
)
from topo.yamlpos import load_text

PROCESS = "processes:\n  p:\n    target: m:f\n"


def plan(
    text: str,
    overrides: Overrides = (),
    environ: Mapping[str, str] | None = None,
    seed: int | None = 1,
) -> Plan:
    spec, doc = validated_document(load_text(text, "s.yaml"), overrides, environ or {})
    return build_plan(spec, doc, seed=seed)


def problems(
    text: str, overrides: Overrides = (), environ: Mapping[str, str] | None = None
) -> list[str]:
    with pytest.raises(SpecError) as info:
        plan(text, overrides, environ)
    return [str(d) for d in info.value.diagnostics]


def args_of(text: str, **kwargs: Any) -> dict[str, Any]:
    [instance] = plan(text, **kwargs).instances
    return instance.args


# ----- ${params.X} ------------------------------------------------------------------------


def test_whole_reference_keeps_its_type() -> None:
    args = args_of(
        "params: {x: 4, f: 1.5, b: true, l: [1, 2], m: {k: v}, n: null}\n"
        + PROCESS
        + "    args: {x: '${params.x}', f: '${params.f}', b: '${params.b}', l: '${params.l}',"
        " m: '${params.m}', n: '${params.n}'}\n"
    )
    assert args == {"x": 4, "f": 1.5, "b": True, "l": [1, 2], "m": {"k": "v"}, "n": None}


def test_embedded_reference_becomes_text() -> None:
    args = args_of(PROCESS.join(["params: {x: 4}\n", "    args: {a: 'n=${params.x}!'}\n"]))
    assert args == {"a": "n=4!"}


def test_reference_with_spaces_and_several_in_one_string() -> None:
    args = args_of(
        "params: {x: 4, y: b}\n" + PROCESS + "    args: {a: '${ params.x }-${params.y}'}\n"
    )
    assert args == {"a": "4-b"}


def test_nested_param_paths() -> None:
    args = args_of("params: {x: {y: [10, 20]}}\n" + PROCESS + "    args: {a: '${params.x.y.1}'}\n")
    assert args == {"a": 20}


def test_typed_keys_take_interpolated_values() -> None:
    p = plan("params: {workers: 3}\n" + PROCESS + "    replicas: '${params.workers}'\n")
    assert [i.name for i in p.instances] == ["p[0]", "p[1]", "p[2]"]


def test_params_referring_to_params() -> None:
    args = args_of(
        "params: {x: 4, y: '${params.x}', z: 'v${params.y}'}\n"
        + PROCESS
        + "    args: {y: '${params.y}', z: '${params.z}'}\n"
    )
    assert args == {"y": 4, "z": "v4"}


def test_params_in_the_plan_are_resolved() -> None:
    p = plan("params: {x: 4, y: '${params.x}'}\n" + PROCESS)
    assert p.params == {"x": 4, "y": 4}


def test_params_in_a_loop() -> None:
    assert problems("params: {x: '${params.y}', y: '${params.x}'}\n" + PROCESS) == [
        "s.yaml:1:13: error[T020]: parameters refer to each other in a loop: "
        "params.y -> params.x -> params.y",
        "s.yaml:1:31: error[T020]: parameters refer to each other in a loop: "
        "params.x -> params.y -> params.x",
    ]


def test_param_referring_to_itself() -> None:
    assert problems("params: {x: 'a${params.x}'}\n" + PROCESS) == [
        "s.yaml:1:13: error[T020]: parameters refer to each other in a loop: params.x -> params.x"
    ]


def test_unknown_param() -> None:
    assert problems("params: {x: 4}\n" + PROCESS + "    args: {a: '${params.y}'}\n") == [
        "s.yaml:5:15: error[T020]: '${params.y}' names no parameter"
    ]


def test_unknown_reference() -> None:
    assert problems(PROCESS + "    args:\n      a: ok\n      b: 'x ${foo}'\n") == [
        "s.yaml:6:10: error[T020]: '${foo}' is not a known reference "
        "(use params.NAME, env.NAME, replica, replicas, name, seed)"
    ]


def test_every_unresolved_reference_is_reported() -> None:
    found = problems(PROCESS + "    args: {a: '${params.a}', b: '${params.b}'}\n")
    assert [d.split(": ", 1)[0] for d in found] == ["s.yaml:4:15", "s.yaml:4:33"]


# ----- ${env.X} ---------------------------------------------------------------------------


def test_env_reference() -> None:
    args = args_of(
        PROCESS + "    args: {a: '${env.HOME_X}', b: 'at ${env.HOME_X}/x', c: '${env.N}'}\n",
        environ={"HOME_X": "/h", "N": "8"},
    )
    assert args == {"a": "/h", "b": "at /h/x", "c": "8"}  # environment values are text


def test_env_default() -> None:
    args = args_of(
        PROCESS + "    args: {a: '${env.NOPE:-dflt}', b: '${env.NOPE:-}', c: 'x${env.NOPE:-7}',"
        " d: '${env.SET:-unused}'}\n",
        environ={"SET": "yes"},
    )
    assert args == {"a": "dflt", "b": "", "c": "x7", "d": "yes"}


def test_missing_env_var_is_located() -> None:
    assert problems(PROCESS + "    args:\n      a: '${env.NOPE}'\n") == [
        "s.yaml:5:10: error[T020]: environment variable 'NOPE' is not set "
        "(write ${env.NOPE:-default})"
    ]


@pytest.mark.parametrize("value", ["/tmp/${x}", "a$${b", "${replica}", "${params.x}"])
def test_env_values_are_taken_literally(value: str) -> None:
    # The environment is outside the spec: `${` in a variable's value is text, not a
    # reference to resolve (nor `$${` an escape), wherever the variable is used.
    [inst] = plan(
        "params: {x: 4}\n" + PROCESS + "    args: {a: '${env.X}', b: 'at ${env.X}'}\n"
        "    env: {E: '${env.X}'}\n",
        environ={"X": value},
    ).instances
    assert inst.args == {"a": value, "b": f"at {value}"}
    assert inst.env == {"E": value}


def test_env_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOPO_TEST_VAR", "from-env")
    doc = prepare_document(load_text(PROCESS + "    args: {a: '${env.TOPO_TEST_VAR}'}\n"))
    assert doc.data["processes"]["p"]["args"] == {"a": "from-env"}


def test_interpolation_keeps_positions() -> None:
    text = "params: {x: 4}\n" + PROCESS + "    args: {a: '${params.x}'}\n"
    doc = prepare_document(load_text(text))
    assert doc.position(("processes", "p", "args", "a")) == (5, 15)


# ----- $${ escape -------------------------------------------------------------------------


def test_escape_in_args_and_env() -> None:
    [inst] = plan(
        "params: {x: 4}\n"
        + PROCESS
        + "    args: {a: '$${params.x}', b: 'a $${x} ${params.x}', c: '$${replica}'}\n"
        "    env: {E: 'v$${x}'}\n"
    ).instances
    assert inst.args == {"a": "${params.x}", "b": "a ${x} 4", "c": "${replica}"}
    assert inst.env == {"E": "v${x}"}


def test_escape_in_params() -> None:
    # `$${` writes a literal `${` wherever it appears, not only in args and env.
    p = plan("params: {s: 'cost $${x}'}\n" + PROCESS)
    assert p.params == {"s": "cost ${x}"}


def test_escape_in_channel_init() -> None:
    p = plan("channels:\n  d: {kind: dict, init: {k: 'v $${y}'}}\n" + PROCESS)
    assert p.spec.channels["d"].init == {"k": "v ${y}"}  # type: ignore[union-attr]


def test_escape_through_a_param_reference() -> None:
    args = args_of("params: {t: 'lit $${x}'}\n" + PROCESS + "    args: {a: '${params.t}'}\n")
    assert args == {"a": "lit ${x}"}


# ----- --set ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "keys", "value"),
    [
        ("params.workers=8", ["params", "workers"], 8),
        ("a=true", ["a"], True),
        ("a=1.5", ["a"], 1.5),
        ("a=null", ["a"], None),
        ("a='8'", ["a"], "8"),
        ("a=hello world", ["a"], "hello world"),
        ("a=", ["a"], ""),
        ("a=x=y", ["a"], "x=y"),
        ("a=: odd", ["a"], ": odd"),  # not YAML: kept as written
        (" a.b =2", ["a", "b"], 2),
    ],
)
def test_parse_override(text: str, keys: list[str], value: Any) -> None:
    assert parse_override(text) == (keys, value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("noequals", "--set 'noequals' is not of the form dotted.key=value"),
        ("=3", "--set '=3' is not of the form dotted.key=value"),
        ("a=[1, 2]", "--set 'a=[1, 2]': the value must be a single value, not a collection"),
        ("a={b: 1}", "--set 'a={b: 1}': the value must be a single value, not a collection"),
    ],
)
def test_parse_override_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_override(text)
    assert str(info.value) == message


def test_apply_override_creates_mappings() -> None:
    data: dict[str, Any] = {"params": {"x": 1}}
    apply_override(data, ["params", "new", "deep"], 3)
    assert data == {"params": {"x": 1, "new": {"deep": 3}}}


def test_apply_override_expands_a_short_form() -> None:
    data: dict[str, Any] = {"channels": {"tasks": "queue"}}
    apply_override(data, ["channels", "tasks", "maxsize"], 4)
    assert data == {"channels": {"tasks": {"kind": "queue", "maxsize": 4}}}


def test_overrides_in_a_plan() -> None:
    p = plan(
        "params: {workers: 4}\nchannels: {tasks: queue}\n"
        + PROCESS
        + "    replicas: '${params.workers}'\n",
        overrides=["params.workers=2", "+params.new=x", "channels.tasks.maxsize=4"],
    )
    assert p.params == {"workers": 2, "new": "x"}
    assert p.spec.channels["tasks"].maxsize == 4  # type: ignore[union-attr]
    assert [i.name for i in p.instances] == ["p[0]", "p[1]"]


def test_override_of_a_list_item() -> None:
    p = plan("params: {l: [1, 2]}\n" + PROCESS, overrides=["params.l.1=9"])
    assert p.params == {"l": [1, 9]}


def test_override_creating_an_unknown_key_is_a_schema_error() -> None:
    assert problems(PROCESS, ["+a.b=true"]) == [
        "s.yaml:1:1: error[T010]: unknown key 'a' in the spec: "
        "topo does not know what to do with it"
    ]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (  # a typo would have added a key, and the run gone on without the value
            "params.wrokers=8",
            "params.wrokers is not in the spec (did you mean params.workers?); "
            "to add it, write +params.wrokers=...",
        ),
        (
            "channels.taks.maxsize=3",
            "channels.taks is not in the spec (did you mean channels.tasks?); "
            "to add it, write +channels.taks.maxsize=...",
        ),
        (
            "channels.tasks.maxsixe=3",
            "channels.tasks.maxsixe is not a key of channels.tasks "
            "(did you mean channels.tasks.maxsize?)",
        ),
        ("strat_method=fork", "strat_method is not a key of the spec (did you mean start_method?)"),
        (
            "processes.p.args.nn=1",
            "processes.p.args.nn is not in the spec (did you mean processes.p.args.n?); "
            "to add it, write +processes.p.args.nn=...",
        ),
    ],
)
def test_an_override_of_a_path_the_spec_lacks_is_t021(override: str, message: str) -> None:
    text = "params: {workers: 4}\nchannels: {tasks: queue}\n" + PROCESS + "    args: {n: 1}\n"
    assert problems(text, [override]) == [f"s.yaml: error[T021]: --set {override!r}: {message}"]


def test_keys_the_format_knows_and_plus_keys_are_set() -> None:
    # Left to their defaults in the spec, known to the format: no + needed.
    p = plan(
        "params: {workers: 4}\nchannels: {tasks: queue}\n" + PROCESS,
        overrides=[
            "start_method=fork",
            "timeout=9",
            "channels.tasks.transport=socket",
            "processes.p.restart=on-failure",
            "+params.extra=1",
            "+processes.p.args.n=2",
        ],
    )
    assert p.spec.start_method == "fork"
    assert p.spec.channels["tasks"].transport == "socket"  # type: ignore[union-attr]
    assert p.params == {"workers": 4, "extra": 1}
    assert p.instances[0].args == {"n": 2}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("noequals", "--set 'noequals' is not of the form dotted.key=value"),
        (
            "params.x=[1]",
            "--set 'params.x=[1]': the value must be a single value, not a collection",
        ),
        (
            "params.l.5=2",
            "--set 'params.l.5=2' cannot be applied: list assignment index out of range",
        ),
        (
            "params.l.x=2",
            "--set 'params.l.x=2' cannot be applied: invalid literal for int() with base 10: 'x'",
        ),
    ],
)
def test_bad_override_is_t021(override: str, message: str) -> None:
    assert problems("params: {l: [1, 2]}\n" + PROCESS, [override]) == [
        f"s.yaml: error[T021]: {message}"
    ]


def test_overrides_through_the_api(tmp_path: Path, write_spec: Callable[..., Path]) -> None:
    path = write_spec(tmp_path, "params: {workers: 4, name: a}\n" + PROCESS)
    assert load(path, {"params.workers": 8, "params.name": "b"}).params == {
        "workers": 8,
        "name": "b",
    }
    assert load(path, ["params.workers=9"]).params["workers"] == 9
    assert load(path, "params.workers=7").params["workers"] == 7  # one text: one override


def test_a_mapping_keeps_the_text_8(tmp_path: Path, write_spec: Callable[..., Path]) -> None:
    # It was read again as YAML, and became the int 8.
    path = write_spec(tmp_path, "params: {label: a}\n" + PROCESS)
    assert load(path, {"params.label": "8"}).params["label"] == "8"


@pytest.mark.parametrize(
    "value",
    [8, -3, 2.5, 1e20, True, False, None, "8", "true", "null", "", "a=b", "x=1,y=2", " pad "],
)
def test_a_mapping_keeps_python_values_as_they_are(
    tmp_path: Path, write_spec: Callable[..., Path], value: Any
) -> None:
    path = write_spec(tmp_path, "params: {v: old}\n" + PROCESS)
    got = load(path, {"params.v": value}).params["v"]
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("params.v=8", 8),
        ("params.v=true", True),
        ("params.v=null", None),
        ("params.v='8'", "8"),
        ("params.v=a=b", "a=b"),
        ("params.v=", ""),
    ],
)
def test_texts_are_read_as_yaml_scalars(
    tmp_path: Path, write_spec: Callable[..., Path], text: str, value: Any
) -> None:
    path = write_spec(tmp_path, "params: {v: old}\n" + PROCESS)
    got = load(path, [text]).params["v"]
    assert got == value and type(got) is type(value)


def test_the_record_of_overrides_reads_back_as_the_same_values(
    tmp_path: Path, write_spec: Callable[..., Path]
) -> None:
    path = write_spec(tmp_path, "params: {a: 0, b: 0, c: 0, d: 0, e: 0, f: 0}\n" + PROCESS)
    given = {
        "params.a": "8",
        "params.b": 8,
        "params.c": None,
        "params.d": "k=v",
        "params.e": 1e-3,
        "params.f": "yes",
    }
    first = load(path, {**given, "+params.g": True})  # + adds a key the spec lacks
    assert first.overrides[:2] == ('params.a="8"', "params.b=8")  # the record, as texts
    again = load(path, list(first.overrides))  # as topo rerun reads them
    assert again.params == first.params
    assert again.overrides == first.overrides
    # the texts of --set are recorded as they were given
    assert load(path, ["params.a=8", "params.b='x'"]).overrides == ("params.a=8", "params.b='x'")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"params.v": [1, 2]},
            "override 'params.v': the value must be a single value, not a collection",
        ),
        (
            {"params.v": Path("x")},
            "override 'params.v': the value must be a single value, not a PosixPath",
        ),
        ({"": 1}, "override '': the key must be a dotted path such as params.workers"),
        (
            {"params.v=1": 1},
            "override 'params.v=1': the key must be a dotted path such as params.workers",
        ),
        ({"params.v.x": 1}, "override 'params.v.x': params.v is 0, not a mapping"),
        (
            [("params.v",)],
            "override ('params.v',) is neither key=value text nor a (key, value) pair",
        ),
    ],
)
def test_bad_mapping_override_is_t021(overrides: Any, message: str) -> None:
    assert problems("params: {v: 0}\n" + PROCESS, overrides) == [f"s.yaml: error[T021]: {message}"]


_SINGLE_VALUES = (
    st.text()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.booleans()
    | st.none()
    | st.dates()
    | st.sampled_from(["8", "true", "~", "null", "1e3", "1.0e+3", "- a", "a: b", "#", "'q'"])
)


@settings(max_examples=300, deadline=None)
@given(_SINGLE_VALUES)
def test_scalar_text_reads_back_as_the_same_value(value: Any) -> None:
    read = yaml_scalar(scalar_text(value))
    assert read == value and type(read) is type(value)
    assert parse_override(override_text(("params.v", value))) == (["params", "v"], value)


def test_scalar_text_of_odd_floats() -> None:
    assert scalar_text(1e20) == "1.0e+20"  # json's 1e+20 would read back as text
    assert yaml_scalar(scalar_text(float("inf"))) == float("inf")
    assert math.isnan(yaml_scalar(scalar_text(float("nan"))))


# ----- replicas and per-instance references -----------------------------------------------


def test_instance_names() -> None:
    p = plan("processes:\n  producer: {target: m:f}\n  worker: {target: m:f, replicas: 3}\n")
    assert [i.name for i in p.instances] == ["producer", "worker[0]", "worker[1]", "worker[2]"]
    assert [i.replica for i in p.instances] == [0, 0, 1, 2]
    assert [i.replicas for i in p.instances] == [1, 3, 3, 3]
    assert [i.name for i in p.instances_of("worker")] == ["worker[0]", "worker[1]", "worker[2]"]
    assert instance_name("w", 0, 1) == "w"
    assert instance_name("w", 1, 2) == "w[1]"


def test_per_instance_references() -> None:
    p = plan(
        "processes:\n  w:\n    target: m:f\n    replicas: 2\n"
        "    args: {r: '${replica}', n: '${replicas}', nm: '${name}', s: '${seed}',"
        " t: 'w-${replica}-of-${replicas}'}\n"
        "    env: {R: '${replica}', S: '${seed}', N: '${name}'}\n"
    )
    for i, inst in enumerate(p.instances):
        assert inst.args == {
            "r": i,
            "n": 2,
            "nm": "w",
            "s": inst.seed,
            "t": f"w-{i}-of-2",
        }
        assert inst.env == {"R": str(i), "S": str(inst.seed), "N": "w"}


def test_instance_reference_through_a_param() -> None:
    p = plan(
        "params: {tag: 'w${replica}'}\nprocesses:\n  w:\n    target: m:f\n    replicas: 2\n"
        "    args: {t: '${params.tag}'}\n"
    )
    assert [i.args["t"] for i in p.instances] == ["w0", "w1"]


# ----- seeds ------------------------------------------------------------------------------


def test_seeds_are_deterministic_and_differ_per_instance() -> None:
    text = "processes:\n  a: {target: m:f}\n  w: {target: m:f, replicas: 3}\n"
    first = [i.seed for i in plan(text, seed=1234).instances]
    again = [i.seed for i in plan(text, seed=1234).instances]
    other = [i.seed for i in plan(text, seed=1235).instances]
    assert first == again
    assert len(set(first)) == 4
    assert first != other
    assert first == [derive_seed(1234, n) for n in ("a", "w[0]", "w[1]", "w[2]")]
    assert all(0 <= s < 2**32 for s in first)


def test_seed_does_not_depend_on_the_order_of_processes() -> None:
    ab = plan("processes:\n  a: {target: m:f}\n  b: {target: m:f}\n", seed=5)
    ba = plan("processes:\n  b: {target: m:f}\n  a: {target: m:f}\n", seed=5)
    assert {i.name: i.seed for i in ab.instances} == {i.name: i.seed for i in ba.instances}


def test_base_seed_from_the_spec_or_the_caller_or_fresh() -> None:
    text = "seed: 42\n" + PROCESS
    assert plan(text, seed=None).seed == 42
    assert plan(text, seed=7).seed == 7
    fresh = {plan(PROCESS, seed=None).seed for _ in range(5)}
    assert len(fresh) > 1


def test_derive_seed_is_stable() -> None:
    # sha256 based: the same in every process and Python version
    assert derive_seed(1, "p") == 2190127917


# ----- pipe ends and barriers -------------------------------------------------------------

PIPES = """\
channels:
  one: {kind: pipe, duplex: false}
  two: pipe
locks:
  b: barrier
  b3: {kind: barrier, parties: 3}
  unused: barrier
processes:
  writer:
    target: m:f
    outputs: {tx: one}
    uses: {end: two, b: b}
  reader:
    target: m:f
    inputs: {rx: one}
    uses: {end: two}
  w:
    target: m:f
    replicas: 3
    uses: {b: b, c: b3}
"""


def binding(p: Plan, instance: str, param: str) -> Binding:
    [inst] = [i for i in p.instances if i.name == instance]
    [b] = [b for b in inst.bindings if b.param == param]
    return b


def test_simplex_pipe_ends() -> None:
    p = plan(PIPES)
    assert binding(p, "reader", "rx") == Binding("rx", "one", frozenset({"input"}), 0)
    assert binding(p, "writer", "tx") == Binding("tx", "one", frozenset({"output"}), 1)


def test_duplex_pipe_ends_in_declaration_order() -> None:
    p = plan(PIPES)
    assert binding(p, "writer", "end").end == 0
    assert binding(p, "reader", "end").end == 1


def test_duplex_pipe_ends_follow_the_spec_order() -> None:
    swapped = PIPES.replace("  writer:", "  aaa:").replace("  reader:", "  writer:")
    swapped = swapped.replace("  aaa:", "  reader:")
    p = plan(swapped)  # now `reader` is written first, with the sending simplex end
    assert binding(p, "reader", "end").end == 0
    assert binding(p, "writer", "end").end == 1


def test_non_pipe_bindings_have_no_end() -> None:
    assert binding(plan(PIPES), "w[0]", "b").end is None


def test_barrier_parties() -> None:
    p = plan(PIPES)
    assert p.barrier_parties == {"b": 4, "b3": 3, "unused": 1}


def test_same_channel_in_inputs_and_outputs_is_one_binding() -> None:
    p = plan(
        "channels: {q: queue}\nprocesses:\n  p:\n    target: m:f\n"
        "    inputs: {q: q}\n    outputs: {q: q}\n"
    )
    [inst] = p.instances
    assert inst.bindings == (Binding("q", "q", frozenset({"input", "output"})),)


def test_users_of() -> None:
    p = plan(PIPES)
    assert [(i.name, b.param) for i, b in p.users_of("b")] == [
        ("writer", "b"),
        ("w[0]", "b"),
        ("w[1]", "b"),
        ("w[2]", "b"),
    ]


def test_plan_name_defaults_to_the_file_stem(
    tmp_path: Path, write_spec: Callable[..., Path]
) -> None:
    path = write_spec(tmp_path, PROCESS, name="my_run.yaml")
    p = load(path, seed=3)
    assert p.name == "my_run"
    assert p.spec_dir == tmp_path.resolve()
    assert load(write_spec(tmp_path, "name: given\n" + PROCESS)).name == "given"


def test_resolved_spec() -> None:
    data = resolved_spec(plan("params: {x: 4}\n" + PROCESS + "    args: {a: '${params.x}'}\n"))
    assert data == {
        "params": {"x": 4},
        "processes": {"p": {"target": "m:f", "args": {"a": 4}}},
        "name": "s",
        "seed": 1,
    }


def test_override_through_a_scalar_is_refused() -> None:
    # `params.x` is 3: setting params.x.y would silently replace it with a mapping.
    assert problems("params: {x: 3}\n" + PROCESS, ["params.x.y=1"]) == [
        "s.yaml: error[T021]: --set params.x.y: params.x is 3, not a mapping"
    ]


def test_resolved_spec_reads_back_the_same(tmp_path: Path) -> None:
    import yaml

    from topo.resolve import resolved_spec

    first = plan(
        "params: {s: 'cost $${x}', n: 2}\n"
        "channels:\n  d: {kind: dict, init: {k: 'v $${y}'}}\n"
        + PROCESS
        + "    args: {a: '${replica} $${z}', n: '${params.n}'}\n    uses: {d: d}\n"
    )
    again = plan(yaml.safe_dump(resolved_spec(first)))
    assert again.params == first.params == {"s": "cost ${x}", "n": 2}
    assert again.spec.channels == first.spec.channels
    assert [i.args for i in again.instances] == [{"a": "0 ${z}", "n": 2}]


def test_each_replica_can_bind_its_own_channel() -> None:
    p = plan(
        "channels: {q0: queue, q1: queue}\n"
        "processes:\n  w:\n    target: m:f\n    replicas: 2\n"
        "    inputs: {inbox: 'q${replica}'}\n"
    )
    assert [[(b.param, b.name) for b in i.bindings] for i in p.instances] == [
        [("inbox", "q0")],
        [("inbox", "q1")],
    ]


def test_an_instance_reference_outside_a_process_is_t020() -> None:
    assert problems("channels:\n  q: {kind: queue, maxsize: '${replica}'}\n" + PROCESS) == [
        "s.yaml:2:29: error[T020]: '${replica}' has a value only in a process's args, env, "
        "inputs, outputs, uses"
    ]


def test_a_plan_is_frozen_once_built(tmp_path: Path) -> None:
    import dataclasses

    spec = tmp_path / "s.yaml"
    spec.write_text("processes:\n  a: {target: 'm:f'}\n")
    plan = topo.load(spec, ["params.x=1"], spec_dir=tmp_path / "elsewhere")
    assert plan.overrides == ("params.x=1",)
    assert plan.spec_dir == (tmp_path / "elsewhere").resolve()
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.spec_dir = tmp_path  # type: ignore[misc]
    assert plan != topo.load(spec, ["params.x=1"])  # plans are compared by identity


def test_every_problem_of_the_document_in_one_pass() -> None:
    # An unresolved reference (T020) no longer hides the schema's findings (T010); a
    # value that is the unresolved reference is not blamed a second time by the schema.
    text = (
        "processes:\n"
        "  p:\n"
        "    target: m:f\n"
        "    replica: 2\n"
        '    replicas: "${params.n}"\n'
        "    wat: 1\n"
    )
    assert problems(text) == [
        "s.yaml:4:5: error[T010]: unknown key 'replica' in process 'p' (did you mean "
        "'replicas'?): topo does not know what to do with it",
        "s.yaml:5:15: error[T020]: '${params.n}' names no parameter",
        "s.yaml:6:5: error[T010]: unknown key 'wat' in process 'p': topo does not know what "
        "to do with it",
    ]
