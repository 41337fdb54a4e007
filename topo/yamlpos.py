"""Safe YAML loading that remembers where every node came from.

``load_text`` turns YAML into plain Python values (dict, list, str, int, float,
bool, None) and a ``Document`` that maps each path in the data to the line and
column of its node, so that every later problem can be reported at its place.

Hostile input is refused before it can cost anything: the text size, the nesting
depth (checked while parsing, since PyYAML's composer recurses), the number of
aliases and the number of nodes an alias expansion produces are all bounded, only
the safe YAML tags construct, and a key written twice in one mapping is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from topo.errors import Diagnostic, SpecError

Loc = tuple[str | int, ...]
Pos = tuple[int, int]

MAX_BYTES = 5_000_000
MAX_DEPTH = 64
MAX_ALIASES = 1_000
MAX_NODES = 250_000  # values produced after alias expansion

_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass
class Document:
    """Loaded YAML data with the position (1-based line, column) of every node."""

    path: str
    text: str
    data: Any
    positions: dict[Loc, Pos] = field(default_factory=dict)
    key_positions: dict[Loc, Pos] = field(default_factory=dict)

    def position(self, loc: Loc, *, key: bool = False) -> Pos:
        """Where ``loc`` is written; the closest enclosing node when it is not."""
        if key and loc in self.key_positions:
            return self.key_positions[loc]
        for n in range(len(loc), -1, -1):
            pos = self.positions.get(loc[:n])
            if pos is not None:
                return pos
        return (1, 1)

    def diagnostic(
        self, loc: Loc, code: str, message: str, *, key: bool = False, severity: str = "error"
    ) -> Diagnostic:
        line, col = self.position(loc, key=key)
        return Diagnostic(self.path, line, col, severity, code, message)  # type: ignore[arg-type]


if yaml.__with_libyaml__:
    # libyaml scans and parses (fast, and without recursion); the composer stays
    # PyYAML's Python one, because the C composer recurses without limit and crashes
    # the interpreter on deep nesting, while this one is guarded below.
    from yaml._yaml import CParser

    class _Base(
        yaml.composer.Composer, CParser, yaml.constructor.SafeConstructor, yaml.resolver.Resolver
    ):
        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            yaml.composer.Composer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)

else:  # pragma: no cover - PyYAML built without libyaml
    _Base = yaml.SafeLoader  # type: ignore[misc,assignment]


class _GuardedLoader(_Base):
    """A safe loader that refuses deep nesting and alias floods while composing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark  # type: ignore[union-attr]
                raise _Refused("T003", f"more than {MAX_ALIASES} aliases", mark)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            mark = self.peek_event().start_mark  # type: ignore[union-attr]
            raise _Refused("T003", f"nesting deeper than {MAX_DEPTH} levels", mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _Refused(Exception):
    def __init__(self, code: str, message: str, mark: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.mark = mark


def _pos(node: Node) -> Pos:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    """Turns a composed node graph into plain values, recording positions."""

    def __init__(self, loader: Any, doc: Document) -> None:
        self.loader = loader
        self.doc = doc
        self.produced = 0
        self.on_path: set[int] = set()

    def build(self, node: Node, loc: Loc) -> Any:
        self.produced += 1
        if self.produced > MAX_NODES:
            raise _Refused(
                "T003", f"the document expands to more than {MAX_NODES} values", node.start_mark
            )
        self.doc.positions.setdefault(loc, _pos(node))
        if isinstance(node, ScalarNode):
            return self.loader.construct_object(node, deep=True)
        if id(node) in self.on_path:
            raise _Refused("T003", "an alias refers to a node that contains it", node.start_mark)
        self.on_path.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                self._check_tag(node, "tag:yaml.org,2002:seq")
                return [self.build(item, (*loc, i)) for i, item in enumerate(node.value)]
            if isinstance(node, MappingNode):
                self._check_tag(node, "tag:yaml.org,2002:map")
                return self._mapping(node, loc)
        finally:
            self.on_path.discard(id(node))
        raise _Refused("T003", "unsupported YAML node", node.start_mark)  # pragma: no cover

    def _check_tag(self, node: Node, expected: str) -> None:
        if node.tag != expected:
            raise _Refused("T003", f"tag {node.tag!r} is not allowed", node.start_mark)

    def _mapping(self, node: MappingNode, loc: Loc) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        explicit: set[Any] = set()
        merged: list[tuple[Node, Loc]] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                merged.extend((s, loc) for s in sources)
                continue
            if not isinstance(key_node, ScalarNode):
                raise _Refused("T003", "a mapping key must be a plain scalar", key_node.start_mark)
            key = self.loader.construct_object(key_node, deep=True)
            if isinstance(key, bool | float) or key is None:
                key = str(key_node.value)
            if key in explicit:
                raise _Refused(
                    "T002", f"key {key!r} is written twice in this mapping", key_node.start_mark
                )
            explicit.add(key)
            self.doc.key_positions.setdefault((*loc, key), _pos(key_node))
            result[key] = self.build(value_node, (*loc, key))
        # `<<: *defaults` merges keys the mapping does not set itself, as YAML 1.1 says.
        for source, at in merged:
            if not isinstance(source, MappingNode):
                raise _Refused("T003", "'<<' merges only mappings", source.start_mark)
            for key, value in self.build(source, at).items():
                result.setdefault(key, value)
        return result


def load_text(text: str, path: str = "<string>") -> Document:
    """Parse ``text``; raise ``SpecError`` with a located diagnostic on any problem."""
    doc = Document(path=path, text=text, data=None)

    def refuse(code: str, message: str, mark: yaml.Mark | None) -> SpecError:
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        return SpecError([Diagnostic(path, line, col, "error", code, message)])

    if len(text) > MAX_BYTES:
        raise refuse("T003", f"the file is larger than {MAX_BYTES} bytes", None)
    if "\x00" in text:
        raise refuse("T001", "the file is binary, not YAML text", None)
    loader: _GuardedLoader | None = None
    try:
        loader = _GuardedLoader(text)  # its reader refuses control characters at once
        root = loader.get_single_node()
        if root is None or (root.tag == "tag:yaml.org,2002:null" and not root.value):
            raise refuse("T004", "the file is empty: a spec needs at least 'processes'", None)
        doc.data = _Builder(loader, doc).build(root, ())
    except _Refused as e:
        raise refuse(e.code, e.message, e.mark) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = e.problem or e.context or "invalid YAML"
        if isinstance(e, yaml.constructor.ConstructorError) and "tag" in problem:
            raise refuse("T003", f"{problem.strip()}: only plain YAML is allowed", mark) from None
        raise refuse("T001", f"invalid YAML: {problem}", mark) from None
    except yaml.YAMLError as e:  # reader errors: bad bytes or encodings
        raise refuse("T001", f"invalid YAML: {e}", getattr(e, "problem_mark", None)) from None
    except RecursionError:
        raise refuse("T003", "the document nests too deeply", None) from None
    finally:
        if loader is not None:
            loader.dispose()
    if not isinstance(doc.data, dict):
        kind = "a list" if isinstance(doc.data, list) else "a single value"
        raise refuse("T004", f"the spec is {kind}; it must be a mapping of keys", root.start_mark)
    return doc


def load_path(path: str | Path) -> Document:
    """Read and parse a spec file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        reason = e.strerror or str(e)
        message = f"cannot read: {reason}"
        raise SpecError([Diagnostic(str(path), 1, 1, "error", "T000", message)]) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SpecError(
            [
                Diagnostic(
                    str(path), 1, 1, "error", "T001", f"the file is not UTF-8 text ({e.reason})"
                )
            ]
        ) from None
    return load_text(text, str(path))
