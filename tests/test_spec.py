"""topo.spec: the pydantic models and the located diagnostics of schema problems."""

from __future__ import annotations

import json

import pytest

from topo.errors import SpecError
from topo.resolve import prepare_document
from topo.spec import (
    ArrayChannel,
    BarrierLock,
    LockLock,
    PipeChannel,
    QueueChannel,
    Resources,
    SemaphoreLock,
    Spec,
    ValueChannel,
    did_you_mean,
    json_schema,
    parse_duration,
    spec_from_document,
)
from topo.yamlpos import load_text

PROCESS = "processes:\n  p:\n    target: m:f\n"
CHANNEL_KINDS = (
    "queue, simple_queue, joinable_queue, pipe, value, array, dict, list, namespace, object, "
    "ndarray"
)
LOCK_KINDS = "lock, rlock, semaphore, bounded_semaphore, condition, event, barrier"


def spec(text: str) -> Spec:
    return spec_from_document(load_text(text, "s.yaml"))


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        spec(text)
    return [str(d) for d in info.value.diagnostics]


# ----- short forms and defaults -----------------------------------------------------------


def test_short_forms_expand_to_their_kind() -> None:
    s = spec("channels:\n  tasks: queue\n  link: pipe\nlocks:\n  l: lock\n  b: barrier\n" + PROCESS)
    assert s.channels["tasks"] == QueueChannel(kind="queue")
    assert isinstance(s.channels["link"], PipeChannel)
    assert s.locks["l"] == LockLock(kind="lock")
    assert isinstance(s.locks["b"], BarrierLock)


def test_defaults() -> None:
    s = spec(
        "channels:\n  link: pipe\n  v: value\n  q: queue\n"
        "locks:\n  b: barrier\n  sem: semaphore\n" + PROCESS
    )
    link = s.channels["link"]
    assert isinstance(link, PipeChannel) and link.duplex is True
    v = s.channels["v"]
    assert isinstance(v, ValueChannel) and v.lock is True and v.init == 0 and v.via is None
    q = s.channels["q"]
    assert isinstance(q, QueueChannel) and q.maxsize == 0
    b = s.locks["b"]
    assert isinstance(b, BarrierLock) and b.parties is None and b.timeout is None
    sem = s.locks["sem"]
    assert isinstance(sem, SemaphoreLock) and sem.value == 1
    assert (s.topo, s.start_method, s.seed, s.timeout, s.name) == (1, "spawn", None, None, None)
    p = s.processes["p"]
    assert (p.replicas, p.daemon, p.restart, p.max_restarts, p.timeout) == (
        1,
        False,
        "never",
        3,
        None,
    )
    assert p.args == p.inputs == p.outputs == p.uses == p.env == {}
    assert p.after == []


def test_value_typecode_is_inferred_from_init() -> None:
    s = spec(
        "channels:\n  a: {kind: value, init: 1.5}\n  b: value\n  c: {kind: value, init: x}\n"
        "  d: {kind: value, type: c_double}\n" + PROCESS
    )
    assert [s.channels[n].typecode for n in "abcd"] == ["d", "q", "c", "c_double"]  # type: ignore[union-attr]


def test_array_with_init_only() -> None:
    s = spec("channels:\n  a: {kind: array, init: [1.0, 2.0]}\n" + PROCESS)
    a = s.channels["a"]
    assert isinstance(a, ArrayChannel)
    assert (a.length, a.typecode, a.lock) == (2, "d", True)


def test_models_are_frozen() -> None:
    s = spec(PROCESS)
    with pytest.raises(Exception):  # noqa: B017 - pydantic's ValidationError
        s.processes["p"].replicas = 3


def test_env_values_become_strings() -> None:
    s = spec(PROCESS + "    env: {A: 1, B: true, C: 1.5, D: text}\n")
    assert s.processes["p"].env == {"A": "1", "B": "1", "C": "1.5", "D": "text"}


# ----- durations --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("90s", 90.0),
        ("5m", 300.0),
        ("250ms", 0.25),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        ("10", 10.0),
        (1.5, 1.5),
        (90, 90.0),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["abc", "5 minutes", "5d", "-1s", "", [1], None])
def test_parse_duration_refuses(value: object) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(value)


