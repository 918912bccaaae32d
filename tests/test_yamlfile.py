"""YAML as people write it: the hazards are caught, each with its file, line and a way out."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from yaml.emitter import Emitter
from yaml.representer import SafeRepresenter
from yaml.serializer import Serializer

from opos.errors import YamlProblem
from opos.instructions.yamlfile import CoreResolver, load


def value(text: str) -> object:
    return load(text.encode(), "x.yaml", 65536).value


def problem(text: str | bytes, limit: int = 65536) -> str:
    data = text.encode() if isinstance(text, str) else text
    with pytest.raises(YamlProblem) as caught:
        load(data, "ledger/instructions/x.yaml", limit)
    return str(caught.value.problem)


def test_norway_and_other_yaml11_booleans_stay_strings() -> None:
    assert value("countries: [NO, no, ON, off, YES, y, n]") == {"countries": ["NO", "no", "ON", "off", "YES", "y", "n"]}
    assert value("a: true\nb: False") == {"a": True, "b": False}


def test_numbers_follow_yaml12() -> None:
    assert value("a: 012\nb: 1:20\nc: 0x1F\nd: 0o17\ne: 1.5\nf: 1_000") == {
        "a": 12,
        "b": "1:20",
        "c": 31,
        "d": 15,
        "e": 1.5,
        "f": "1_000",
    }


def test_unquoted_timestamps_and_dates_load() -> None:
    loaded = value("a: 2026-12-01T00:00:00Z\nb: 2026-12-01\nc: 2026-12-01 10:00:00+02:00")
    assert loaded == {"a": "2026-12-01T00:00:00+00:00", "b": "2026-12-01", "c": "2026-12-01T10:00:00+02:00"}


def test_duplicate_key_is_an_error_with_both_lines() -> None:
    message = problem("id: a\ntitle: x\nid: b\n")
    assert message == "ledger/instructions/x.yaml:3: id: duplicate key (first given on line 1): keep one"


def test_nested_duplicate_key() -> None:
    assert problem("target:\n  countries: [IR]\n  countries: [RU]\n").startswith(
        "ledger/instructions/x.yaml:3: target.countries:"
    )


def test_aliases_are_refused() -> None:
    assert "aliases" in problem("a: &x [1, 2]\nb: *x\n")


def test_billion_laughs_is_refused_quickly() -> None:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    assert "aliases" in problem("\n".join(lines))


def test_merge_keys_are_refused() -> None:
    assert "merge keys" in problem("a: {x: 1}\nb:\n  <<: {x: 2}\n")


def test_size_is_capped_before_parsing() -> None:
    message = problem(b"a: " + b"x" * 100, limit=50)
    assert "103 bytes; the limit is 50" in message


def test_tabs_report_their_line() -> None:
    message = problem("id: a\ntarget:\n\tcountries: [IR]\n")
    assert message.startswith("ledger/instructions/x.yaml:3:") and "tab" in message


def test_bad_indentation_and_syntax_report_their_line() -> None:
    assert problem("a:\n  b: 1\n c: 2\n").startswith("ledger/instructions/x.yaml:3: YAML syntax")
    assert problem("a: [1, 2\nb: 3\n").startswith("ledger/instructions/x.yaml:2: YAML syntax")
    # the file has one line: the end of file is reported there, not on a line past the end
    assert problem('a: "unterminated\n').startswith("ledger/instructions/x.yaml:1: YAML syntax")


@pytest.mark.parametrize(
    "text",
    ["a: !!python/object/apply:os.system [echo]", "a: !!binary aGk=", "a: !!set {x}", "a: !custom x"],
)
def test_only_plain_tags(text: str) -> None:
    assert "is not allowed" in problem(text)


def test_one_document_per_file() -> None:
    assert "more than one YAML document" in problem("a: 1\n---\nb: 2\n")


def test_not_utf8() -> None:
    assert "not UTF-8" in problem(b"title: caf\xe9\n")


def test_empty_file() -> None:
    assert "empty" in problem("")
    assert "empty" in problem("# only a comment\n")


def test_deep_nesting_is_refused() -> None:
    assert "nested" in problem("a: " + "[" * 40 + "]" * 40)
    assert "YAML syntax" in problem("[" * 60000)


def test_lines_are_marked() -> None:
    loaded = load(b"id: a\ntarget:\n  countries:\n    - IR\n    - RU\n", "x.yaml", 1000)
    assert loaded.line_of(["target", "countries", 1]) == 5
    assert loaded.line_of(["target", "missing"]) == 2


plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


class CoreDumper(Emitter, Serializer, SafeRepresenter, CoreResolver):
    """PyYAML's safe dumper, quoting by our resolver's rules (so `0E0` and `1:20` come out right)."""

    def __init__(self, stream: Any, **options: Any) -> None:
        Emitter.__init__(self, stream, **{k: v for k, v in options.items() if k in ("allow_unicode", "width")})
        Serializer.__init__(self)
        SafeRepresenter.__init__(self)
        CoreResolver.__init__(self)


@given(plain)
def test_what_a_dumper_writes_loads_back(data: object) -> None:
    text = yaml.dump({"v": data}, Dumper=CoreDumper)
    assert load(text.encode(), "x.yaml", 10**6).value == {"v": data}


@pytest.mark.parametrize(
    ("data", "line"),
    [(b"title: [", 1), (b"title: {", 1), (b"id: x\rtitle: [\r", 2), (b"id: x\r\ntitle: [", 2), (b"x: [\n", 1)],
)
def test_a_file_that_ends_inside_a_bracket_is_a_located_problem(data: bytes, line: int) -> None:
    """libyaml reports such an end of file on a line past the last: it names the last line, never crashes."""
    with pytest.raises(YamlProblem) as caught:
        load(data, "ledger/instructions/x.yaml", 65536)
    assert caught.value.problem.line == line and caught.value.problem.message.startswith("YAML syntax")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=512) | st.text(alphabet="[]{}:,-'\"\r\n\t #&*!|>?%@`a", max_size=200).map(str.encode))
def test_any_bytes_load_or_give_a_located_problem(data: bytes) -> None:
    """Fuzzed: whatever a signed file holds, loading it gives values or a located problem, nothing else."""
    try:
        load(data, "ledger/instructions/x.yaml", 65536)
    except YamlProblem as problem:
        assert problem.problem.path == "ledger/instructions/x.yaml"
        lines = max(len(data.splitlines()), 1)
        assert problem.problem.line is None or 1 <= problem.problem.line <= lines
