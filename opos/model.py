"""The values OPOS passes around: frozen, typed, and already checked when they exist."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, NewType

CommitHash = NewType("CommitHash", str)
"""40 lowercase hex characters."""

KeyFingerprint = NewType("KeyFingerprint", str)
"""An OpenSSH fingerprint, `SHA256:` and unpadded base64, as `ssh-keygen -lf` prints it."""

FEED_PAYLOAD_TYPE = "application/vnd.opos.feed.v1+json"
HEAD_PAYLOAD_TYPE = "application/vnd.opos.head.v1+json"


TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def format_time(moment: dt.datetime) -> str:
    """UTC, to the second, as `YYYY-MM-DDTHH:MM:SSZ`: the one time format of every document."""
    utc = moment if moment.tzinfo is dt.UTC else moment.astimezone(dt.UTC)
    # strftime(TIME_FORMAT), spelled out: it is three times faster, and documents hold many times
    return f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}Z"


_TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z")


def parse_time(text: str) -> dt.datetime:
    """The inverse of format_time. Raises ValueError.

    Read with a pattern rather than strptime, which is ten times slower: the log parses every
    window of its history.
    """
    match = _TIME.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not a time as YYYY-MM-DDTHH:MM:SSZ")
    year, month, day, hour, minute, second = map(int, match.groups())
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)


def parse_timestamp(text: str) -> dt.datetime:
    """What people write: a timestamp with a time zone, or a date (midnight UTC), as an aware UTC datetime.

    Raises ValueError.
    """
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
    moment = dt.datetime.fromisoformat(re.sub(r"\s+(?=[Zz+-]\d*[:\d]*$)", "", text).replace("z", "Z"))
    if moment.tzinfo is None:
        raise ValueError("needs a time zone")
    try:
        return moment.astimezone(dt.UTC).replace(microsecond=0)
    except OverflowError:
        raise ValueError(f"{text!r} is outside the years a UTC time can hold") from None


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_ISO_DURATION = re.compile(r"P(?:(\d+)W|(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?)")


def parse_duration(text: str) -> int:
    """`30m`, `6h`, `1d`, `90s`, `2w` or ISO 8601 (`PT6H`, `P1D`) in seconds. Raises ValueError."""
    if text[-1:] in _UNITS and text[:-1].isdigit() and text[:-1].isascii():
        return int(text[:-1]) * _UNITS[text[-1]]
    match = _ISO_DURATION.fullmatch(text)
    if not match or text in ("P", "PT") or text.endswith("T"):
        raise ValueError(f"{text!r} is not a duration such as 30m, 6h, 1d or PT6H")
    weeks, days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return (((weeks * 7 + days) * 24 + hours) * 60 + minutes) * 60 + seconds


def format_duration(seconds: int) -> str:
    """The shortest exact spelling that parse_duration reads back: 6h, 90m, 45s."""
    for unit in ("w", "d", "h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


_COUNTRY = re.compile(r"[A-Za-z]{2}")
_NETWORK = re.compile(r"(?:[Aa][Ss] ?)?([0-9]{1,10})")


def parse_country(text: str) -> str:
    """A two-letter country code as typed (`ir`, `IR`) → `IR`. Raises ValueError."""
    if not _COUNTRY.fullmatch(text):
        raise ValueError(f"{text!r} is not a two-letter country code, like IR")
    return text.upper()


def parse_network(text: str) -> str:
    """A network as typed (`AS197207`, `as197207`, `197207`) → `AS197207`. Raises ValueError."""
    match = _NETWORK.fullmatch(text)
    if not match:
        raise ValueError(f"{text!r} is not a network like AS197207")
    return f"AS{int(match.group(1))}"


PLATFORMS = ("android", "ios", "linux", "macos", "windows")


def parse_platform(text: str) -> str:
    """A platform as typed (`Android`) → `android`. Raises ValueError."""
    if text.lower() not in PLATFORMS:
        raise ValueError(f"{text!r} is not a platform: {', '.join(PLATFORMS)}")
    return text.lower()


def normalise_network(text: str) -> str:
    """`AS<n>` for anything parse_network accepts; other text unchanged (it then matches no network)."""
    try:
        return parse_network(text)
    except ValueError:
        return text


@dataclass(frozen=True)
class Target:
    countries: tuple[str, ...]
    networks: tuple[str, ...] = ()
    platforms: tuple[str, ...] = ()
    max_probes: int | None = None
    max_probes_per: str = "target"
    sample: float | None = None

    def excludes(self, country: str | None, network: str | None, platform: str | None = None) -> str | None:
        """None when this target takes a probe of this country, network and platform; else why not, in words.

        None stands for any country, network or platform (a query of the log); a probe that does not
        know its platform passes "", which no platform list holds.
        """
        if country is not None and self.countries != ("*",) and country.upper() not in self.countries:
            return f"the instruction targets {', '.join(self.countries)}, not {country.upper()}"
        if network is not None and self.networks and normalise_network(network) not in self.networks:
            return f"the instruction targets the networks {', '.join(self.networks)}, not {network}"
        if platform is not None and self.platforms and platform not in self.platforms:
            return f"the instruction targets the platforms {', '.join(self.platforms)}, not {platform or 'unknown'}"
        return None

    def takes(self, country: str | None, network: str | None) -> bool:
        """Whether `excludes` would say nothing, for a country and network already normalised (IR, AS1234).

        Without the reasons, for the log's filters, which ask it of every event of a history.
        """
        if country is not None and self.countries != ("*",) and country not in self.countries:
            return False
        return network is None or not self.networks or network in self.networks

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Target:
        """The inverse of to_json, for documents OPOS wrote or has verified against their schema."""
        return cls(
            countries=tuple(value["countries"]),
            networks=tuple(value["networks"]),
            platforms=tuple(value["platforms"]),
            max_probes=value["max_probes"],
            max_probes_per=value["max_probes_per"],
            sample=value["sample"],
        )

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

    def contains(self, moment: dt.datetime) -> bool:
        return self.start <= moment < self.end

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Window:
        return cls(parse_time(value["start"]), parse_time(value["end"]))

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

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Instruction:
        """The inverse of to_json, for documents OPOS wrote or has verified against their schema."""
        return cls(
            id=value["id"],
            kind=value["kind"],
            title=value["title"],
            reason=value["reason"],
            test=value["test"],
            inputs=tuple(value["inputs"]),
            every=value["every"],
            target=Target.from_json(value["target"]),
            window=Window.from_json(value["window"]),
        )

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
    oonirun: bool = False  # the service's OONI Run bridge is on: reviews say what does not cross it


@dataclass(frozen=True)
class Signer:
    """Who signed a commit: the principals of the allowed-signers line, and the key."""

    principal: str
    fingerprint: KeyFingerprint

    @property
    def person(self) -> str:
        """Who this is, for counting approvals: the line's first principal (two keys of one person count once)."""
        return self.principal.split(",")[0]
