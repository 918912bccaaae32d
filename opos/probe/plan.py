"""What a probe should do now, from a verified feed: pure functions, no I/O.

- An instruction applies when its window contains now, its target takes the probe's country,
  network and platform, and (with `sample`) the probe's hash point falls under the fraction.
- Schedules: per test, the shortest interval among the applicable `schedule` instructions wins;
  a test no instruction sets keeps the probe's default interval.
- Runs: each applicable `run` instruction once per revision, after a random delay (jitter) so
  that probes neither run at the same second nor are easy to enumerate.

`Plan.to_json` is the document of schemas/plan.schema.json (`opos probe --json`).
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from opos.instructions import targeting
from opos.model import CommitHash, format_time
from opos.signing.documents import Feed, FeedEntry

HOUR = 3600
# What ooniprobe runs unattended today, about every hour (cmd/ooniprobe/internal/autorun); performance
# tests (dash, ndt) are never run unattended.
DEFAULT_SCHEDULE: dict[str, int] = dict.fromkeys(
    (
        "web_connectivity",
        "facebook_messenger",
        "signal",
        "telegram",
        "whatsapp",
        "psiphon",
        "riseupvpn",
        "tor",
        "http_header_field_manipulation",
        "http_invalid_request_line",
        "dnscheck",
        "stunreachability",
    ),
    HOUR,
)

Claim = Literal["granted", "refused", "unavailable"]


@dataclass(frozen=True)
class Probe:
    probe_id: str
    country: str
    network: str
    platform: str | None = None


@dataclass(frozen=True)
class Run:
    """A run instruction to carry out: after `delay` seconds, when its claim is None (uncapped) or granted."""

    instruction: str
    revision: CommitHash
    test: str
    inputs: tuple[str, ...]
    delay: int
    claim: Claim | None
    sequence: int  # of the feed that asked for it

    @property
    def annotations(self) -> dict[str, str]:
        """For every measurement of this run: OONI measurements carry a string map `annotations`."""
        return {
            "opos_instruction": self.instruction,
            "opos_revision": self.revision,
            "opos_sequence": str(self.sequence),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "instruction": self.instruction,
            "revision": self.revision,
            "test": self.test,
            "inputs": list(self.inputs),
            "delay": self.delay,
            "claim": self.claim,
            "annotations": self.annotations,
        }


@dataclass(frozen=True)
class ScheduleEntry:
    test: str
    every: int  # seconds
    instruction: str | None  # None: the probe's default

    def to_json(self) -> dict[str, Any]:
        return {"test": self.test, "every": self.every, "instruction": self.instruction}


@dataclass(frozen=True)
class RejectedSource:
    """An answer not used (a mirror's, or "cache" for a discarded state), and why."""

    mirror: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"mirror": self.mirror, "reason": self.reason}


@dataclass(frozen=True)
class Upcoming:
    """An instruction for this probe whose window has not opened yet."""

    instruction: str
    kind: str
    test: str
    starts: dt.datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "instruction": self.instruction,
            "kind": self.kind,
            "test": self.test,
            "starts": format_time(self.starts),
        }


@dataclass(frozen=True)
class Skipped:
    """An applicable instruction this probe cannot follow: a kind or a test it does not know, and why."""

    instruction: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"instruction": self.instruction, "reason": self.reason}


@dataclass(frozen=True)
class Plan:
    time: dt.datetime
    probe_id: str
    commit: CommitHash | None
    sequence: int | None
    source: str  # the mirror whose answer was used, "cache" or "none"
    runs: tuple[Run, ...]
    schedule: tuple[ScheduleEntry, ...]
    rejected: tuple[RejectedSource, ...]
    upcoming: tuple[Upcoming, ...] = ()
    reported: tuple[str, ...] = ()  # applicable run instructions already run at their revision
    skipped: tuple[Skipped, ...] = ()  # applicable, but of a kind or for a test this probe does not know

    def to_json(self) -> dict[str, Any]:
        return {
            "time": format_time(self.time),
            "probe_id": self.probe_id,
            "commit": self.commit,
            "sequence": self.sequence,
            "source": self.source,
            "runs": [run.to_json() for run in self.runs],
            "schedule": [entry.to_json() for entry in self.schedule],
            "rejected": [item.to_json() for item in self.rejected],
            "upcoming": [item.to_json() for item in self.upcoming],
            "reported": list(self.reported),
            "skipped": [item.to_json() for item in self.skipped],
        }


def applicable(feed: Feed, probe: Probe, now: dt.datetime) -> list[FeedEntry]:
    """The feed's instructions that apply to this probe at this moment."""
    return [
        entry
        for entry in feed.entries
        if targeting.in_window(entry.instruction, now)
        and targeting.matches(entry.instruction, probe.country, probe.network, probe.platform) is None
        and targeting.in_sample(entry.instruction, probe.probe_id)
    ]


KINDS = ("run", "schedule")


