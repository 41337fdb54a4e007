"""topo.yamlpos: safe YAML loading with the line and column of every node."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from topo.errors import Diagnostic, SpecError
from topo.yamlpos import MAX_DEPTH, load_path, load_text

BILLION_LAUGHS = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def refused(text: str, path: str = "s.yaml") -> Diagnostic:
    """The single diagnostic ``load_text`` raises for ``text``."""
    with pytest.raises(SpecError) as info:
        load_text(text, path)
    assert len(info.value.diagnostics) == 1, info.value.diagnostics
    return info.value.diagnostics[0]


# ----- positions --------------------------------------------------------------------------


def test_plain_values_are_loaded() -> None:
    doc = load_text("a: 1\nb: [x, 2.5, true, null]\n", "s.yaml")
    assert doc.data == {"a": 1, "b": ["x", 2.5, True, None]}
    assert doc.path == "s.yaml"


def test_positions_of_nested_values_and_keys() -> None:
    text = "a:\n  b:\n    - 1\n    - {c: 2}\n"
    doc = load_text(text, "s.yaml")
    assert doc.positions[()] == (1, 1)
    assert doc.positions[("a",)] == (2, 3)
    assert doc.positions[("a", "b")] == (3, 5)
    assert doc.positions[("a", "b", 0)] == (3, 7)
    assert doc.positions[("a", "b", 1)] == (4, 7)
    assert doc.positions[("a", "b", 1, "c")] == (4, 11)
    assert doc.key_positions[("a",)] == (1, 1)
    assert doc.key_positions[("a", "b")] == (2, 3)
    assert doc.key_positions[("a", "b", 1, "c")] == (4, 8)


def test_position_falls_back_to_the_closest_enclosing_node() -> None:
    doc = load_text("a:\n  b: 1\n", "s.yaml")
    assert doc.position(("a", "b")) == (2, 6)
    assert doc.position(("a", "b"), key=True) == (2, 3)
    assert doc.position(("a", "missing", "deeper")) == (2, 3)
    assert doc.position(("nothing",)) == (1, 1)


def test_diagnostic_is_located_at_the_node() -> None:
    doc = load_text("a:\n  b: 1\n", "s.yaml")
    d = doc.diagnostic(("a", "b"), "T999", "something is off")
    assert str(d) == "s.yaml:2:6: error[T999]: something is off"
    w = doc.diagnostic(("a", "b"), "T999", "hmm", key=True, severity="warning")
    assert str(w) == "s.yaml:2:3: warning[T999]: hmm"


def test_non_string_keys() -> None:
    doc = load_text("1: a\ntrue: b\nnull: c\n1.5: d\n", "s.yaml")
    # bool, null and float keys keep their text, so they cannot collide with others
    assert doc.data == {1: "a", "true": "b", "null": "c", "1.5": "d"}


# ----- duplicate keys ---------------------------------------------------------------------


def test_duplicate_key_is_refused() -> None:
    d = refused("a: 1\nb: 2\na: 3\n")
    assert str(d) == "s.yaml:3:1: error[T002]: key 'a' is written twice in this mapping"


def test_duplicate_key_nested_and_quoted() -> None:
    d = refused("top:\n  a: 1\n  'a': 2\n")
    assert (d.line, d.col, d.code) == (3, 3, "T002")
    assert d.message == "key 'a' is written twice in this mapping"


def test_same_key_in_different_mappings_is_fine() -> None:
    assert load_text("a: {x: 1}\nb: {x: 2}\n").data == {"a": {"x": 1}, "b": {"x": 2}}


# ----- tags -------------------------------------------------------------------------------


def test_python_tag_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    text = f'a: !!python/object/apply:os.system ["touch {marker}"]\n'
    d = refused(text)
    assert d.code == "T003"
    assert (d.line, d.col) == (1, 4)
    assert d.message == ("tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed")
    assert not marker.exists()


def test_python_tag_on_the_whole_document(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    d = refused(f'!!python/object/apply:os.system ["touch {marker}"]\n')
    assert (d.line, d.col, d.code) == (1, 1, "T003")
    assert not marker.exists()


def test_python_name_scalar_tag_is_refused() -> None:
    d = refused("a: !!python/name:os.system\n")
    assert str(d) == (
        "s.yaml:1:4: error[T003]: tag 'tag:yaml.org,2002:python/name:os.system' is not "
        "allowed: only plain YAML is allowed"
    )


def test_custom_tag_is_refused() -> None:
    d = refused("a: !custom 1\n")
    assert (d.line, d.col, d.code) == (1, 4, "T003")
    assert "'!custom'" in d.message


def test_set_tag_is_refused() -> None:
    d = refused("a: !!set {x, y}\n")
    assert str(d) == "s.yaml:1:4: error[T003]: tag 'tag:yaml.org,2002:set' is not allowed"


# ----- hostile documents ------------------------------------------------------------------


def test_billion_laughs_is_refused_quickly() -> None:
    started = time.monotonic()
    d = refused(BILLION_LAUGHS)
    assert time.monotonic() - started < 1.0
    assert d.code == "T003"
    assert d.message == "the document expands to more than 250000 values"


def test_many_aliases_are_refused() -> None:
    text = "a: &a 1\nb: [" + ", ".join(["*a"] * 1500) + "]\n"
    d = refused(text)
    assert d.code == "T003"
    assert d.message == "more than 1000 aliases"


@pytest.mark.parametrize(("text", "col"), [("a: &a [*a]\n", 8), ("a: &a {b: *a}\n", 11)])
def test_recursive_alias_is_refused(text: str, col: int) -> None:
    d = refused(text)  # located at the alias itself
    assert str(d) == f"s.yaml:1:{col}: error[T003]: an alias refers to a node that contains it"


@pytest.mark.parametrize(
    "text",
    [
        "a: " + "[" * 100_000 + "]" * 100_000 + "\n",
        "[" * 100_000,
        "- " * 100_000 + "x\n",
        "a: " + "{b: " * 100_000 + "}" * 100_000 + "\n",
    ],
    ids=["flow-lists", "unclosed", "block-lists", "flow-maps"],
)
def test_deep_nesting_is_refused_without_crash(text: str) -> None:
    started = time.monotonic()
    d = refused(text)
    assert time.monotonic() - started < 2.0
    assert d.code == "T003"
    assert d.message == f"nesting deeper than {MAX_DEPTH} levels"


def test_nesting_just_below_the_limit_loads() -> None:
    depth = MAX_DEPTH - 1  # the root mapping is one level
    doc = load_text("a: " + "[" * (depth - 1) + "]" * (depth - 1) + "\n")
    assert isinstance(doc.data["a"], list)


# ----- not a mapping, not text ------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file(text: str) -> None:
    d = refused(text)
    assert str(d) == (
        "s.yaml:1:1: error[T004]: the file is empty: a spec needs at least 'processes'"
    )


def test_list_at_top_level() -> None:
    d = refused("- a\n- b\n")
    assert str(d) == "s.yaml:1:1: error[T004]: the spec is a list; it must be a mapping of keys"


def test_scalar_at_top_level() -> None:
    d = refused("\nhello\n")
    assert str(d) == (
        "s.yaml:2:1: error[T004]: the spec is a single value; it must be a mapping of keys"
    )


def test_nul_byte_is_binary() -> None:
    d = refused("a: \x00\x01\x02\n")
    assert str(d) == "s.yaml:1:1: error[T001]: the file is binary, not YAML text"


@pytest.mark.parametrize("char", ["\x07", "\x1b", "\x7f", "\ufffe"])
def test_control_characters_are_a_located_error(char: str) -> None:
    # Bytes such as BEL are valid UTF-8 but not YAML; PyYAML's Reader raises while the
    # loader is being constructed, which must still become a T001 diagnostic.
    d = refused(f"a: 1\nb: x{char}y\n")
    assert d.code == "T001"
    assert d.message.startswith("invalid YAML: ")


def test_syntax_error_is_located() -> None:
    d = refused("a: [1, 2\n")
    # libyaml words it "did not find expected ',' or ']'", PyYAML "expected ',' or ']', ..."
    assert str(d).startswith("s.yaml:2:1: error[T001]: invalid YAML: ")
    assert "expected ',' or ']'" in str(d)


def test_mapping_value_where_not_allowed() -> None:
    d = refused("a: b: c\n")
    assert str(d).startswith(
        "s.yaml:1:5: error[T001]: invalid YAML: mapping values are not allowed"
    )


def test_complex_key_is_refused() -> None:
    d = refused("{[1]: 2}\n")
    assert str(d) == "s.yaml:1:2: error[T003]: a mapping key must be a plain scalar"


# ----- merge keys -------------------------------------------------------------------------


def test_merge_key_fills_missing_keys_only() -> None:
    doc = load_text("base: &d {x: 1, y: 2}\nm:\n  <<: *d\n  y: 3\n")
    assert doc.data["m"] == {"x": 1, "y": 3}
    assert doc.data["base"] == {"x": 1, "y": 2}


def test_merge_key_with_a_list_of_mappings() -> None:
    doc = load_text("a: &a {x: 1}\nb: &b {x: 2, z: 3}\nm:\n  <<: [*a, *b]\n")
    assert doc.data["m"] == {"x": 1, "z": 3}  # the first mapping wins


def test_merge_of_a_scalar_is_refused() -> None:
    d = refused("m:\n  <<: 1\n")
    assert str(d) == "s.yaml:2:7: error[T003]: '<<' merges only mappings"


def test_explicit_key_keeps_its_position_next_to_a_merge() -> None:
    # `y` is written in `m` itself (line 4); the merged `y` of `base` is discarded, so an
    # error about m.y must point at line 4, not at the anchor.
    doc = load_text("base: &d {x: 1, y: 2}\nm:\n  <<: *d\n  y: 3\n")
    assert doc.positions[("m", "y")] == (4, 6)
    assert doc.key_positions[("m", "y")] == (4, 3)


# ----- files ------------------------------------------------------------------------------


def test_load_path_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("a: 1\n", encoding="utf-8")
    doc = load_path(path)
    assert doc.data == {"a": 1}
    assert doc.path == str(path)
    assert doc.text == "a: 1\n"


def test_load_path_strips_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(b"\xef\xbb\xbfa: 1\n")
    assert load_path(path).data == {"a": 1}


def test_load_path_on_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(SpecError) as info:
        load_path(path)
    assert str(info.value) == f"{path}:1:1: error[T000]: cannot read: No such file or directory"


def test_load_path_on_a_folder(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_path(tmp_path)
    assert str(info.value) == f"{tmp_path}:1:1: error[T000]: cannot read: Is a directory"


def test_load_path_on_non_utf8_bytes(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(b"a: \xff\xfe caf\xe9\n")
    with pytest.raises(SpecError) as info:
        load_path(path)
    assert str(info.value) == (
        f"{path}:1:1: error[T001]: the file is not UTF-8 text (invalid start byte)"
    )


def test_load_path_on_binary_garbage(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(SpecError) as info:
        load_path(path)
    [d] = info.value.diagnostics
    assert (d.line, d.col, d.code) == (1, 1, "T001")


def test_load_path_on_utf8_control_bytes(tmp_path: Path) -> None:
    # Valid UTF-8 that is no YAML text: a bell and an escape character.
    path = tmp_path / "s.yaml"
    path.write_bytes(b"processes:\n  p: \x07\x1b\n")
    with pytest.raises(SpecError) as info:
        load_path(path)
    [d] = info.value.diagnostics
    assert d.code == "T001"
    assert d.path == str(path)


def test_a_lone_document_marker_is_empty() -> None:
    with pytest.raises(SpecError) as info:
        load_text("---\n", "e.yaml")
    assert str(info.value) == (
        "e.yaml:1:1: error[T004]: the file is empty: a spec needs at least 'processes'"
    )


def test_compose_merges_mappings_replaces_the_rest_and_keeps_each_node_s_file() -> None:
    from topo.yamlpos import compose

    base = load_text(
        "params: {n: 2, keep: 1}\nprocesses:\n  a:\n    target: m:f\n    after: [x, y]\n",
        "base.yaml",
    )
    over = load_text("params: {n: 7}\nprocesses:\n  a:\n    after: [z]\n", "over.yaml")
    doc = compose(base, over)
    assert doc.data == {
        "params": {"n": 7, "keep": 1},
        "processes": {"a": {"target": "m:f", "after": ["z"]}},
    }
    assert doc.files == ("base.yaml", "over.yaml")
    assert doc.place(("params", "n")) == ("over.yaml", (1, 13))
    assert doc.place(("params", "keep")) == ("base.yaml", (1, 22))
    assert doc.place(("processes", "a", "target")) == ("base.yaml", (4, 13))
    assert doc.place(("processes", "a", "after", 0)) == ("over.yaml", (4, 13))
    assert ("processes", "a", "after", 1) not in doc.positions  # replaced with the list
    d = doc.diagnostic(("processes", "a", "after"), "T011", "x")
    assert (d.path, d.line) == ("over.yaml", 4)
    assert load_text(doc.text, "again.yaml").data == doc.data  # spec.yaml of the record
