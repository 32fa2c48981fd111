"""YAML to plain data, remembering where every node came from.

PyYAML's composer gives each node a start mark; we build the Python value and, beside
it, a map from the path of each node (`("steps", 2, "send", "template")`) to its
1-based line and column, so that any later error can name its place. The position of
a mapping key itself is kept under the path of its value followed by `KEY`, so that an
unknown field can be pointed at by its name rather than by its value.
"""

from __future__ import annotations

from typing import Any

import yaml

Path = tuple[str | int, ...]
Positions = dict[Path, tuple[int, int]]

KEY = "\0key"
# Aliases let a few lines of YAML stand for an enormous document; no journey is this big.
MAX_NODES = 100_000
# PyYAML composes nodes, and we build values, recursively: a document nested deeper than
# any journey (`[[[[...`) would exhaust Python's stack instead of being reported.
MAX_DEPTH = 64
_TOO_DEEP = f"YAML: the document is nested more than {MAX_DEPTH} levels deep"


class YamlSyntaxError(Exception):
    def __init__(self, line: int, column: int, message: str) -> None:
        self.line, self.column, self.message = line, column, message
        super().__init__(f"{line}:{column}: {message}")


class _Loader(yaml.SafeLoader):
    """SafeLoader whose values we build ourselves, to reject duplicate keys."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise YamlSyntaxError(mark.line + 1, mark.column + 1, _TOO_DEEP)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_with_positions(text: str) -> tuple[Any, Positions]:
    """Parse one YAML document; return its value and the position of every node."""
    try:
        node = _compose(text)
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(1, 1, f"YAML syntax: {exc}") from None
    positions: Positions = {}
    if node is None:
        return None, {(): (1, 1)}
    # Only its constructor builds values, from the nodes: it need not read the text again.
    builder = _Builder(_Loader(""), positions)
    try:
        value = builder.build(node, (), frozenset())
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc) from None
    return value, positions


# libyaml's composer, when PyYAML has it: the same nodes and marks, at a tenth of the
# cost (composing took half of a journey's compile time).
_FAST: Any = getattr(yaml, "CSafeLoader", None)
_OPENS = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSES = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def _compose(text: str) -> yaml.Node | None:
    """The document's node tree. A document libyaml composes is composed by it; every
    other one (a syntax error, nesting near `MAX_DEPTH`: libyaml's composer recurses
    with no limit) goes to PyYAML's, which reports what is wrong, and where, as always."""
    if _FAST is not None:
        try:
            if _shallow(text):
                node: yaml.Node | None = yaml.compose(text, Loader=_FAST)
                return node
        except Exception:  # a syntax error, text libyaml cannot encode (lone surrogates)...
            pass  # ... reported by PyYAML's composer, as always
    return yaml.compose(text, Loader=_Loader)


def _shallow(text: str) -> bool:
    """Whether no collection is nested near `MAX_DEPTH`, from libyaml's events (read one
    by one: no recursion)."""
    depth = 0
    for event in yaml.parse(text, Loader=_FAST):
        if isinstance(event, _OPENS):
            depth += 1
            if depth >= MAX_DEPTH - 1:  # its scalars sit one level deeper
                return False
        elif isinstance(event, _CLOSES):
            depth -= 1
    return True


def _syntax_error(exc: yaml.MarkedYAMLError) -> YamlSyntaxError:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    message = " ".join(part for part in (exc.context, exc.problem) if part)
    return YamlSyntaxError(line, col, f"YAML syntax: {message}")


def _at(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


# Collections are built here rather than by PyYAML, so their tags must be checked here:
# `!!python/object/apply:os.system [...]` must not pass as a plain list.
_PLAIN_TAGS: dict[type[yaml.Node], tuple[str, ...]] = {
    yaml.MappingNode: ("tag:yaml.org,2002:map",),
    yaml.SequenceNode: ("tag:yaml.org,2002:seq",),
}


class _Builder:
    def __init__(self, constructor: _Loader, positions: Positions) -> None:
        self.constructor = constructor
        self.positions = positions
        self.count = 0

    def build(self, node: yaml.Node, path: Path, open_: frozenset[int]) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise YamlSyntaxError(*_at(node), "YAML: the document is too large")
        # An alias copies a whole node to wherever it is used, so the value built can be
        # deeper than any node in the text.
        if len(path) > MAX_DEPTH:
            raise YamlSyntaxError(*_at(node), _TOO_DEEP)
        self.positions[path] = _at(node)
        if node.tag not in _PLAIN_TAGS.get(type(node), (node.tag,)):
            raise YamlSyntaxError(*_at(node), f"YAML syntax: the tag {node.tag!r} is not allowed")
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            # An alias inside the node it names (`&a [*a]`) would never end.
            if id(node) in open_:
                raise YamlSyntaxError(*_at(node), "YAML syntax: an alias refers to itself")
            open_ = open_ | {id(node)}
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = _scalar(key_node, self.constructor)
                if isinstance(key, list | dict):
                    raise YamlSyntaxError(
                        *_at(key_node), "YAML syntax: a key must be a plain value"
                    )
                if key in result:
                    raise YamlSyntaxError(*_at(key_node), f"duplicate key {key!r}")
                self.positions[(*path, key, KEY)] = _at(key_node)
                result[key] = self.build(value_node, (*path, key), open_)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [
                self.build(item, (*path, index), open_) for index, item in enumerate(node.value)
            ]
        return _scalar(node, self.constructor)


def _scalar(node: yaml.Node, constructor: _Loader) -> Any:
    try:
        return constructor.construct_object(node, deep=True)
    except yaml.MarkedYAMLError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:
        # A value YAML recognizes by shape but cannot build, such as the date 2026-13-45.
        raise YamlSyntaxError(
            *_at(node), f"YAML syntax: cannot read {node.value!r}: {exc}"
        ) from None


def position_of(positions: Positions, loc: Path) -> tuple[int, int]:
    """The position of the deepest node along `loc` that exists in the file.

    Validation locations can contain segments that are not in the data (union tags,
    a missing field); those are skipped, and a missing field points at its parent.
    """
    best: Path = ()
    for part in loc:
        trial = (*best, part)
        if trial in positions:
            best = trial
    return positions.get(best, (1, 1))


def key_position(positions: Positions, loc: Path) -> tuple[int, int]:
    """The position of the key naming the node at `loc` (or of the node, if not a key)."""
    resolved: Path = ()
    for part in loc:
        trial = (*resolved, part)
        if trial in positions:
            resolved = trial
    if resolved and resolved[-1] == loc[-1]:
        return positions.get((*resolved, KEY), positions.get(resolved, (1, 1)))
    return positions.get(resolved, (1, 1))
