"""What the probe trusts, in one object updated step by step: python-tuf's TrustedMetadataSet, in small. No I/O.

Each update checks bytes against what is already trusted and either advances the state or raises
`Rejected` (`SplitView` for a split view), leaving the state exactly as it was. The steps, in order:
the key document walked from the pinned root keys (`update_keys`), the saved cache (`restore`), a
head (`update_head`), its cosignatures when auditors are required (`update_cosignatures`), and the
feed the head names (`update_feed`), which makes it the accepted answer and advances the pin.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ed25519

from opos.errors import UntrustedDataError
from opos.probe.errors import Rejected
from opos.probe.verify import Pin, check_feed, check_head, verify_head
from opos.signing import cosignature, keydoc
from opos.signing.documents import Feed, Head


@dataclass(frozen=True)
class TrustAnchors:
    """What the operator pinned out of band: feed keys, or root keys (the key documents then name the feed keys
    and, when they name any, the auditors), and the auditors with how many of them must cosign each head."""

    keys: tuple[ed25519.Ed25519PublicKey, ...] = ()
    root_keys: tuple[keydoc.Key, ...] = ()
    auditors: tuple[ed25519.Ed25519PublicKey, ...] = ()
    auditors_required: int = 0


@dataclass(frozen=True)
class Verified:
    """A head and the feed it names, both verified, with the auditors' cosignatures when they are required."""

    head_bytes: bytes
    feed_bytes: bytes
    head: Head
    feed: Feed
    cosigned: bytes | None = None


class TrustedState:
    """The trust of one poll: its one `now`, the keys in force, the pin, and the head being checked."""

    def __init__(self, anchors: TrustAnchors, now: dt.datetime, clock_skew: dt.timedelta, pin: Pin | None) -> None:
        self.now, self.clock_skew = now, clock_skew
        self.feed_keys: tuple[ed25519.Ed25519PublicKey, ...] = () if anchors.root_keys else anchors.keys
        self.auditors, self.auditors_required = anchors.auditors, anchors.auditors_required
        self.pin = pin
        self.key_document: keydoc.KeyDocument | None = None
        self._head: tuple[bytes, Head] | None = None  # a head checked, its feed not yet
        self._cosigned: bytes | None = None

    def update_keys(self, document: keydoc.KeyDocument | None) -> bool:
        """Take the feed keys (and the auditors, when it names any) of the trusted key document; whether it is
        current. An expired one still checks the cache; no new head is taken with it."""
        self.key_document = document
        self.feed_keys = tuple(document.feed_public_keys()) if document is not None else ()
        if document is not None and document.auditors:
            self.auditors = tuple(document.auditor_public_keys())
            self.auditors_required = document.auditors_required
        return document is not None and not document.expired(self.now, self.clock_skew)

    def restore(self, head_bytes: bytes, feed_bytes: bytes, cosigned: bytes | None) -> Verified:
        """The saved answer, verified again (except expiry: an old feed is still a good fallback); it raises
        the pin to its sequence."""
        head = verify_head(head_bytes, self.feed_keys)
        feed = check_feed(feed_bytes, head, self.feed_keys)
        if self.auditors_required:
            if cosigned is None:
                raise Rejected("no auditor cosignatures are saved with it, and this probe requires them")
            self._check_cosigned(cosigned, head)
        if self.pin is None or head.sequence > self.pin.sequence:
            self.pin = Pin(head.sequence, head.commit)
        return Verified(head_bytes, feed_bytes, head, feed, cosigned)

    def update_head(self, data: bytes) -> Head:
        """A head signed by a key in force, not expired, neither a rollback nor a split view of the pin."""
        head = check_head(data, self.feed_keys, self.now, self.clock_skew, self.pin)
        self._head, self._cosigned = (data, head), None
        return head

    def update_cosignatures(self, data: bytes) -> None:
        """Enough distinct pinned auditors cosigned exactly the head's commit, sequence and feed."""
        self._check_cosigned(data, self._pending()[1])
        self._cosigned = data

    def update_feed(self, data: bytes) -> Verified:
        """The feed the head names: the answer is accepted, and the pin moves to it."""
        head_bytes, head = self._pending()
        if self.auditors_required and self._cosigned is None:
            raise Rejected("the head's cosignatures must be checked before its feed")
        feed = check_feed(data, head, self.feed_keys)
        self.pin, self._head = Pin(head.sequence, head.commit), None
        return Verified(head_bytes, data, head, feed, self._cosigned)

    def confirm(self, cache: Verified) -> Verified:
        """The head being checked names the cached commit and feed: the cache (verified in `restore`) stands,
        with no second check of its feed; the pin moves to it."""
        head_bytes, head = self._pending()
        if (head.commit, head.feed_sha256) != (cache.head.commit, cache.head.feed_sha256):
            raise Rejected("the head names another commit or feed than the cache")
        if self.auditors_required and self._cosigned is None:
            raise Rejected("the head's cosignatures must be checked before its feed")
        self.pin, self._head = Pin(head.sequence, head.commit), None
        return Verified(head_bytes, cache.feed_bytes, head, cache.feed, self._cosigned)

    def _pending(self) -> tuple[bytes, Head]:
        if self._head is None:
            raise Rejected("no head is being checked")
        return self._head

    def _check_cosigned(self, data: bytes, head: Head) -> None:
        statement = cosignature.Statement(head.commit, head.sequence, head.feed_sha256)
        try:
            cosignature.require(data, statement, self.auditors, self.auditors_required)
        except UntrustedDataError as err:
            raise Rejected(f"cosignatures: {err}") from None
