"""What a probe should do now, from a verified feed: pure functions, no I/O.

- An instruction applies when its window contains now, its target takes the probe's country,
  network and platform, and (with `sample`) the probe's hash point falls under the fraction.
- Schedules: per test, the shortest interval among the applicable `schedule` instructions wins;
  a test no instruction sets keeps the probe's default interval.
- Runs: each applicable `run` instruction once per revision, after a random delay (jitter) so
  that probes neither run at the same second nor are easy to enumerate.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from opos.feed import targeting
from opos.model import parse_time

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


@dataclass(frozen=True)
class Probe:
    probe_id: str
    country: str
    network: str
    platform: str | None = None


def applicable(feed: Mapping[str, Any], probe: Probe, now: dt.datetime) -> list[dict[str, Any]]:
    """The feed's instructions that apply to this probe at this moment."""
    return [
        instruction
        for instruction in feed["instructions"]
        if targeting.in_window(instruction, now)
        and targeting.matches(instruction, probe.country, probe.network, probe.platform) is None
        and targeting.in_sample(instruction, probe.probe_id)
    ]


def schedule(instructions: Iterable[Mapping[str, Any]], defaults: Mapping[str, int]) -> list[dict[str, Any]]:
    """Per test: the shortest interval an applicable schedule sets, else the default."""
    chosen: dict[str, dict[str, Any]] = {
        test: {"test": test, "every": every, "instruction": None} for test, every in defaults.items()
    }
    for instruction in instructions:
        if instruction["kind"] != "schedule":
            continue
        current = chosen.get(instruction["test"])
        if current is None or current["instruction"] is None or instruction["every"] < current["every"]:
            chosen[instruction["test"]] = {
                "test": instruction["test"],
                "every": instruction["every"],
                "instruction": instruction["id"],
            }
    return [chosen[test] for test in sorted(chosen)]


def pending_runs(instructions: Iterable[Mapping[str, Any]], ran: Mapping[str, str]) -> list[Mapping[str, Any]]:
    """Applicable run instructions not yet reported at their current revision."""
    return [i for i in instructions if i["kind"] == "run" and ran.get(i["id"]) != i["revision"]]


def jitter(instruction: Mapping[str, Any], now: dt.datetime, max_delay: int, rng: random.Random) -> int:
    """A random delay in seconds, within max_delay and within what is left of the window."""
    left = int((parse_time(instruction["window"]["end"]) - now).total_seconds())
    return rng.randint(0, max(0, min(max_delay, left - 1)))