def test_parse_duration_refuses_a_bool() -> None:
    with pytest.raises(ValueError, match="a duration is a number of seconds"):
        parse_duration(True)


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90.0), ("5m", 300.0), ("1.5", 1.5)])
def test_timeout_in_a_spec(text: str, seconds: float) -> None:
    s = spec(f"timeout: {text}\n" + PROCESS + f"    timeout: {text}\n")
    assert s.timeout == seconds
    assert s.processes["p"].timeout == seconds


def test_bad_timeout_is_located() -> None:
    assert problems("timeout: 5 minutes\n" + PROCESS) == [
        "s.yaml:1:10: error[T011]: key 'timeout': '5 minutes' is not a duration: "
        "write seconds, or a string like '90s' or '5m'"
    ]


def test_a_process_or_channel_that_is_not_a_mapping() -> None:
    assert problems("processes:\n  p: mod:fn\n") == [
        "s.yaml:2:6: error[T011]: process 'p' must be a mapping of keys with at least a "
        "'target', not 'mod:fn'"
    ]
    assert problems("channels: [q]\n" + PROCESS) == [
        "s.yaml:1:11: error[T011]: key 'channels' must be a mapping of keys, not ['q']"
    ]


def test_negative_timeout() -> None:
    assert problems("timeout: -1\n" + PROCESS) == [
        "s.yaml:1:10: error[T011]: key 'timeout': a duration must be more than 0 seconds, not -1"
    ]


def test_process_timeout_in_words() -> None:
    assert problems(PROCESS + "    timeout: soon\n") == [
        "s.yaml:4:14: error[T011]: process 'p', key 'timeout': 'soon' is not a duration: "
        "write seconds, or a string like '90s' or '5m'"
    ]


# ----- unknown keys and kinds -------------------------------------------------------------


def test_unknown_process_key_with_hint() -> None:
    assert problems(PROCESS + "    replica: 2\n") == [
        "s.yaml:4:5: error[T010]: unknown key 'replica' in process 'p' "
        "(did you mean 'replicas'?): topo does not know what to do with it"
    ]


def test_unknown_top_level_key_with_hint() -> None:
    assert problems("tpo: 1\n" + PROCESS) == [
        "s.yaml:1:1: error[T010]: unknown key 'tpo' in the spec "
        "(did you mean 'topo'?): topo does not know what to do with it"
    ]


def test_unknown_key_without_hint() -> None:
    assert problems(PROCESS + "    colour: red\n") == [
        "s.yaml:4:5: error[T010]: unknown key 'colour' in process 'p': "
        "topo does not know what to do with it"
    ]


def test_unknown_channel_option_with_hint() -> None:
    assert problems("channels:\n  tasks: {kind: queue, maxsiz: 2}\n" + PROCESS) == [
        "s.yaml:2:24: error[T010]: unknown key 'maxsiz' in channel 'tasks' "
        "(did you mean 'maxsize'?): topo does not know what to do with it"
    ]


def test_unknown_lock_option() -> None:
    assert problems("locks:\n  b:\n    kind: barrier\n    partys: 2\n" + PROCESS) == [
        "s.yaml:4:5: error[T010]: unknown key 'partys' in lock 'b' "
        "(did you mean 'parties'?): topo does not know what to do with it"
    ]


@pytest.mark.parametrize(
    "channels", ["channels:\n  tasks: queu\n", "channels:\n  tasks: {kind: queu, maxsize: 2}\n"]
)
def test_unknown_channel_kind_with_hint(channels: str) -> None:
    assert problems(channels + PROCESS) == [
        "s.yaml:2:10: error[T011]: unknown channel kind 'queu' (did you mean 'queue'?): "
        f"use one of {CHANNEL_KINDS}"
    ]


def test_unknown_lock_kind_with_hint() -> None:
    assert problems("locks:\n  l: lok\n" + PROCESS) == [
        "s.yaml:2:6: error[T011]: unknown lock kind 'lok' (did you mean 'lock'?): "
        f"use one of {LOCK_KINDS}"
    ]


def test_channel_without_kind() -> None:
    assert problems("channels:\n  tasks: {maxsize: 2}\n" + PROCESS) == [
        f"s.yaml:2:10: error[T011]: channel 'tasks' needs a 'kind': one of {CHANNEL_KINDS}"
    ]


