"""What a probe should do, from a verified feed: windows, targets, samples, schedules, runs, jitter."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from conftest import TODAY, UPCOMING, instruction
from opos.instructions import rules, targeting
from opos.model import CommitHash
from opos.probe import plan
from opos.signing.documents import Feed, FeedEntry

NOW = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)
PROBE = plan.Probe("probe-0000000000000001", "IR", "AS197207", "android")


def entry(ident: str, **changes: Any) -> FeedEntry:
    target = {"countries": ["IR"], "networks": [], "platforms": [], "max_probes": None, "max_probes_per": "target",
              "sample": None}  # fmt: skip
    target.update(changes.pop("target", {}))
    base = {
        "id": ident, "kind": "run", "title": "t", "reason": "r", "test": "web_connectivity",
        "inputs": ["https://example.org/"], "every": None, "target": target,
        "window": {"start": "2026-12-01T00:00:00Z", "end": "2026-12-15T00:00:00Z"},
        "revision": "a" * 40, "signer": "alice",
    }  # fmt: skip
    base.update(changes)
    return FeedEntry.from_json(base)


def feed(*entries: FeedEntry) -> Feed:
    return Feed(CommitHash("c" * 40), 1, NOW, entries)


def ids(items: list[FeedEntry]) -> list[str]:
    return [i.id for i in items]


def test_window_target_platform() -> None:
    items = feed(
        entry("now-one"),
        entry("later-one", window={"start": "2026-12-06T00:00:00Z", "end": "2026-12-07T00:00:00Z"}),
        entry("ended-one", window={"start": "2026-12-01T00:00:00Z", "end": "2026-12-05T12:00:00Z"}),
        entry("ru-one", target={"countries": ["RU"]}),
        entry("everywhere", target={"countries": ["*"]}),
        entry("other-net", target={"networks": ["AS1"]}),
        entry("this-net", target={"networks": ["AS197207"]}),
        entry("ios-only", target={"platforms": ["ios"]}),
        entry("android-only", target={"platforms": ["android"]}),
    )
    assert ids(plan.applicable(items, PROBE, NOW)) == ["now-one", "everywhere", "this-net", "android-only"]


def test_schedules_shortest_wins_and_defaults_fill_in() -> None:
    items = [
        entry("six", kind="schedule", test="telegram", inputs=[], every=6 * 3600),
        entry("two", kind="schedule", test="telegram", inputs=[], every=2 * 3600),
        entry("four", kind="schedule", test="signal", inputs=[], every=4 * 3600),
    ]
    result = plan.schedule(items, {"telegram": 3600 * 24, "web_connectivity": 3600})
    assert [e.to_json() for e in result] == [
        {"test": "signal", "every": 4 * 3600, "instruction": "four"},
        {"test": "telegram", "every": 2 * 3600, "instruction": "two"},
        {"test": "web_connectivity", "every": 3600, "instruction": None},
    ]


def test_a_schedule_may_also_lengthen_the_default() -> None:
    items = [entry("slow", kind="schedule", test="telegram", inputs=[], every=48 * 3600)]
    assert plan.schedule(items, {"telegram": 3600}) == (plan.ScheduleEntry("telegram", 48 * 3600, "slow"),)


def test_runs_once_per_revision() -> None:
    items = [entry("one"), entry("two"), entry("three", kind="schedule", every=3600)]
    assert ids(plan.pending_runs(items, {})) == ["one", "two"]
    assert ids(plan.pending_runs(items, {"one": "a" * 40, "two": "b" * 40})) == ["two"]


def test_sampling_is_stable_and_proportional() -> None:
    probes = [f"probe-{n:016}" for n in range(4000)]
    chosen = [p for p in probes if targeting.in_sample(entry("s", target={"sample": 0.1}).instruction, p)]
    assert 300 < len(chosen) < 500
    assert chosen == [p for p in probes if targeting.in_sample(entry("s", target={"sample": 0.1}).instruction, p)]
    other = {p for p in probes if targeting.in_sample(entry("t", target={"sample": 0.1}).instruction, p)}
    assert other != set(chosen)  # another instruction samples other probes


@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=14 * 86400))
def test_jitter_stays_within_the_limit_and_the_window(max_delay: int, elapsed: int) -> None:
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=elapsed)
    left = (dt.datetime(2026, 12, 15, tzinfo=dt.UTC) - now).total_seconds()
    delay = plan.jitter(entry("j"), now, max_delay, random.Random(elapsed))
    assert 0 <= delay <= max(0, min(max_delay, left - 1))


def test_the_fixtures_windows_follow_the_suite_clock_whatever_the_day() -> None:
    """conftest's instructions are dated from the suite's clock (TODAY), so the suite answers the same on any day.

    The fixture is planned at several moments of its own window: before it (the day the suite runs),
    at its start, inside, at its end and after it.
    """
    checked, problems = rules.check_instruction(instruction("first-one").encode(), "first-one.yaml", rules.Policy())
    assert checked is not None and not problems
    fixture = feed(FeedEntry(checked, CommitHash("a" * 40), "alice"))
    start, end = (TODAY + dt.timedelta(days=offset) for offset in UPCOMING)
    moments = {TODAY: [], start - dt.timedelta(seconds=1): [], start: ["first-one"],
               start + (end - start) / 2: ["first-one"], end: [], end + dt.timedelta(days=30): []}  # fmt: skip
    for moment, expected in moments.items():
        assert ids(plan.applicable(fixture, PROBE, moment)) == expected, moment
