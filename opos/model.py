"""The values OPOS passes around: frozen, typed, and already checked when they exist."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, NewType

CommitHash = NewType("CommitHash", str)
"""40 lowercase hex characters."""

KeyFingerprint = NewType("KeyFingerprint", str)
"""An OpenSSH fingerprint, `SHA256:` and unpadded base64, as `ssh-keygen -lf` prints it."""

FEED_PAYLOAD_TYPE = "application/vnd.opos.feed.v1+json"
HEAD_PAYLOAD_TYPE = "application/vnd.opos.head.v1+json"


def format_time(moment: dt.datetime) -> str:
    """UTC, to the second, as `YYYY-MM-DDTHH:MM:SSZ`: the one time format of every document."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> dt.datetime:
    """The inverse of format_time. Raises ValueError."""
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class Target:
    countries: tuple[str, ...]
    networks: tuple[str, ...] = ()
    platforms: tuple[str, ...] = ()
    max_probes: int | None = None
    max_probes_per: str = "target"
    sample: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "countries": list(self.countries),
            "networks": list(self.networks),
            "platforms": list(self.platforms),
            "max_probes": self.max_probes,
            "max_probes_per": self.max_probes_per,
            "sample": self.sample,
        }


@dataclass(frozen=True)
class Window:
    start: dt.datetime
    end: dt.datetime

    def to_json(self) -> dict[str, Any]:
        return {"start": format_time(self.start), "end": format_time(self.end)}


@dataclass(frozen=True)
class Instruction:
    """One valid instruction, normalised: UTC times, upper-case countries, `AS<n>` networks."""

    id: str
    kind: str
    title: str
    reason: str
    test: str
    inputs: tuple[str, ...]
    every: int | None
    target: Target
    window: Window

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "title": self.title,
            "reason": self.reason,
            "test": self.test,
            "inputs": list(self.inputs),
            "every": self.every,
            "target": self.target.to_json(),
            "window": self.window.to_json(),
        }


@dataclass(frozen=True)
class Policy:
    """Limits the ledger sets for itself in policy.yaml (signed like everything else)."""

    min_every: int = 15 * 60
    max_window: int = 90 * 86400
    max_inputs: int = 1000
    tests: frozenset[str] | None = None  # None: every known test


@dataclass(frozen=True)
class Signer:
    """Who signed a commit: the principals of the allowed-signers line, and the key."""

    principal: str
    fingerprint: KeyFingerprint