def test_did_you_mean() -> None:
    assert did_you_mean("replica", ["replicas", "target"]) == " (did you mean 'replicas'?)"
    assert did_you_mean("zzz", ["replicas", "target"]) == ""


# ----- names, values, required keys -------------------------------------------------------


@pytest.mark.parametrize("name", ["1bad", "bad-name", "'with space'"])
def test_bad_channel_name(name: str) -> None:
    shown = name.strip("'")
    assert problems(f"channels:\n  {name}: queue\n" + PROCESS) == [
        f"s.yaml:2:3: error[T011]: channel {shown!r}: {shown!r} is not a valid name: "
        "use letters, digits and _ only"
    ]


def test_bad_process_name() -> None:
    assert problems("processes:\n  bad-name:\n    target: m:f\n") == [
        "s.yaml:2:3: error[T011]: process 'bad-name': 'bad-name' is not a valid name: "
        "use letters, digits and _ only"
    ]


def test_bad_argument_name_points_at_the_key() -> None:
    assert problems(PROCESS + "    args: {bad-arg: 1}\n") == [
        "s.yaml:4:12: error[T011]: process 'p', key 'args.bad-arg': 'bad-arg' is not a valid "
        "name: use letters, digits and _ only"
    ]


def test_bad_binding_name_points_at_the_value() -> None:
    assert problems(PROCESS + "    inputs: {x: bad-chan}\n") == [
        "s.yaml:4:17: error[T011]: process 'p', key 'inputs.x': 'bad-chan' is not a valid "
        "name: use letters, digits and _ only"
    ]


def test_array_needs_size_or_init() -> None:
    assert problems("channels:\n  a: array\n" + PROCESS) == [
        "s.yaml:2:6: error[T011]: channel 'a': an array needs 'size' or 'init'"
    ]


def test_array_size_and_init_disagree() -> None:
    assert problems("channels:\n  a: {kind: array, size: 2, init: [1, 2, 3]}\n" + PROCESS) == [
        "s.yaml:2:6: error[T011]: channel 'a': 'init' has 3 items but 'size' is 2"
    ]


def test_bad_typecode() -> None:
    assert problems("channels:\n  v: {kind: value, type: z}\n" + PROCESS) == [
        "s.yaml:2:26: error[T011]: channel 'v', key 'type': 'z' is not a typecode "
        "(such as i, d, c) or a ctypes name (c_double)"
    ]


def test_replicas_must_be_positive() -> None:
    assert problems(PROCESS + "    replicas: 0\n") == [
        "s.yaml:4:15: error[T011]: process 'p', key 'replicas': "
        "input should be greater than 0 (got 0)"
    ]


def test_negative_maxsize() -> None:
    assert problems("channels:\n  tasks: {kind: queue, maxsize: -1}\n" + PROCESS) == [
        "s.yaml:2:33: error[T011]: channel 'tasks', key 'maxsize': "
        "input should be greater than or equal to 0 (got -1)"
    ]


def test_literal_choices() -> None:
    assert problems("start_method: spwn\n" + PROCESS) == [
        "s.yaml:1:15: error[T011]: key 'start_method' is 'spwn', "
        "but must be 'spawn', 'fork' or 'forkserver'"
    ]
    assert problems("topo: 2\n" + PROCESS) == [
        "s.yaml:1:7: error[T011]: key 'topo' is 2, but must be 1"
    ]
    assert problems(PROCESS + "    restart: always\n") == [
        "s.yaml:4:14: error[T011]: process 'p', key 'restart' is 'always', "
        "but must be 'never' or 'on-failure'"
    ]


def test_processes_are_required() -> None:
    assert problems("name: x\n") == ["s.yaml:1:1: error[T012]: the spec needs the key 'processes'"]


def test_target_is_required() -> None:
    assert problems("processes:\n  p:\n    args: {}\n") == [
        "s.yaml:3:5: error[T012]: process 'p' needs the key 'target'"
    ]


def test_target_form() -> None:
    assert problems("processes:\n  p:\n    target: nocolon\n") == [
        "s.yaml:3:13: error[T011]: process 'p', key 'target': "
        "'nocolon' is not of the form module:function"
    ]


