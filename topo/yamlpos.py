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

from topo.document import Document, Loc, Pos, read_source
from topo.errors import Diagnostic, SpecError

MAX_BYTES = 5_000_000
MAX_DEPTH = 64
MAX_ALIASES = 1_000
MAX_NODES = 250_000  # values produced after alias expansion

_MERGE_TAG = "tag:yaml.org,2002:merge"


if yaml.__with_libyaml__:
    from yaml._yaml import CParser as _Parser  # libyaml: fast, and not recursive
else:  # pragma: no cover - PyYAML built without libyaml
    _Parser = yaml.SafeLoader  # type: ignore[misc,assignment]


class _Refused(Exception):
    def __init__(self, code: str, message: str, mark: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.mark = mark


def _pos(mark: Any) -> Pos:
    return (mark.line + 1, mark.column + 1)


_STR, _SEQ, _MAP = "tag:yaml.org,2002:str", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"
_CONSTRUCT = yaml.constructor.SafeConstructor.yaml_constructors


@dataclass
class _Frame:
    """A sequence or mapping being built: its value, where it is, and what is pending."""

    value: Any
    loc: Loc
    anchor: str | None
    mark: Any  # where it starts
    size: int = 1  # values in it, counting what aliases expand to
    key: Any = None  # mappings: the key waiting for its value
    key_mark: Any = None
    has_key: bool = False
    merges: list[Any] = field(default_factory=list)  # mappings merged in by `<<`
    explicit: set[Any] = field(default_factory=set)


class _Builder:
    """Builds plain values straight from parser events, recording positions.

    No node graph is composed (PyYAML's composer recurses, and libyaml's crashes the
    interpreter on deep nesting): an explicit stack bounds the depth, and each alias
    adds the size of what it stands for to a running total, so a "billion laughs"
    document is refused before anything walks it.
    """

    def __init__(self, text: str, doc: Document) -> None:
        self.parser = _Parser(text)
        self.resolver = yaml.resolver.Resolver()
        self.constructor = yaml.constructor.SafeConstructor()
        self.doc = doc
        self.anchors: dict[str, tuple[Any, int]] = {}  # anchor -> (value, size)
        self.open_anchors: set[str] = set()
        self.total = 0

    def load(self) -> tuple[Any, Any]:
        """(the document's value, the mark of its root), or (None, None) when empty."""
        p: Any = self.parser
        p.get_event()  # stream start
        if p.check_event(yaml.StreamEndEvent):
            return None, None
        p.get_event()  # document start
        root_mark = p.peek_event().start_mark
        value = self._value()
        p.get_event()  # document end
        if not p.check_event(yaml.StreamEndEvent):
            mark = p.peek_event().start_mark
            raise _Refused("T001", "invalid YAML: a spec is one document, not several", mark)
        return value, root_mark

    def _count(self, n: int, mark: Any) -> None:
        self.total += n
        if self.total > MAX_NODES:
            raise _Refused("T003", f"the document expands to more than {MAX_NODES} values", mark)

    def _value(self) -> Any:
        stack: list[_Frame] = []
        aliases = 0
        while True:
            event: Any = self.parser.get_event()
            if isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
                frame = stack.pop()
                value, size, start = self._close(frame), frame.size, frame.mark
            else:
                loc = self._child_loc(stack, event)
                start = event.start_mark
                if isinstance(event, yaml.AliasEvent):
                    aliases += 1
                    if aliases > MAX_ALIASES:
                        raise _Refused("T003", f"more than {MAX_ALIASES} aliases", event.start_mark)
                    if event.anchor in self.open_anchors:
                        raise _Refused(
                            "T003", "an alias refers to a node that contains it", event.start_mark
                        )
                    if event.anchor not in self.anchors:
                        raise _Refused(
                            "T001",
                            f"invalid YAML: found undefined alias {event.anchor!r}",
                            event.start_mark,
                        )
                    value, size = self.anchors[event.anchor]
                    self._count(size, event.start_mark)
                    if loc is not None:
                        self.doc.positions.setdefault(loc, _pos(event.start_mark))
                elif isinstance(event, yaml.ScalarEvent):
                    value, size = self._scalar(event), 1
                    self._count(1, event.start_mark)
                    if event.anchor:
                        self.anchors[event.anchor] = (value, 1)
                    if loc is not None:
                        self.doc.positions.setdefault(loc, _pos(event.start_mark))
                else:  # a sequence or mapping starts
                    is_map = isinstance(event, yaml.MappingStartEvent)
                    tag = event.tag
                    if tag not in (None, "!", _MAP if is_map else _SEQ):
                        raise _Refused("T003", f"tag {tag!r} is not allowed", event.start_mark)
                    if len(stack) >= MAX_DEPTH:
                        raise _Refused(
                            "T003", f"nesting deeper than {MAX_DEPTH} levels", event.start_mark
                        )
                    self._count(1, event.start_mark)
                    if loc is not None:
                        self.doc.positions.setdefault(loc, _pos(event.start_mark))
                    if event.anchor:
                        self.open_anchors.add(event.anchor)
                    stack.append(_Frame({} if is_map else [], loc or (), event.anchor, start))
                    continue
            if not stack:
                return value
            self._add(stack[-1], value, size, event, start)

    def _child_loc(self, stack: list[_Frame], event: Any) -> Loc | None:
        """Where the value starting with ``event`` goes; None for a mapping key."""
        if not stack:
            return ()
        top = stack[-1]
        if isinstance(top.value, list):
            return (*top.loc, len(top.value))
        return (*top.loc, top.key) if top.has_key else None

    def _add(self, top: _Frame, value: Any, size: int, event: Any, start: Any) -> None:
        """Put ``value`` (which began at mark ``start``) into the open container ``top``."""
        top.size += size
        if isinstance(top.value, list):
            top.value.append(value)
            return
        if not top.has_key:  # this value is a key
            if isinstance(value, dict | list):
                raise _Refused("T003", "a mapping key must be a plain scalar", start)
            if isinstance(value, bool | float) or value is None:
                # `yes:`, `1.5:` or `~:` as a key: the name as written, not its value
                value = event.value if isinstance(event, yaml.ScalarEvent) else str(value)
            top.key, top.key_mark, top.has_key = value, start, True
            return
        key, top.has_key = top.key, False
        if key is _MERGE:
            sources = value if isinstance(value, list) else [value]
            if not all(isinstance(v, dict) for v in sources):
                raise _Refused("T003", "'<<' merges only mappings", start)
            top.merges.extend(sources)
            return
        if key in top.explicit:
            raise _Refused("T002", f"key {key!r} is written twice in this mapping", top.key_mark)
        top.explicit.add(key)
        self.doc.key_positions.setdefault((*top.loc, key), _pos(top.key_mark))
        top.value[key] = value

    def _close(self, frame: _Frame) -> Any:
        # `<<: *defaults` merges keys the mapping does not set itself, as YAML 1.1 says.
        for source in frame.merges:
            for key, value in source.items():
                frame.value.setdefault(key, value)
        if frame.anchor:
            self.open_anchors.discard(frame.anchor)
            self.anchors[frame.anchor] = (frame.value, frame.size)
        return frame.value

    def _scalar(self, event: Any) -> Any:
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.resolver.resolve(yaml.ScalarNode, event.value, event.implicit)
        if tag == _STR:
            return event.value
        if tag == _MERGE_TAG:
            return _MERGE
        construct = _CONSTRUCT.get(tag)
        if construct is None:
            raise _Refused(
                "T003", f"tag {tag!r} is not allowed: only plain YAML is allowed", event.start_mark
            )
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        return construct(self.constructor, node)


_MERGE = object()  # the `<<` key


def load_text(text: str, path: str = "<string>") -> Document:
    """Parse ``text``; raise ``SpecError`` with a located diagnostic on any problem."""
    doc = Document(path=path, text=text, data=None)

    def refuse(code: str, message: str, mark: Any) -> SpecError:
        line, col = _pos(mark) if mark else (1, 1)
        return SpecError([Diagnostic(path, line, col, "error", code, message)])

    if len(text) > MAX_BYTES:
        raise refuse("T003", f"the file is larger than {MAX_BYTES} bytes", None)
    if "\x00" in text:
        raise refuse("T001", "the file is binary, not YAML text", None)
    try:
        data, root_mark = _Builder(text, doc).load()
    except _Refused as e:
        raise refuse(e.code, e.message, e.mark) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = e.problem or e.context or "invalid YAML"
        if "nesting depth" in problem:  # libyaml's own limit, met while it reads ahead
            raise refuse("T003", f"nesting deeper than {MAX_DEPTH} levels", mark) from None
        raise refuse("T001", f"invalid YAML: {problem}", mark) from None
    except yaml.YAMLError as e:  # reader errors: bad bytes or encodings
        raise refuse("T001", f"invalid YAML: {e}", getattr(e, "problem_mark", None)) from None
    if data is None:
        raise refuse("T004", "the file is empty: a spec needs at least 'processes'", None)
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else "a single value"
        raise refuse("T004", f"the spec is {kind}; it must be a mapping of keys", root_mark)
    if any(k is _MERGE for k in data):  # pragma: no cover - merged away in _close
        raise refuse("T003", "'<<' merges only mappings", root_mark)
    doc.data = data
    return doc


def compose(base: Document, overlay: Document) -> Document:
    """``overlay`` over ``base``, as docker compose merges ``-f`` files: mappings merge key
    by key, anything else (a list, a value) is replaced; each node keeps the file and
    line it came from."""
    positions, key_positions = dict(base.positions), dict(base.key_positions)
    sources = dict(base.sources)

    def replaced(loc: Loc) -> None:  # forget what base wrote under loc
        n = len(loc)
        for table in (positions, key_positions, sources):
            for old in [k for k in table if k[:n] == loc]:
                del table[old]

    def merge(under: Any, over: Any, loc: Loc) -> Any:
        if isinstance(under, dict) and isinstance(over, dict):
            merged = dict(under)
            for k, v in over.items():
                merged[k] = merge(under.get(k), v, (*loc, k)) if k in under else v
                if k not in under:
                    replaced((*loc, k))
            return merged
        replaced(loc)
        return over

    data = merge(base.data, overlay.data, ())
    for table, theirs in ((positions, overlay.positions), (key_positions, overlay.key_positions)):
        for loc, pos in theirs.items():
            if loc:  # the root mapping stays the first file's
                table[loc] = pos
                sources[loc] = overlay.path
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)  # the spec as composed
    files = (*(base.files or (base.path,)), overlay.path)
    return Document(base.path, text, data, positions, key_positions, sources, files)


def load_bytes(raw: bytes, path: str) -> Document:
    """Parse the bytes of the spec file ``path``."""
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


def load_path(path: str | Path) -> Document:
    """Read and parse a spec file."""
    return load_bytes(read_source(path), str(path))
