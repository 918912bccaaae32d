"""Audit the OONI Run bridge (`opos audit --oonirun`): its answer must follow from the signed feed it names.

The bridge's link or engine descriptor names its feed (X-OPOS-Commit, X-OPOS-Sequence); that feed is fetched
from a mirror, verified with the pinned feed keys, and the answer derived from it again. What the operator
words (name, description, author) and the head's expiry are not the feed's, so the comparison is of what is:
the revision, the nettests and the dates. A window that opens or closes while the answer travels is allowed
for: the answer is also derived at the time the bridge's Date header gives.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from opos.audit.auditing import difference
from opos.audit.errors import AuditRefused
from opos.errors import FetchFailed, UntrustedDataError
from opos.instructions import oonirun
from opos.instructions.oonirun_meta import Meta, parse_meta
from opos.publish.bridge import bridged_of
from opos.signing.documents import Feed, verify_envelope
from opos.transport import Fetched, Fetcher, Limits, Mirror

LINKS = "/api/v2/oonirun/links/"
ENGINE = "/engine-descriptor/"
# what the engine sends when nothing else is said (ooni/probe-cli internal/oonirun/v2.go), for an unknown probe
DEFAULT_META = {"run_type": "manual", "is_charging": True, "probe_cc": "ZZ", "probe_asn": "AS0", "network_type": "wifi",
                "website_category_codes": []}  # fmt: skip


@dataclass(frozen=True)
class Asked:
    """What the audit asks the bridge: where, how, and the base to fetch feeds from."""

    mirror: Mirror
    path: str
    revision: str | None  # the engine descriptor's `latest` or number; None for the link
    meta: Meta | None
    body: bytes | None
    feeds: Mirror

    @classmethod
    def parse(cls, url: str, meta: str | None, base: str | None) -> Asked:
        """Raises ValueError saying what is wrong with the URL, the metadata or the base."""
        origin, found, rest = url.partition(LINKS)
        if not found or not rest:
            raise ValueError(f"{url} is not an OONI Run link or engine descriptor URL (…{LINKS}<id>[{ENGINE}<rev>])")
        mirror = Mirror.parse(origin or url)
        feeds = Mirror.parse(base) if base else mirror
        if ENGINE not in rest:
            if meta is not None:
                raise ValueError("--meta is for an engine descriptor URL; a link is fetched with GET")
            return cls(mirror, LINKS.lstrip("/") + rest, None, None, None, feeds)
        revision = rest.rsplit("/", 1)[-1]
        body = (meta if meta is not None else json.dumps(DEFAULT_META)).encode()
        try:
            parsed = parse_meta(body)
        except UntrustedDataError as err:
            raise ValueError(f"--meta: {err}") from None
        return cls(mirror, LINKS.lstrip("/") + rest, revision, parsed, body, feeds)


@dataclass(frozen=True)
class BridgeAudit:
    commit: str
    sequence: int
    difference: str  # "" when the answer is what the feed says


def audit(asked: Asked, trusted: Sequence[ed25519.Ed25519PublicKey], fetcher: Fetcher) -> BridgeAudit:
    """Fetch the answer and its feed and compare. Raises FetchFailed (nothing to judge: exit 2) or AuditRefused
    (the answer cannot be what it claims: exit 1)."""
    method = "GET" if asked.body is None else "POST"
    answer = fetcher.request(method, asked.mirror, asked.path, asked.body, Limits().feed_bytes)
    if answer.status != 200:
        raise FetchFailed(f"HTTP {answer.status} for {asked.mirror.url}/{asked.path}: {answer.body[:300]!r}")
    try:
        document = json.loads(answer.body)
    except (ValueError, RecursionError) as err:
        raise AuditRefused(f"the bridge's answer is not JSON: {err}") from None
    commit, sequence = answer.headers.get("x-opos-commit", ""), answer.headers.get("x-opos-sequence", "")
    if not isinstance(document, dict) or len(commit) != 40 or not sequence.isdigit():
        raise AuditRefused("the answer names no signed feed (X-OPOS-Commit and X-OPOS-Sequence): it cannot be checked")
    data = fetcher.get(asked.feeds, f"v1/feed/{commit}.json", Limits().feed_bytes).body
    try:
        feed = verify_envelope(data, trusted).document
    except UntrustedDataError as err:
        raise AuditRefused(f"the feed of {commit} at {asked.feeds}: {err}") from None
    if not isinstance(feed, Feed) or feed.commit != commit or str(feed.sequence) != sequence:
        raise AuditRefused(f"{asked.feeds}/v1/feed/{commit}.json is not the feed of {commit} at sequence {sequence}")
    if asked.revision not in (None, "latest") and asked.revision != sequence:
        raise AuditRefused(f"revision {asked.revision} was asked for, and the answer is of sequence {sequence}")
    return BridgeAudit(commit, feed.sequence, _compare(asked, feed, document, _moments(answer)))


def _moments(answer: Fetched) -> list[dt.datetime]:
    """Now, and when the bridge says it answered."""
    moments = [dt.datetime.now(dt.UTC)]
    with contextlib.suppress(KeyError, TypeError, ValueError):
        moments.append(email.utils.parsedate_to_datetime(answer.headers["date"]).astimezone(dt.UTC))
    return moments


def _compare(asked: Asked, feed: Feed, document: dict[str, Any], moments: list[dt.datetime]) -> str:
    bridge = bridged_of(feed).bridge
    country, network = (asked.meta.country, asked.meta.network) if asked.meta else (None, None)
    seen = oonirun.derivable(document)
    derived: dict[str, Any] = {}
    for moment in moments:
        derived, _ = oonirun.engine_descriptor(bridge, feed.sequence, feed.committed, moment, country, network)
        if asked.meta is None:
            derived["date_updated"] = derived["date_created"]
        if derived == seen:
            return ""
    return difference(oonirun.to_bytes(derived), oonirun.to_bytes(seen), "derived from the signed feed",
                      "the bridge's answer")  # fmt: skip