def test_every_problem_is_reported_sorted() -> None:
    found = problems(
        "tpo: 1\nchannels:\n  tasks: queu\nprocesses:\n  p:\n    target: m:f\n    replica: 2\n"
    )
    assert [d.split(": ")[1] for d in found] == ["error[T010]", "error[T011]", "error[T010]"]
    assert [d.split(":")[1] for d in found] == ["1", "3", "7"]


# ----- JSON Schema ------------------------------------------------------------------------


def test_json_schema_is_json() -> None:
    schema = json_schema()
    text = json.dumps(schema)
    assert json.loads(text) == schema
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "topo spec"
    assert schema["required"] == ["processes"]


def test_json_schema_accepts_the_short_form() -> None:
    channel = json_schema()["properties"]["channels"]["additionalProperties"]
    short = [s for s in channel["anyOf"] if s.get("type") == "string"]
    assert short == [{"enum": CHANNEL_KINDS.split(", "), "type": "string"}]
    lock = json_schema()["properties"]["locks"]["additionalProperties"]
    assert {"enum": LOCK_KINDS.split(", "), "type": "string"} in lock["anyOf"]


def test_json_schema_validates_a_spec() -> None:
    import jsonschema  # the `test` extra installs it: editors check specs with this schema

    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    good = {
        "timeout": "90s",
        "channels": {"t": "queue", "link": {"kind": "pipe", "duplex": False}},
        "locks": {"l": "lock"},
        "processes": {"p": {"target": "m:f", "timeout": 1.5}},
    }
    assert list(validator.iter_errors(good)) == []
    bad = {"channels": {"t": "queu"}, "processes": {"p": {"target": "m:f"}}}
    assert list(validator.iter_errors(bad))


def test_booleans_and_floats_are_not_counts() -> None:
    assert problems(PROCESS + "    replicas: true\n") == [
        "s.yaml:4:15: error[T011]: process 'p', key 'replicas': input should be a valid "
        "integer (got True)"
    ]


def test_schema_durations_accept_numbers_and_strings() -> None:
    from topo.spec import json_schema

    timeout = json_schema()["$defs"]["BarrierLock"]["properties"]["timeout"]
    assert {"type": "number"} in timeout["anyOf"] and {"type": "string"} in timeout["anyOf"]
    assert "gt" not in json.dumps(timeout)


# ----- resources and node: placement on a Ray cluster ---------------------------------------


def test_resources_and_node() -> None:
    s = spec(
        PROCESS + "    resources: {cpus: 2, gpus: 0.5, memory: 2GiB, custom: {n0: 1}}\n"
        "    node: 10.0.0.5\n"
    )
    p = s.processes["p"]
    assert p.resources == Resources(cpus=2.0, gpus=0.5, memory=2 * 1024**3, custom={"n0": 1.0})
    assert isinstance(p.resources.cpus, float) and isinstance(p.resources.memory, int)
    assert p.node == "10.0.0.5"
    assert p.cpus == 2.0


def test_resources_short_form_and_defaults() -> None:
    p = spec(PROCESS + "    resources: {cpus: 2}\n").processes["p"]
    assert p.resources == Resources(cpus=2.0)
    assert (p.resources.gpus, p.resources.memory, p.resources.custom) == (None, None, {})
    bare = spec(PROCESS).processes["p"]
    assert (bare.resources, bare.node, bare.cpus) == (None, None, None)
    assert spec(PROCESS + "    resources: {gpus: 0}\n").processes["p"].cpus is None


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1000", 1000),
        ("'1000'", 1000),
        ("512MiB", 512 * 1024**2),
        ("'2 GiB'", 2 * 1024**3),
        ("1.5GB", 1_500_000_000),
        ("1.5GiB", 1_610_612_736),
        ("64kb", 64_000),
        ("1TiB", 1024**4),
        ("100B", 100),
    ],
)
def test_memory_units(text: str, size: int) -> None:
    resources = spec(PROCESS + f"    resources: {{memory: {text}}}\n").processes["p"].resources
    assert resources is not None and resources.memory == size


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2 gigs", "'2 gigs' is not a size: write bytes, or a string like '64KiB' or '1.5GB'"),
        ("2GiBs", "'2GiBs' is not a size: write bytes, or a string like '64KiB' or '1.5GB'"),
        ("-1", "input should be greater than 0 (got -1)"),
        ("1.5", "input should be a valid integer (got 1.5)"),
        ("true", "input should be a valid integer (got True)"),
    ],
)
def test_bad_memory_is_located(text: str, message: str) -> None:
    assert problems(PROCESS + f"    resources: {{memory: {text}}}\n") == [
        f"s.yaml:4:25: error[T011]: process 'p', key 'resources.memory': {message}"
    ]


