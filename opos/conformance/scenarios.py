"""The scenarios: each a sequence of mirror states and polls, with what the plan must say and the property it protects.

A scenario is data built by a function from its World (keys and signed documents derived from its
name). `expect` names plan fields: `commit`, `sequence`, `source` (feed: a mirror's URL; cache;
default: the plan's "none"), `runs` (the instructions to run now: claim null or granted), `claims`
(instruction → granted|refused|unavailable), `skipped` (instruction ids), and `rejected`: words, one
of which must appear in some `rejected` reason (the kind of refusal; a port that words it otherwise
declares it in its xfail file).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opos.conformance.world import Files, World, commit_id, instruction

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Mirror:
    files: Files = field(default_factory=dict)
    behaviour: dict[str, str | int] = field(default_factory=dict)
    host: str | None = None  # fronted: the client must be given URL#host=NAME and send Host: NAME


@dataclass(frozen=True)
class Step:
    mirrors: tuple[Mirror, ...]
    expect: dict[str, Any]
    later: dt.timedelta = dt.timedelta(0)  # --now is NOW + later
    claims: tuple[int, bytes, dict[str, str]] | None = None  # the claims service's answer, when asked
    probe: dict[str, str] = field(default_factory=dict)  # --country, --network, --platform, --probe-id over defaults
    damage: bool = False  # before this poll, every file of the state directory is overwritten with garbage
    within: float | None = None  # the poll must be over within this many seconds (the client's deadlines at work)
    killed_after: float | None = None  # the client is killed (SIGKILL) this long into the poll: a crash, no plan
    unwritable: bool = False  # before this poll, each file of the state directory becomes a directory of that name


@dataclass(frozen=True)
class Scenario:
    name: str
    protects: str  # the property, one line
    anchors: dict[str, Any]  # root_keys|keys: [names], auditors: [names], auditors_required: K
    steps: tuple[Step, ...]


SCENARIOS: dict[str, Callable[[World], Scenario]] = {}


def scenario(name: str, protects: str) -> Callable[[Callable[[World], tuple[dict[str, Any], list[Step]]]], None]:
    def register(build: Callable[[World], tuple[dict[str, Any], list[Step]]]) -> None:
        def made(world: World) -> Scenario:
            anchors, steps = build(world)
            return Scenario(name, protects, anchors, tuple(steps))

        SCENARIOS[name] = made

    return register


def build(name: str) -> Scenario:
    return all_scenarios()[name](World(name, NOW))


def all_scenarios() -> dict[str, Callable[[World], Scenario]]:
    """Every scenario, by name (the case modules register theirs when imported)."""
    from opos.conformance import cases_transport, cases_trust  # noqa: F401

    return SCENARIOS


FEED = {"keys": ["feed"]}


def one(world: World, sequence: int = 1, **site: Any) -> Files:
    return world.site(sequence, [instruction("ir-one", world.now)], **site)


def ok(sequence: int, variant: str = "", source: str = "feed", **more: Any) -> dict[str, Any]:
    return {"commit": commit_id(sequence, variant), "sequence": sequence, "source": source, **more}
