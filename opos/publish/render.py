"""Feed and head payloads: verified values in, canonical bytes and signed envelopes out."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable

from cryptography.hazmat.primitives.asymmetric import ed25519

from opos.model import CommitHash
from opos.signing import dsse, keys
from opos.signing.documents import PAYLOAD_TYPES, Feed, FeedEntry, Head, Kind

DEFAULT_HEAD_TTL = dt.timedelta(hours=24)


def feed(commit: CommitHash, sequence: int, committed: dt.datetime, entries: Iterable[FeedEntry]) -> Feed:
    """The feed of a commit: every instruction, sorted by id."""
    ordered = tuple(sorted(entries, key=lambda e: e.id))
    return Feed(commit, sequence, committed.replace(microsecond=0), ordered)


def feed_payload(commit: CommitHash, sequence: int, committed: dt.datetime, entries: Iterable[FeedEntry]) -> bytes:
    """The canonical feed payload: every instruction, sorted by id."""
    return dsse.canonical_json(feed(commit, sequence, committed, entries).to_json())


def head_payload(
    commit: CommitHash, sequence: int, feed_envelope: bytes, issued: dt.datetime, ttl: dt.timedelta = DEFAULT_HEAD_TTL
) -> bytes:
    digest = hashlib.sha256(feed_envelope).hexdigest()
    return dsse.canonical_json(Head(commit, sequence, digest, issued, issued + ttl).to_json())


def sign(kind: Kind, payload: bytes, key: ed25519.Ed25519PrivateKey) -> bytes:
    """A DSSE envelope ("feed" or "head"), serialised canonically."""
    return dsse.sign(PAYLOAD_TYPES[kind], payload, key, keys.key_id(key.public_key())).to_bytes()