def test_unknown_resources_key_with_hint() -> None:
    assert problems(PROCESS + "    resources:\n      cpu: 2\n") == [
        "s.yaml:5:7: error[T010]: unknown key 'cpu' in process 'p', key 'resources' "
        "(did you mean 'cpus'?): topo does not know what to do with it"
    ]


@pytest.mark.parametrize(
    ("resources", "col", "message"),
    [
        ("{cpus: 0}", 23, "key 'resources.cpus': input should be greater than 0 (got 0)"),
        ("{cpus: true}", 23, "key 'resources.cpus': input should be a valid number (got True)"),
        ("{cpus: '2'}", 23, "key 'resources.cpus': input should be a valid number (got '2')"),
        ("{cpus: .inf}", 23, "key 'resources.cpus': input should be a finite number (got inf)"),
        (
            "{cpus: 0.00001}",
            23,
            "key 'resources.cpus': 1e-05 is less than 0.0001, the smallest amount Ray counts",
        ),
        (
            "{gpus: -1}",
            23,
            "key 'resources.gpus': input should be greater than or equal to 0 (got -1)",
        ),
        (
            "{custom: {n0: 0}}",
            30,
            "key 'resources.custom.n0': input should be greater than 0 (got 0)",
        ),
        (
            "{custom: {GPU: 1}}",
            26,
            "key 'resources.custom.GPU': 'GPU' is not a custom resource: ask for it with gpus",
        ),
        ("[2]", 16, "key 'resources' must be a mapping of keys, not [2]"),
    ],
)
def test_bad_resources_are_located(resources: str, col: int, message: str) -> None:
    assert problems(PROCESS + f"    resources: {resources}\n") == [
        f"s.yaml:4:{col}: error[T011]: process 'p', {message}"
    ]


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ("''", "a node is a Ray node's IP address or id, not an empty string"),
        ("12", "input should be a valid string (got 12)"),
    ],
)
def test_bad_node_is_located(node: str, message: str) -> None:
    assert problems(PROCESS + f"    node: {node}\n") == [
        f"s.yaml:4:11: error[T011]: process 'p', key 'node': {message}"
    ]


def test_resources_and_node_are_interpolated() -> None:
    text = (
        "params: {cpus: 1.5, gpus: 1, mem: 1GiB, n0: 2, node: 10.0.0.7}\n" + PROCESS + "    "
        "resources: {cpus: '${params.cpus}', gpus: '${params.gpus}', memory: '${params.mem}', "
        "custom: {n0: '${params.n0}'}}\n    node: '${params.node}'\n"
    )
    doc = prepare_document(load_text(text, "s.yaml"), ["params.cpus=3"])
    p = spec_from_document(doc).processes["p"]
    assert p.resources == Resources(cpus=3.0, gpus=1.0, memory=1024**3, custom={"n0": 2.0})
    assert p.node == "10.0.0.7" and p.cpus == 3.0
    assert isinstance(p.resources.cpus, float)


def test_resources_have_no_per_instance_references() -> None:
    with pytest.raises(SpecError) as info:
        prepare_document(load_text(PROCESS + "    resources: {cpus: '${replica}'}\n", "s.yaml"))
    assert [d.code for d in info.value.diagnostics] == ["T020"]


def test_json_schema_has_resources_and_node() -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(json_schema())
    process = {"target": "m:f", "node": "10.0.0.5"}
    good = {"resources": {"cpus": 2, "gpus": 0.5, "memory": "2GiB", "custom": {"n0": 1}}}
    assert list(validator.iter_errors({"processes": {"p": {**process, **good}}})) == []
    bad = {"resources": {"cpu": 2}}
    assert list(validator.iter_errors({"processes": {"p": {**process, **bad}}}))
