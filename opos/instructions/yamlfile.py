"""YAML as people write it, loaded safely: bytes in, plain values with line marks out.

PyYAML's C parser does the parsing (ten times faster than the pure-Python one); on top of it:
- our own resolver, close to YAML 1.2's core schema, so `NO` (Norway), `ON`, `yes` stay strings,
  `012` is twelve and `1:20` is not a base-60 number, while unquoted timestamps and dates still load;
- duplicate keys are errors, not silent overrides;
- anchors and aliases are refused, so nothing can expand;
- tags other than the plain ones are refused;
- the size is capped before parsing and the nesting depth while walking.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml
import yaml.reader
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.cyaml import CParser  # type: ignore[attr-defined]
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import BaseResolver

from opos.errors import Problem, YamlProblem

MAX_DEPTH = 32

Path = tuple[str | int, ...]

_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_PLAIN_SCALAR_TAGS = frozenset(
    {_STR} | {f"tag:yaml.org,2002:{t}" for t in ("int", "float", "bool", "null", "timestamp")}
)


class CoreResolver(BaseResolver):
    """YAML 1.2 core-schema scalars, plus YAML 1.1 timestamps."""


for _tag, _pattern, _first in (
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("merge", r"^(?:<<)$", "<"),  # recognised only to be refused, with a message
    (
        "timestamp",
        r"""^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]
            |[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?
             (?:[Tt]|[ \t]+)[0-9][0-9]?:[0-9][0-9]:[0-9][0-9](?:\.[0-9]*)?
             (?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$""",
        "0123456789",
    ),
):
    CoreResolver.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_pattern, re.X), list(_first))


class _Loader(CParser, SafeConstructor, CoreResolver):
    def __init__(self, stream: bytes) -> None:
        CParser.__init__(self, stream)
        SafeConstructor.__init__(self)
        CoreResolver.__init__(self)


def _construct_int(loader: _Loader, node: ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text, 10)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)  # type: ignore[type-var]


@dataclass(frozen=True)
class LoadedYaml:
    """A YAML document as plain JSON-like values, with the line of every key and item."""

    value: Any
    lines: dict[Path, int] = field(default_factory=dict)

    def line_of(self, path: Iterable[str | int]) -> int | None:
        """The line of the deepest known node on `path` (1-based), or None."""
        parts = tuple(path)
        while parts:
            if parts in self.lines:
                return self.lines[parts]
            parts = parts[:-1]
        return self.lines.get((), None)


def load(data: bytes, path: str, max_bytes: int) -> LoadedYaml:
    """Parse one YAML document. Raises YamlProblem naming `path`, the line and what to do."""
    if len(data) > max_bytes:
        raise YamlProblem(
            Problem(path, None, "", f"the file is {len(data)} bytes; the limit is {max_bytes}: split it up")
        )
    loader = _Loader(data)
    try:
        node = loader.get_single_node()
        if node is None:
            raise YamlProblem(Problem(path, 1, "", "the file is empty"))
        walker = _Walker(loader, path)
        value = walker.build(node, (), 0)
        return LoadedYaml(value, walker.lines)
    except yaml.MarkedYAMLError as err:
        lines = data.splitlines()  # YAML's line breaks: \n, \r\n and \r alike
        mark = err.problem_mark or err.context_mark
        # libyaml reports an unexpected end of file on the line after the last: name the last one
        line = min(mark.line + 1, max(len(lines), 1)) if mark else None
        text = lines[line - 1] if line and line <= len(lines) else b""
        what = " ".join(part for part in (err.context, err.problem) if part)
        if "expected a single document" in what:
            what = "the file holds more than one YAML document (a line `---`): keep one per file"
        elif b"\t" in text[:64]:
            what += " (the line has a tab: indent with spaces, never tabs)"
        raise YamlProblem(Problem(path, line, "", f"YAML syntax: {what}")) from None
    except yaml.reader.ReaderError as err:
        raise YamlProblem(
            Problem(path, None, "", f"not UTF-8 text ({err.reason} at byte {err.position}): save it as UTF-8")
        ) from None
    except yaml.YAMLError as err:
        raise YamlProblem(Problem(path, None, "", f"not readable as YAML: {err}")) from None
    except RecursionError:
        raise YamlProblem(Problem(path, None, "", f"nested more than {MAX_DEPTH} levels deep")) from None
    finally:
        loader.dispose()


class _Walker:
    def __init__(self, loader: _Loader, path: str) -> None:
        self.loader = loader
        self.path = path
        self.lines: dict[Path, int] = {}
        self.seen: set[int] = set()

    def problem(self, node: Node, message: str, where: Path = ()) -> YamlProblem:
        return YamlProblem(Problem(self.path, node.start_mark.line + 1, _dotted(where), message))

    def alias_problem(self, where: Path) -> YamlProblem:
        # An alias is the node of its anchor: its own mark points at the anchor, so name where it is used.
        message = "anchors and aliases (&name, *name) are not allowed: write the value out"
        return YamlProblem(Problem(self.path, self.lines.get(where), _dotted(where), message))

    def build(self, node: Node, where: Path, depth: int) -> Any:
        if id(node) in self.seen:
            raise self.alias_problem(where)
        self.seen.add(id(node))
        if depth > MAX_DEPTH:
            raise self.problem(node, f"nested more than {MAX_DEPTH} levels deep")
        self.lines.setdefault(where, node.start_mark.line + 1)
        if isinstance(node, MappingNode):
            if node.tag != _MAP:
                raise self.problem(node, f"the tag {node.tag} is not allowed", where)
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, ScalarNode):
                    raise self.problem(key_node, "keys must be plain words", where)
                key = str(key_node.value)
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise self.problem(key_node, "merge keys (<<) are not allowed: write the fields out", where)
                if key in result:
                    first = self.lines[(*where, key)]
                    raise self.problem(
                        key_node, f"duplicate key (first given on line {first}): keep one", (*where, key)
                    )
                self.lines[(*where, key)] = key_node.start_mark.line + 1
                result[key] = self.build(value_node, (*where, key), depth + 1)
            return result
        if isinstance(node, SequenceNode):
            if node.tag != _SEQ:
                raise self.problem(node, f"the tag {node.tag} is not allowed", where)
            items = []
            for index, item in enumerate(node.value):
                self.lines[(*where, index)] = item.start_mark.line + 1
                items.append(self.build(item, (*where, index), depth + 1))
            return items
        if node.tag == _STR:
            return node.value  # what SafeConstructor would build, without its bookkeeping (most values)
        if node.tag not in _PLAIN_SCALAR_TAGS:
            raise self.problem(node, f"the tag {node.tag} is not allowed", where)
        try:
            value = self.loader.construct_object(node)
        except (ConstructorError, ValueError) as err:
            raise self.problem(node, f"cannot read the value: {err}", where) from None
        return _jsonable(value)


def _jsonable(value: Any) -> Any:
    """Timestamps and dates become ISO strings, so that JSON Schema sees what JSON would hold."""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _dotted(where: Path) -> str:
    text = ""
    for part in where:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


dotted = _dotted
