"""The data OPOS ships: JSON Schemas, the nettest registry, country codes, the template ledger.

In a wheel they live in `opos/_data/`; in a source checkout they are the repository's own
`schemas/` and `ledger/` folders, the single source of truth.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

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


@functools.cache
def validator(name: str) -> jsonschema.Draft202012Validator:
    """A validator for `schemas/<name>.schema.json`, checked once to be a valid schema."""
    schema = schema_document(f"{name}.schema")
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@functools.cache
def nettests() -> dict[str, dict[str, Any]]:
    tests: dict[str, dict[str, Any]] = schema_document("nettests")["tests"]
    return tests


@functools.cache
def countries() -> frozenset[str]:
    return frozenset(schema_document("countries")["countries"])
