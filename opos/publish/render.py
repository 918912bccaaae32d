"""Feed and head payloads: verified values in, canonical bytes and signed envelopes out."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from collections.abc import Iterable

from cryptography.hazmat.primitives.asymmetric import ed25519

from opos.lru import Serialised
from opos.model import CommitHash, format_time
from opos.signing import dsse, keys
from opos.signing.documents import PAYLOAD_TYPES, Feed, FeedEntry, Head, Kind

DEFAULT_HEAD_TTL = dt.timedelta(hours=24)


def feed(commit: CommitHash, sequence: int, committed: dt.datetime, entries: Iterable[FeedEntry]) -> Feed:
    """The feed of a commit: every instruction, sorted by id."""
    ordered = tuple(sorted(entries, key=lambda e: e.id))
    return Feed(commit, sequence, committed.replace(microsecond=0), ordered)


def feed_payload(commit: CommitHash, sequence: int, committed: dt.datetime, entries: Iterable[FeedEntry]) -> bytes:
    """The canonical feed payload: every instruction, sorted by id."""
    return canonical_feed(feed(commit, sequence, committed, entries))


def canonical_feed(document: Feed) -> bytes:
    """`dsse.canonical_json(document.to_json())`, byte for byte, each entry serialised once per process.

    The service renders a feed at every new commit, and nearly all its entries are those of the last one
    (the same Instruction objects, from the verdict memo): only what changed is serialised again.
    """
    _entries.trim(len(document.entries))
    parts = [
        _entries.get((id(entry.instruction), entry.revision, entry.signer, entry.approvers), entry.instruction,
                     functools.partial(_canonical_entry, entry))
        for entry in document.entries
    ]  # fmt: skip
    head = dsse.canonical_json({"commit": document.commit, "committed": format_time(document.committed)})
    tail = dsse.canonical_json({"sequence": document.sequence, "type": "opos.feed/v1"})
    return head[:-1] + b',"instructions":[' + b",".join(parts) + b"]," + tail[1:]


def _canonical_entry(entry: FeedEntry) -> bytes:
    return dsse.canonical_json(entry.to_json())


# serialised entries by (the instruction's identity, revision, signer, approvers)
_entries: Serialised[tuple[int, str, str | None, tuple[str, ...]], bytes] = Serialised()


def head_payload(
    commit: CommitHash, sequence: int, feed_envelope: bytes, issued: dt.datetime, ttl: dt.timedelta = DEFAULT_HEAD_TTL
) -> bytes:
    digest = hashlib.sha256(feed_envelope).hexdigest()
    return dsse.canonical_json(Head(commit, sequence, digest, issued, issued + ttl).to_json())


def sign(kind: Kind, payload: bytes, key: ed25519.Ed25519PrivateKey) -> bytes:
    """A DSSE envelope ("feed" or "head"), serialised canonically."""
    return dsse.sign(PAYLOAD_TYPES[kind], payload, key, keys.key_id(key.public_key())).to_bytes()
