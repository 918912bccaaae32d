"""The data OPOS ships: JSON Schemas, the nettest registry, country codes, the template ledger.

In a wheel they live in `opos/_data/`; in a source checkout they are the repository's own
`schemas/` and `ledger/` folders, the single source of truth.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fastjsonschema

from opos import model

if TYPE_CHECKING:  # jsonschema is imported when a document fails the fast check: a tenth of a second saved elsewhere
    import jsonschema

_PACKAGE = Path(__file__).resolve().parent.parent  # the opos package


def data_dir(name: str) -> Path:
    """The folder `schemas`, `ledger` or `.github/workflows`, wherever this installation keeps it."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"OPOS is installed without its {name}/ folder; reinstall it")


@functools.cache
def schema_document(name: str) -> dict[str, Any]:
    """The JSON document `schemas/<name>.json` (e.g. "instruction.schema")."""
    with (data_dir("schemas") / f"{name}.json").open("rb") as handle:
        document: dict[str, Any] = json.load(handle)
    return document


def _whole_pattern(
    validator: Any, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    """`pattern`, with a final `$` meaning the end of the string, as in JSON Schema's regex dialect.

    Python's `$` also matches before a final newline, so "abc\n" would pass `^[a-z]+$`.
    """
    if not isinstance(instance, str):
        return
    anchored = pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith(r"\$") else pattern
    if not re.search(anchored, instance):
        import jsonschema

        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


@functools.cache
def _strict_validator_class() -> Any:
    import jsonschema.validators

    return jsonschema.validators.extend(  # type: ignore[no-untyped-call]
        jsonschema.Draft202012Validator, {"pattern": _whole_pattern}
    )


def strict_validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """A Draft 2020-12 validator for `schema` (checked to be valid) whose patterns match whole strings."""
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(schema)
    validator: jsonschema.Draft202012Validator = _strict_validator_class()(schema)
    return validator


@functools.cache
def validator(name: str) -> jsonschema.Draft202012Validator:
    """A validator for `schemas/<name>.schema.json`, checked once to be a valid schema."""
    return strict_validator(schema_document(f"{name}.schema"))


@functools.cache
def rules_fingerprint() -> str:
    """Names this version of the rules: the schemas, the test registry and the code that judges files.

    Saved verdicts carry it, so that another version of OPOS never trusts what this one decided.
    """
    digest = hashlib.sha256()
    sources = sorted(data_dir("schemas").glob("*.json")) + sorted(Path(__file__).parent.glob("*.py"))
    for path in [*sources, _PACKAGE / "model.py"]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _no_fetch(uri: str) -> Any:
    raise ValueError(f"{uri}: the schemas refer only to themselves; nothing is fetched")


# fastjsonschema fetches a $ref it cannot resolve locally with urllib: never from here.
_NO_FETCH = {"http": _no_fetch, "https": _no_fetch, "file": _no_fetch, "ftp": _no_fetch}


def _compiled(schema: dict[str, Any]) -> Callable[[Any], object]:
    """`schema` compiled to Python by fastjsonschema: the function raises on any value the schema refuses.

    Some fifteen times faster than jsonschema, so valid documents are accepted here and only the
    others go through jsonschema for their located messages. Its patterns match whole strings too
    (it reads a final `$` as the end of the string), and tests/test_speed_paths.py checks on
    thousands of mutated files that it never accepts what jsonschema refuses.
    """
    check: Callable[[Any], object] = fastjsonschema.compile(schema, handlers=_NO_FETCH)
    return check


def _passes(check: Callable[[Any], object], value: Any) -> bool:
    try:
        check(value)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


@functools.cache
def _fast_check(name: str) -> Callable[[Any], object]:
    return _compiled(schema_document(f"{name}.schema"))


def is_valid(name: str, value: Any) -> bool:
    """Whether `value` passes `schemas/<name>.schema.json`, quickly; `validator` says why it does not."""
    return _passes(_fast_check(name), value)


def _tolerant(node: Any) -> Any:
    """A schema that accepts what a later version may add: no `additionalProperties: false`, any `kind`."""
    if isinstance(node, dict):
        relaxed = {key: _tolerant(value) for key, value in node.items() if key != "additionalProperties"}
        if set(relaxed.get("enum", ())) == {"run", "schedule"}:
            return {"type": "string"}  # an instruction kind this version does not know is skipped, not refused
        return relaxed
    if isinstance(node, list):
        return [_tolerant(item) for item in node]
    return node


@functools.cache
def reader_schema(name: str) -> dict[str, Any]:
    """`schemas/<name>.schema.json` as a reader of signed documents applies it (the head, the feed).

    The documents may grow: a field this version does not know is ignored, and an instruction of a
    kind it does not know is kept for the plan to skip. OPOS itself writes only what the schema
    describes; tests check its output against the schema as it stands.
    """
    document: dict[str, Any] = _tolerant(schema_document(f"{name}.schema"))
    return document


@functools.cache
def reader_validator(name: str) -> jsonschema.Draft202012Validator:
    return strict_validator(reader_schema(name))


@functools.cache
def _fast_reader_check(name: str) -> Callable[[Any], object]:
    return _compiled(reader_schema(name))


def is_readable(name: str, value: Any) -> bool:
    """Whether a signed document passes `reader_schema(name)`, quickly; `reader_validator` says why not."""
    return _passes(_fast_reader_check(name), value)


def unreadable(name: str, value: Any) -> str | None:
    """None when a signed document passes `reader_schema(name)`; else where and why not, for the message.
    Raises RecursionError for a value nested past what can be checked."""
    if is_readable(name, value):
        return None
    from jsonschema.exceptions import best_match

    error = best_match(reader_validator(name).iter_errors(value))
    if error is None:
        return "it breaks its schema"
    where = "/".join(str(p) for p in error.absolute_path) or "(top)"
    return f"it breaks its schema at {where}: {error.message}"


@functools.cache
def nettests() -> dict[str, dict[str, Any]]:
    tests: dict[str, dict[str, Any]] = schema_document("nettests")["tests"]
    return tests


@functools.cache
def countries() -> frozenset[str]:
    return frozenset(schema_document("countries")["countries"])


# Codes people write for a country that ISO 3166-1 spells otherwise.
COUNTRY_ALIASES = {"UK": "GB", "EL": "GR", "KV": "XK"}


def not_a_country(code: str) -> str:
    """What to tell someone who wrote `code` where a country code belongs."""
    hint = f" (did you mean {COUNTRY_ALIASES[code]!r}?)" if code in COUNTRY_ALIASES else ""
    return f"{code!r} is not an ISO 3166-1 alpha-2 country code{hint}"


def parse_known_country(text: str) -> str:
    """A country code as typed (`ir`, `IR`) that ISO 3166-1 knows → `IR`; else ValueError saying what was meant.

    Every place that takes a country from a person (`opos log`, `opos probe`, /log, /v1/log.json,
    /log.atom) asks this one, so "UK" gets the same answer everywhere.
    """
    code = model.parse_country(text)
    if code not in countries():
        raise ValueError(not_a_country(code))
    return code


@functools.cache
def country_names() -> dict[str, str]:
    """Code → the country's name in English, for people reading the log."""
    names: dict[str, str] = schema_document("countries")["names"]
    return names
