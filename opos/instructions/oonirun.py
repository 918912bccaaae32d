"""OONI Run v2 answers derived from a feed's instructions: the link, the engine descriptor, the revisions. Pure.

The formats are those of OONI's backend (ooni/backend `ooniapi/services/oonirun/src/oonirun/routers/v2.py`:
OONIRunLink, OONIRunLinkNettest, OONIRunLinkEngineDescriptor, OONIRunLinkRevisions) and of the spec
(ooni/spec `backends/bk-005-ooni-run-v2.md`). An answer is a function of the instructions, the request and
the time only, so anyone holding the signed feed derives it again (`opos audit --oonirun`).

Only what every probe of a country and network may run crosses the bridge: `run` instructions in their window,
without a cap, a sample or a platform limit (OONI Run probes send neither a probe id nor a platform).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opos.model import PLATFORMS, Instruction

DEFAULT_LINK_ID = "10000"
DEFAULT_NAME = "OONI probe orchestration"
REVISIONS_LISTED = 100  # the newest revisions `GET …/revisions` lists
_BACKEND_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"  # ooniapi common/routers.py ISO_FORMAT_DATETIME
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s]+")
_COLOR = re.compile(r"#[0-9a-fA-F]{6}")


def backend_time(moment: dt.datetime) -> str:
    """A time as the backend writes it: `2026-12-04T16:21:16.000000Z`."""
    return moment.astimezone(dt.UTC).replace(microsecond=0).strftime(_BACKEND_TIME)  # as every OPOS time: seconds


@dataclass(frozen=True)
class LinkSettings:
    """The one link the bridge serves, as the operator describes it (OPOS_OONIRUN_*, OPOS_PUBLIC_URL)."""

    link_id: str
    author: str
    name: str = DEFAULT_NAME
    public_url: str | None = None
    color: str | None = None

    @classmethod
    def configured(
        cls, link_id: str | None, author: str | None, name: str | None = None, public_url: str | None = None,
        color: str | None = None,
    ) -> LinkSettings | None:  # fmt: skip
        """The settings, or None when the bridge is off (an empty link id). Raises ValueError naming the setting."""
        if link_id is None or link_id == "":
            return None
        if not (link_id.isascii() and link_id.isdigit() and len(link_id) <= 20):
            raise ValueError(f"OPOS_OONIRUN_LINK_ID {link_id!r} is not a string of digits (the default is "
                             f"{DEFAULT_LINK_ID}; set it empty to turn the OONI Run bridge off)")  # fmt: skip
        if not author:
            raise ValueError(f"the OONI Run bridge is on (link {link_id}) and needs OPOS_OONIRUN_AUTHOR, the public "
                             "e-mail address of whoever answers for the link; or set OPOS_OONIRUN_LINK_ID empty to "
                             "turn the bridge off")  # fmt: skip
        if not (_EMAIL.fullmatch(author) and len(author) <= 100):
            raise ValueError(f"OPOS_OONIRUN_AUTHOR {author!r} is not an e-mail address (at most 100 characters)")
        name = DEFAULT_NAME if name is None else name
        if not 2 <= len(name) <= 50:
            raise ValueError(f"OPOS_OONIRUN_NAME {name!r} must be 2 to 50 characters (OONI Run's limit)")
        if color and not _COLOR.fullmatch(color):
            raise ValueError(f"OPOS_OONIRUN_COLOR {color!r} is not a colour like #1a2b3c")
        return cls(link_id, author, name, public_url.rstrip("/") if public_url else None, color or None)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> LinkSettings | None:
        return cls.configured(environ.get("OPOS_OONIRUN_LINK_ID", DEFAULT_LINK_ID), environ.get("OPOS_OONIRUN_AUTHOR"),
                              environ.get("OPOS_OONIRUN_NAME"), environ.get("OPOS_PUBLIC_URL"),
                              environ.get("OPOS_OONIRUN_COLOR"))  # fmt: skip

    @property
    def description(self) -> str:
        log = f"{self.public_url}/log" if self.public_url else "the /log page of the service that serves this link"
        return (
            "The measurements OONI's team asks probes to run, derived from OPOS (the OONI Probe Orchestration "
            "System): every instruction is a signed commit in a public git ledger, and the answers of this link "
            f"follow from its signed feed alone. Read every instruction ever given, and why, at {log}."
        )


def not_bridged(instruction: Instruction) -> str | None:
    """Why an instruction is not sent to OONI Run probes; None when it is (in its window, to its target)."""
    target = instruction.target
    if instruction.kind != "run":
        return f"a {instruction.kind} instruction: OONI Run descriptors have no schedules"
    if target.max_probes is not None:
        return "max_probes: a claim needs a probe id, which OONI Run probes do not send"
    if target.sample is not None:
        return "sample: the sample is drawn by probe id, which OONI Run probes do not send"
    if target.platforms and set(target.platforms) != set(PLATFORMS):
        return "platforms: OONI Run probes do not say their platform"
    return None


def nettest(instruction: Instruction) -> dict[str, Any]:
    """One instruction as an OONIRunLinkNettest, with the spec's spellings the engine reads beside the app's."""
    return {
        "test_name": instruction.test,
        "inputs": list(instruction.inputs),
        "options": {},
        "is_background_run_enabled_default": True,
        "is_manual_run_enabled_default": False,
        "is_background_run_enabled": True,
        "is_manual_run_enabled": False,
    }


class Bridge:
    """The instructions of one feed that may cross, indexed by country: built once per feed, asked per request."""

    def __init__(self, instructions: Iterable[Instruction]) -> None:
        self._everywhere: list[tuple[int, Instruction]] = []
        self._by_country: dict[str, list[tuple[int, Instruction]]] = {}
        for order, instruction in enumerate(instructions):  # feed order: sorted by id
            if not_bridged(instruction) is not None:
                continue
            countries = instruction.target.countries
            if countries == ("*",):
                self._everywhere.append((order, instruction))
            for country in countries if countries != ("*",) else ():
                self._by_country.setdefault(country, []).append((order, instruction))

    def select(
        self, country: str | None, network: str | None, now: dt.datetime
    ) -> tuple[list[Instruction], dt.datetime | None]:
        """The instructions for a probe of `country` and `network` (None: unknown, only what takes every one), in
        feed order, and when that answer may change next (a window opens or closes; None: never)."""
        mine = self._by_country.get(country, []) if country else []
        candidates = sorted(self._everywhere + mine, key=lambda pair: pair[0])
        chosen: list[Instruction] = []
        changes: dt.datetime | None = None
        for _, instruction in candidates:
            networks = instruction.target.networks
            if networks and (network is None or network not in networks):
                continue
            window = instruction.window
            boundary = window.start if now < window.start else window.end if now < window.end else None
            if boundary is not None and (changes is None or boundary < changes):
                changes = boundary
            if window.contains(now):
                chosen.append(instruction)
        return chosen, changes


def link(
    settings: LinkSettings, bridge: Bridge, sequence: int, committed: dt.datetime, expires: dt.datetime,
    now: dt.datetime,
) -> tuple[dict[str, Any], dt.datetime | None]:  # fmt: skip
    """The OONIRunLink of a feed (the instructions for every probe), and when it may change next."""
    chosen, changes = bridge.select(None, None, now)
    document: dict[str, Any] = {
        "oonirun_link_id": settings.link_id,
        "name": settings.name,
        "short_description": "What OONI asks every probe to measure now, from a signed public ledger",
        "description": settings.description,
        "author": settings.author,
        "nettests": [nettest(instruction) for instruction in chosen],
        "date_created": backend_time(committed),
        "date_updated": backend_time(committed),
        "revision": str(sequence),
        "expiration_date": backend_time(max(expires, now)),
        "is_expired": False,
        "is_mine": False,
    }
    if settings.color:
        document["color"] = settings.color
    return document, changes


def engine_descriptor(
    bridge: Bridge, sequence: int, committed: dt.datetime, now: dt.datetime, country: str | None, network: str | None
) -> tuple[dict[str, Any], dt.datetime | None]:
    """The OONIRunLinkEngineDescriptor for a probe of `country` and `network`, and when it may change next."""
    chosen, changes = bridge.select(country, network, now)
    nettests = [nettest(instruction) for instruction in chosen]
    document = {"revision": str(sequence), "nettests": nettests, "date_created": backend_time(committed)}
    return document, changes


def revisions(sequences: Sequence[int]) -> dict[str, list[str]]:
    """OONIRunLinkRevisions: the newest REVISIONS_LISTED sequences, newest first."""
    newest = sorted(set(sequences), reverse=True)[:REVISIONS_LISTED]
    return {"revisions": [str(sequence) for sequence in newest]}


def derivable(document: Mapping[str, Any]) -> dict[str, Any]:
    """What of a link or engine descriptor follows from the feed alone (not the operator's words or the head's
    expiry): what an audit compares."""
    names = ("revision", "nettests", "date_created") + (("date_updated",) if "date_updated" in document else ())
    return {name: document.get(name) for name in names}


def to_bytes(document: Mapping[str, Any]) -> bytes:
    """An answer as the service sends it and a static mirror serves it: compact UTF-8 JSON."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
