"""A feed payload read in one pass, checked as it is built: what a probe does with every new feed. Pure.

The reader schema (`resources.reader_schema("feed")`) is the rule; this is a faster way to apply it
to the feeds OPOS writes: it checks what the schema checks while building the values, and returns
None for anything it is not sure of (a later version's fields are ignored, as the schema ignores
them; anything else unusual), so that the caller applies the schema itself and says what is wrong.
It never accepts what the schema refuses: tests/test_speed_paths.py mutates feeds to check it.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from opos.model import CommitHash, Instruction, Target, Window, parse_time

_COMMIT = re.compile(r"[0-9a-f]{40}")
_ID = re.compile(r"[a-z0-9-]{3,80}")
_COUNTRY = re.compile(r"[A-Z]{2}|\*")
_NETWORK = re.compile(r"AS[1-9][0-9]*")
_PER = frozenset({"target", "country", "network"})
_INSTRUCTION = frozenset({"id", "kind", "title", "reason", "test", "inputs", "every", "target", "window", "revision",
                          "signer"})  # fmt: skip
_TARGET = frozenset({"countries", "networks", "platforms", "max_probes", "max_probes_per", "sample"})


class _Unsure(Exception):
    """Something the fast reader leaves to the schema."""


Entry = tuple[Instruction, CommitHash, str | None, tuple[str, ...]]  # what a FeedEntry holds
Parts = tuple[CommitHash, int, dt.datetime, tuple[Entry, ...]]  # what a Feed holds


def read_feed(payload: Any) -> Parts | None:
    """What the Feed of a payload that passes the reader schema holds; None when the schema must be asked."""
    try:
        if type(payload) is not dict or payload.get("type") != "opos.feed/v1":
            return None
        times: dict[str, dt.datetime] = {}  # windows repeat: each distinct time is parsed once
        entries = tuple(_entry(item, times) for item in _list(payload["instructions"]))
        sequence = payload["sequence"]
        if type(sequence) is not int or sequence < 0:
            return None
        return _commit(payload["commit"]), sequence, _time(payload["committed"], times), entries
    except (_Unsure, KeyError, ValueError):
        return None


def _entry(item: Any, times: dict[str, dt.datetime]) -> Entry:
    if type(item) is not dict or not item.keys() >= _INSTRUCTION:
        raise _Unsure
    every, signer = item["every"], item["signer"]
    if not (every is None or (type(every) is int and every >= 1)) or not (signer is None or type(signer) is str):
        raise _Unsure
    window = item["window"]
    if type(window) is not dict:
        raise _Unsure
    instruction = Instruction(
        _text(item["id"], _ID), _text(item["kind"]), _text(item["title"]), _text(item["reason"]), _text(item["test"]),
        tuple(_text(one) for one in _list(item["inputs"])), every, _target(item["target"]),
        Window(_time(window["start"], times), _time(window["end"], times)),
    )  # fmt: skip
    approvers: tuple[str, ...] = ()
    if "approvers" in item:
        listed = _list(item["approvers"])
        approvers = tuple(_text(one) for one in listed)
        if not 1 <= len(listed) <= 20 or len(set(approvers)) != len(approvers):
            raise _Unsure
        if any(not 1 <= len(one) <= 256 for one in approvers):
            raise _Unsure
    return instruction, _commit(item["revision"]), signer, approvers


def _target(value: Any) -> Target:
    if type(value) is not dict or not value.keys() >= _TARGET:
        raise _Unsure
    countries = tuple(_text(one, _COUNTRY) for one in _list(value["countries"]))
    cap, per, sample = value["max_probes"], value["max_probes_per"], value["sample"]
    if not countries or not (cap is None or (type(cap) is int and cap >= 1)) or per not in _PER:
        raise _Unsure
    if not (sample is None or (type(sample) in (int, float) and 0 < sample <= 1)):
        raise _Unsure
    networks = tuple(_text(one, _NETWORK) for one in _list(value["networks"]))
    return Target(countries, networks, tuple(_text(one) for one in _list(value["platforms"])), cap, per, sample)


def _list(value: Any) -> list[Any]:
    if type(value) is not list:
        raise _Unsure
    return value


def _text(value: Any, pattern: re.Pattern[str] | None = None) -> str:
    if type(value) is not str or (pattern is not None and not pattern.fullmatch(value)):
        raise _Unsure
    return value


def _commit(value: Any) -> CommitHash:
    return CommitHash(_text(value, _COMMIT))


def _time(value: Any, times: dict[str, dt.datetime]) -> dt.datetime:
    known = times.get(value) if type(value) is str else None
    if known is None:
        known = times[_text(value)] = parse_time(value)  # raises ValueError for what is not a time
    return known
