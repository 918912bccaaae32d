"""The client's checks, bytes in and verified documents out, no I/O (python-tuf's trusted set, in small)."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ed25519

from opos.model import format_time
from opos.probe.errors import Rejected, SplitView
from opos.signing.documents import Feed, Head, verify_envelope


@dataclass(frozen=True)
class Pin:
    """The highest sequence ever accepted, and its commit: a rollback below it is refused."""

    sequence: int
    commit: str


def verify_head(data: bytes, keys: Sequence[ed25519.Ed25519PublicKey]) -> Head:
    """A head signed by a pinned key and well-formed; nothing said yet about its age or sequence."""
    document = verify_envelope(data, keys)
    if not isinstance(document.document, Head):
        raise Rejected(f"a {document.kind} where the head was expected")
    return document.document


def check_head(
    data: bytes, keys: Sequence[ed25519.Ed25519PublicKey], now: dt.datetime, skew: dt.timedelta, pin: Pin | None
) -> Head:
    """A head that is signed by a pinned key, well-formed, not expired, and not a rollback."""
    head = verify_head(data, keys)
    if head.expired(now, skew):
        raise Rejected(f"the head expired at {format_time(head.expires)} (a frozen or stale mirror)")
    if pin is not None:
        if head.sequence < pin.sequence:
            raise Rejected(f"rollback: sequence {head.sequence} is older than {pin.sequence}, already seen")
        if head.sequence == pin.sequence and head.commit != pin.commit:
            raise SplitView(
                f"split view: sequence {pin.sequence} is {head.commit} here but {pin.commit} was accepted before"
            )
    return head


def check_feed(data: bytes, head: Head, keys: Sequence[ed25519.Ed25519PublicKey]) -> Feed:
    """The feed the head names: its exact bytes, a valid signature, the same commit and sequence."""
    if hashlib.sha256(data).hexdigest() != head.feed_sha256:
        raise Rejected("the feed does not match the head's feed_sha256 (a feed of another commit, or altered)")
    document = verify_envelope(data, keys)
    if not isinstance(document.document, Feed):
        raise Rejected(f"a {document.kind} where the feed was expected")
    feed = document.document
    if (feed.commit, feed.sequence) != (head.commit, head.sequence):
        raise Rejected(f"the feed is for {feed.commit} ({feed.sequence}), the head names {head.commit}")
    return feed
