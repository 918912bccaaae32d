"""The head and the feed as typed values, built once where their envelope is verified.

A `Head` names the newest commit, its sequence and the SHA-256 of its feed envelope, and is valid
for a while; a `Feed` holds every instruction at that commit, each with the commit that last
changed it and who signed that change. `to_json` gives the payload exactly as
schemas/head.schema.json and schemas/feed.schema.json describe it.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric import ed25519

from opos.errors import EnvelopeInvalid
from opos.instructions import resources
from opos.lru import LRU
from opos.model import FEED_PAYLOAD_TYPE, HEAD_PAYLOAD_TYPE, CommitHash, Instruction, format_time, parse_time
from opos.signing import dsse, feedread, keys

Kind = Literal["feed", "head"]
PAYLOAD_TYPES: dict[Kind, str] = {"feed": FEED_PAYLOAD_TYPE, "head": HEAD_PAYLOAD_TYPE}


@dataclass(frozen=True)
class FeedEntry:
    """An instruction as it stands at a commit, with the commit that last changed it and its signer."""

    instruction: Instruction
    revision: CommitHash
    signer: str | None
    approvers: tuple[str, ...] = ()  # the other staff whose signatures landed it (policy.yaml's review)

    @property
    def id(self) -> str:
        return self.instruction.id

    def to_json(self) -> dict[str, Any]:
        entry = {**self.instruction.to_json(), "revision": self.revision, "signer": self.signer}
        if self.approvers:  # written only when there are any: a feed without them is byte for byte as before
            entry["approvers"] = list(self.approvers)
        return entry

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> FeedEntry:
        approvers = tuple(value.get("approvers", ()))
        return cls(Instruction.from_json(dict(value)), CommitHash(value["revision"]), value["signer"], approvers)


@dataclass(frozen=True)
class Feed:
    commit: CommitHash
    sequence: int
    committed: dt.datetime
    entries: tuple[FeedEntry, ...]  # sorted by instruction id

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "opos.feed/v1",
            "commit": self.commit,
            "sequence": self.sequence,
            "committed": format_time(self.committed),
            "instructions": [entry.to_json() for entry in self.entries],
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Feed:
        entries = tuple(FeedEntry.from_json(item) for item in value["instructions"])
        return cls(CommitHash(value["commit"]), value["sequence"], parse_time(value["committed"]), entries)

    @functools.cached_property
    def _by_id(self) -> dict[str, FeedEntry]:
        return {entry.id: entry for entry in self.entries}

    def entry(self, ident: str) -> FeedEntry | None:
        return self._by_id.get(ident)


@dataclass(frozen=True)
class Head:
    commit: CommitHash
    sequence: int
    feed_sha256: str
    issued: dt.datetime
    expires: dt.datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "opos.head/v1",
            "commit": self.commit,
            "sequence": self.sequence,
            "feed_sha256": self.feed_sha256,
            "issued": format_time(self.issued),
            "expires": format_time(self.expires),
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Head:
        return cls(
            CommitHash(value["commit"]),
            value["sequence"],
            value["feed_sha256"],
            parse_time(value["issued"]),
            parse_time(value["expires"]),
        )

    def expired(self, now: dt.datetime, clock_skew: dt.timedelta = dt.timedelta(0)) -> bool:
        """Past its expiry even for a clock that is `clock_skew` behind."""
        return self.expires + clock_skew < now

    def renewal_due(self, now: dt.datetime) -> bool:
        """At half its life: re-issued then, so a healthy publisher never serves an expired head."""
        return now >= self.issued + (self.expires - self.issued) / 2


@dataclass(frozen=True)
class VerifiedDocument:
    kind: Kind
    keyid: str  # the fingerprint of the trusted key whose signature verified
    document: Head | Feed
    payload: bytes  # the signed payload, byte for byte


_verified: LRU[tuple[bytes, tuple[str, ...]], VerifiedDocument] = LRU(4)


def verify_envelope(data: bytes, trusted: Sequence[ed25519.Ed25519PublicKey]) -> VerifiedDocument:
    """Check a feed or head envelope: signature by a trusted key, payload type, schema.

    Raises EnvelopeInvalid or SignatureInvalid, each saying why. The same bytes checked against
    the same keys give the same answer, so a probe that keeps polling (`--watch`) checks its
    cached feed once, not at every poll: the last few answers are kept by the bytes' digest.
    """
    remembered = (hashlib.sha256(data).digest(), tuple(keys.key_id(k) for k in trusted))
    known = _verified.get(remembered)
    if known is not None:
        return known
    verified = _verify_envelope(data, trusted)
    _verified.put(remembered, verified)
    return verified


def read_unverified(data: bytes) -> VerifiedDocument:
    """A feed or head envelope checked for form only (payload type, schema), its signature NOT checked (keyid "").

    For an auditor that follows the root keys: which feed key must have signed a feed is known only
    from the key documents of the ledger at the feed's commit; verify_envelope follows with those.
    """
    return _verify_envelope(data, None)


def forget_verified() -> None:
    """Forget the remembered verifications: the next check of any envelope is made in full."""
    _verified.clear()


def _verify_envelope(data: bytes, trusted: Sequence[ed25519.Ed25519PublicKey] | None) -> VerifiedDocument:
    envelope = dsse.parse(data)
    kinds: dict[str, Kind] = {v: k for k, v in PAYLOAD_TYPES.items()}
    kind = kinds.get(envelope.payload_type)
    if kind is None:
        expected = " or ".join(PAYLOAD_TYPES.values())
        raise EnvelopeInvalid(f"payload type {envelope.payload_type!r} is not an OPOS document ({expected})")
    keyid = (
        "" if trusted is None else dsse.verify(envelope, [(keys.key_id(k), k) for k in trusted], envelope.payload_type)
    )
    payload = dsse.load_json(envelope.payload, "the signed payload")
    parts = feedread.read_feed(payload) if kind == "feed" else None  # a new feed: checked as it is built
    if parts is not None:
        commit, sequence, committed, entries = parts
        feed = Feed(commit, sequence, committed, tuple(FeedEntry(*entry) for entry in entries))
        return VerifiedDocument(kind, keyid, feed, envelope.payload)
    try:  # quick; jsonschema only to say what is wrong. Fields a later version adds are ignored.
        problem = resources.unreadable(kind, payload)
    except RecursionError:
        raise EnvelopeInvalid(f"the {kind} payload is nested too deeply") from None
    if problem is not None:
        raise EnvelopeInvalid(f"the {kind} payload: {problem}")
    document: Head | Feed = Head.from_json(payload) if kind == "head" else Feed.from_json(payload)
    return VerifiedDocument(kind, keyid, document, envelope.payload)


def read_own_head(data: bytes) -> Head:
    """A head OPOS itself wrote (the site's current head), read without verifying its signature.

    Only for deciding what to publish next; anything served to probes is verified by them. Raises
    EnvelopeInvalid when the file is not such a head.
    """
    try:
        return Head.from_json(dsse.load_json(dsse.parse(data).payload, "the head"))
    except (ValueError, KeyError, TypeError) as err:
        raise EnvelopeInvalid(f"not a head written by OPOS: {err}") from None


def read_own_feed(data: bytes) -> Feed:
    """A feed OPOS itself wrote, read without verifying its signature (see read_own_head)."""
    try:
        return Feed.from_json(dsse.load_json(dsse.parse(data).payload, "the feed"))
    except (ValueError, KeyError, TypeError) as err:
        raise EnvelopeInvalid(f"not a feed written by OPOS: {err}") from None