def followable(entries: Iterable[FeedEntry], tests: Container[str]) -> tuple[list[FeedEntry], tuple[Skipped, ...]]:
    """The entries this probe can follow, and the others with why: a feed may carry what later probes know.

    An instruction of a kind this version does not know, or for a test the probe does not have,
    is skipped (and said), never guessed at; the rest of the feed is followed as usual.
    """
    usable, skipped = [], []
    for entry in entries:
        kind, test = entry.instruction.kind, entry.instruction.test
        if kind not in KINDS:
            skipped.append(Skipped(entry.id, f"its kind {kind!r} is not one this probe knows ({', '.join(KINDS)})"))
        elif test not in tests:
            skipped.append(Skipped(entry.id, f"this probe does not have the test {test!r}"))
        else:
            usable.append(entry)
    return usable, tuple(skipped)


def upcoming(feed: Feed, probe: Probe, now: dt.datetime) -> tuple[Upcoming, ...]:
    """The feed's instructions for this probe whose window opens later, soonest first."""
    found = [
        Upcoming(e.id, e.instruction.kind, e.instruction.test, e.instruction.window.start)
        for e in feed.entries
        if e.instruction.window.start > now
        and targeting.matches(e.instruction, probe.country, probe.network, probe.platform) is None
        and targeting.in_sample(e.instruction, probe.probe_id)
    ]
    return tuple(sorted(found, key=lambda u: (u.starts, u.instruction)))


def schedule(entries: Iterable[FeedEntry], defaults: Mapping[str, int]) -> tuple[ScheduleEntry, ...]:
    """Per test: the shortest interval an applicable schedule sets, else the default."""
    chosen = {test: ScheduleEntry(test, every, None) for test, every in defaults.items()}
    for entry in entries:
        instruction = entry.instruction
        if instruction.kind != "schedule" or instruction.every is None:
            continue
        current = chosen.get(instruction.test)
        if current is None or current.instruction is None or instruction.every < current.every:
            chosen[instruction.test] = ScheduleEntry(instruction.test, instruction.every, instruction.id)
    return tuple(chosen[test] for test in sorted(chosen))


def pending_runs(entries: Iterable[FeedEntry], ran: Mapping[str, str]) -> list[FeedEntry]:
    """Applicable run instructions not yet reported at their current revision."""
    return [e for e in entries if e.instruction.kind == "run" and ran.get(e.id) != e.revision]


def jitter(entry: FeedEntry, now: dt.datetime, max_delay: int, rng: random.Random) -> int:
    """A random delay in seconds, within max_delay and within what is left of the window."""
    left = int((entry.instruction.window.end - now).total_seconds())
    return rng.randint(0, max(0, min(max_delay, left - 1)))


@dataclass(frozen=True)
class Applicable:
    """What a feed asks of this probe now: the instructions it can follow, and those it cannot, with why."""

    entries: list[FeedEntry]
    skipped: tuple[Skipped, ...]


def applicable_to(feed: Feed | None, probe: Probe, now: dt.datetime, tests: Container[str]) -> Applicable:
    if feed is None:
        return Applicable([], ())
    return Applicable(*followable(applicable(feed, probe, now), tests))


def needing_claims(found: Applicable, ran: Mapping[str, str]) -> list[FeedEntry]:
    """The run instructions this plan would start that are capped: each needs a granted claim first."""
    return [e for e in pending_runs(found.entries, ran) if e.instruction.target.max_probes is not None]


@dataclass(frozen=True)
class Choices:
    """What the probe's operator chose that planning takes: the tests it has, default intervals, the delays."""

    tests: Container[str]
    defaults: Mapping[str, int]
    max_delay: int


def plan(
    feed: Feed | None, probe: Probe, now: dt.datetime, ran: Mapping[str, str], granted: Mapping[str, Claim],
    choices: Choices, rng: random.Random, source: str, rejected: Iterable[RejectedSource] = (),
    found: Applicable | None = None,
) -> Plan:  # fmt: skip
    """What this probe does now with this feed (None: nothing trusted), given the runs already reported at
    their revision (`ran`) and the claims made for capped ones (`granted`). Pure but for `rng`'s delays.
    `found` is `applicable_to(feed, probe, now, choices.tests)` when the caller has it already."""
    found = found or applicable_to(feed, probe, now, choices.tests)
    entries, skipped = found.entries, found.skipped
    sequence = feed.sequence if feed is not None else 0
    delays = [(e, jitter(e, now, choices.max_delay, rng)) for e in pending_runs(entries, ran)]
    runs = tuple(Run(e.id, e.revision, e.instruction.test, e.instruction.inputs, delay, granted.get(e.id), sequence)
                 for e, delay in delays)  # fmt: skip
    return Plan(
        time=now, probe_id=probe.probe_id, commit=feed.commit if feed else None,
        sequence=feed.sequence if feed else None, source=source, runs=runs,
        schedule=schedule(entries, choices.defaults), rejected=tuple(rejected),
        upcoming=upcoming(feed, probe, now) if feed else (), skipped=skipped,
        reported=tuple(e.id for e in entries if e.instruction.kind == "run" and ran.get(e.id) == e.revision),
    )  # fmt: skip
