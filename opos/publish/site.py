"""From a ledger repository to the static mirror tree: verify, render, publish atomically.

    <out>/v1/feed/<commit>.json   the feed at that commit (immutable)
    <out>/v1/feed.json            the same bytes for the newest rendered commit
    <out>/v1/cosignatures/<commit>.json   with auditors: their cosignatures, before the head names it
    <out>/v1/keys/<N>.json, <out>/v1/keys.json   the ledger's key documents (keychain), before the head
    <out>/v1/head.json            names the newest commit; written last

The CLI (`opos render`) and the service both publish through here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from opos.atomic import write_atomically
from opos.errors import EnvelopeInvalid, UntrustedDataError
from opos.eventlog.events import approvers_besides
from opos.eventlog.logindex import LogIndex, LogQuery, log_json, select
from opos.instructions.oonirun import LinkSettings
from opos.model import CommitHash
from opos.publish import bridge, keychain, render
from opos.publish.errors import CosignaturesMissing
from opos.publish.stages import Stages
from opos.signing import cosignature, keydoc
from opos.signing.documents import Feed, FeedEntry, Head, read_own_head, verify_envelope
from opos.trust import keyhistory, revisions
from opos.trust.verification import Verification

# (statement, feed envelope, pinned auditor keys, how many must cosign) -> the combined cosignatures
Cosigner = Callable[[cosignature.Statement, bytes, Sequence[ed25519.Ed25519PublicKey], int], bytes]


@dataclass(frozen=True)
class Auditors:
    """Who must cosign a new head before it is published, as configured (OPOS_AUDITORS…, `render --auditor`).

    With key documents in the ledger, the newest one's auditors and count win over `keys` and
    `required`: the publisher counts exactly as probes that follow the documents do.
    """

    cosigner: Cosigner
    keys: tuple[ed25519.Ed25519PublicKey, ...] = ()
    required: int = 0

    def pinned(self, key_documents: list[bytes]) -> tuple[tuple[ed25519.Ed25519PublicKey, ...], int]:
        """The auditor keys and count that apply to a commit with these key documents."""
        if not key_documents:
            return self.keys, self.required
        newest = keydoc.read(key_documents[-1])[1]
        return tuple(newest.auditor_public_keys()), newest.auditors_required


def cosignature_path(out: Path, commit: str) -> Path:
    return out / "v1" / "cosignatures" / f"{commit}.json"


def feed_at(verification: Verification, commit: CommitHash, since: CommitHash | None = None) -> bytes:
    """The canonical feed payload of a commit that may be followed (from `since`, the commit accepted before).
    Raises HistoryRejected, or LedgerInvalid for invalid files."""
    return render.canonical_feed(feed_document(verification, commit, since))


def feed_document(verification: Verification, commit: CommitHash, since: CommitHash | None = None) -> Feed:
    """The feed of a commit that may be followed, as a value (feed_at's payload is its canonical JSON)."""
    ledger = verification.ledger
    followable = verification.require(commit, since)
    accepted, checked = followable.accepted, followable.checked
    info = ledger.commit(commit)
    by_name = {f"{i.id}.yaml": i for i in checked.instructions.values()}
    memo_path = ledger.state.revisions_file(verification.scope)
    last = revisions.last_revisions(ledger, commit, by_name, _load_memo(memo_path))
    write_atomically(memo_path, json.dumps({commit: last}).encode())
    landings_path = ledger.state.landings_file(verification.scope)
    landed = revisions.landing_steps(ledger, commit, by_name, verification.trust_root, _load_memo(landings_path))
    write_atomically(landings_path, json.dumps({commit: landed}).encode())
    cache = verification.verifier.cache
    entries = []
    for name, instruction in by_name.items():
        changed_by = cache.get(last[name])
        signer = changed_by.signer.principal if changed_by is not None and changed_by.signer is not None else None
        step = cache.get(landed[name])
        approvers = approvers_besides(step.approvers, signer) if step is not None else ()
        entries.append(FeedEntry(instruction, last[name], signer, approvers))
    committed = dt.datetime.fromtimestamp(info.committed, dt.UTC)
    return render.feed(commit, accepted.sequence, committed, entries)


def _load_memo(path: Path) -> dict[CommitHash, dict[str, CommitHash]]:
    try:
        memo = json.loads(path.read_bytes())
        return memo if isinstance(memo, dict) else {}
    except (OSError, ValueError):
        return {}


@dataclass(frozen=True)
class Published:
    commit: CommitHash
    sequence: int
    feed_path: Path
    head_updated: bool
    note: str
    link_changes: dt.datetime | None = None  # when the OONI Run link must be written again (a window)


def published_head(out: Path) -> Head | None:
    """The site's current head (our own output, read only to decide what to publish next), or None."""
    try:
        return read_own_head((out / "v1" / "head.json").read_bytes())
    except (OSError, EnvelopeInvalid):
        return None


def published_keys_expiry(out: Path) -> dt.datetime | None:
    """When the site's key document (our own output) expires; None when the ledger has none."""
    try:
        return keydoc.read((out / "v1" / "keys.json").read_bytes())[1].expires
    except (OSError, UntrustedDataError):
        return None


KEYS_WARNING = dt.timedelta(days=30)  # Firefox's 2019 add-on outage: a certificate expired with nobody watching


def keys_expiry_warning(out: Path, now: dt.datetime) -> str | None:
    """What to tell operators when the key document expires within 30 days."""
    expires = published_keys_expiry(out)
    if expires is None or expires - now >= KEYS_WARNING:
        return None
    return (f"the key document expires at {expires:%Y-%m-%dT%H:%M:%SZ} ({max((expires - now).days, 0)} days): sign "
            "the next version offline with `opos keys rotate` (docs/security.md, Keys)")  # fmt: skip


def published_commit(out: Path) -> CommitHash | None:
    """The commit named by the site's current head, or None."""
    head = published_head(out)
    return head.commit if head is not None else None


def pin(
    verification: Verification,
    commit: CommitHash,
    key: ed25519.Ed25519PrivateKey,
    out: Path,
    since: CommitHash | None = None,
) -> tuple[Path, Feed, bytes]:
    """Write `out/v1/feed/<commit>.json` for a commit that may be followed: the feed pinned to that commit."""
    feed = feed_document(verification, commit, since)
    envelope = render.sign("feed", render.canonical_feed(feed), key)
    feed_path = out / "v1" / "feed" / f"{commit}.json"
    write_atomically(feed_path, envelope)
    return feed_path, feed, envelope


def write_log(verification: Verification, commit: CommitHash, out: Path, now: dt.datetime) -> None:
    """The whole event log as v1/log.json, so that a static mirror publishes it too."""
    index = LogIndex.for_verification(verification)
    index.update(verification, commit)
    events, _ = select(index.events(), now, LogQuery(limit=10**9))
    write_atomically(out / "v1" / "log.json", log_json(events))


def publish(
    verification: Verification,
    commit: CommitHash,
    key: ed25519.Ed25519PrivateKey,
    out: Path,
    now: dt.datetime,
    head_ttl: dt.timedelta = render.DEFAULT_HEAD_TTL,
    auditors: Auditors | None = None,
    oonirun: LinkSettings | None = None,
    stages: Stages | None = None,
) -> Published:
    """Render `commit` into `out`: feed files first, the head last, each written atomically.

    With `auditors`, the cosignatures of a new commit are written after its pinned feed and before
    anything names it; when too few distinct pinned auditors cosign, it raises and nothing else changes.
    With `oonirun`, the OONI Run bridge's files are written too; `stages` learns when each stage ends.
    A commit on the published head's first-parent chain (older) only adds its pinned feed file; the
    served one is republished; any other must be followable from the published head, or it is refused
    before anything is written."""
    current = published_commit(out)
    if current is not None and current != commit and verification.verifier.on_chain(current, commit):
        feed_path, feed, _ = pin(verification, commit, key, out)
        if oonirun is not None:
            bridge.record(out, feed)
        return Published(commit, feed.sequence, feed_path, False, f"older than the published head {current}")
    since = current if current != commit else None
    stages = stages or Stages()
    if current == commit and _republishable(out, commit, key, auditors is not None):
        return _republish(verification, commit, key, out, now, head_ttl, oonirun, stages)
    verification.require(commit, since)  # refused before anything is written
    key_documents = keyhistory.at(verification.ledger, commit)
    keychain.require_listed(key_documents, key.public_key())
    _require_auditors_asked(key_documents, auditors is not None)
    stages.mark("verify")
    feed_path, feed, envelope = pin(verification, commit, key, out, since)
    stages.mark("feed")
    pinned, required = auditors.pinned(key_documents) if auditors is not None else ((), 0)
    if auditors is not None and required > 0:  # raises when too few auditors cosigned: the previous head stays
        statement = cosignature.Statement(commit, feed.sequence, hashlib.sha256(envelope).hexdigest())
        write_atomically(cosignature_path(out, commit), auditors.cosigner(statement, envelope, pinned, required))
        stages.mark("cosign")
    keychain.publish(key_documents, out)  # before the head: it may be signed by a key only they name
    write_atomically(out / "v1" / "feed.json", envelope)
    write_log(verification, commit, out, now)
    stages.mark("log")
    changes = _bridge_files(out, oonirun, feed, now, head_ttl)
    head = render.sign("head", render.head_payload(commit, feed.sequence, envelope, now, head_ttl), key)
    write_atomically(out / "v1" / "head.json", head)
    stages.mark("head")
    return Published(commit, feed.sequence, feed_path, True, "published as the head", changes)


def _republishable(out: Path, commit: CommitHash, key: ed25519.Ed25519PrivateKey, cosigned: bool) -> bool:
    """Whether the site serves `commit` already under `key`, with its pinned feed (and cosignatures, when asked)."""
    try:
        verified = verify_envelope((out / "v1" / "head.json").read_bytes(), [key.public_key()])
    except (OSError, UntrustedDataError):
        return False
    head = verified.document
    return (isinstance(head, Head) and head.commit == commit and (out / "v1" / "feed" / f"{commit}.json").exists()
            and (not cosigned or cosignature_path(out, commit).exists()))  # fmt: skip


def _republish(
    verification: Verification, commit: CommitHash, key: ed25519.Ed25519PrivateKey, out: Path, now: dt.datetime,
    head_ttl: dt.timedelta, oonirun: LinkSettings | None, stages: Stages,
) -> Published:  # fmt: skip
    """The served commit again (a scheduled render, a head due for renewal): its feed was published and its files
    judged when it was, so the log and the OONI Run link are brought up to now and the head is issued again."""
    feed_path = out / "v1" / "feed" / f"{commit}.json"
    write_log(verification, commit, out, now)
    stages.mark("log")
    head = renew_head(key, out, now, head_ttl)
    stages.mark("head")
    sequence = head.sequence if head is not None else 0
    changes = refresh_link(out, oonirun, now) if oonirun is not None else None
    return Published(commit, sequence, feed_path, True, "published as the head (renewed; its feed was already)",
                     changes)  # fmt: skip


def _bridge_files(
    out: Path, oonirun: LinkSettings | None, feed: Feed, now: dt.datetime, head_ttl: dt.timedelta
) -> dt.datetime | None:
    """With the OONI Run bridge on, its files for a new head; when its link must be written again."""
    if oonirun is None:
        return None
    bridge.record(out, feed)
    return bridge.write_link(out, oonirun, bridge.bridged_of(feed), now + head_ttl, now)


def _require_auditors_asked(key_documents: list[bytes], asked: bool) -> None:
    """Without auditors to ask, refuse a commit whose key document asks for cosignatures: probes would refuse it."""
    if asked or not key_documents:
        return
    newest = keydoc.read(key_documents[-1])[1]
    if newest.auditors_required > 0:
        raise CosignaturesMissing(
            f"the key document (version {newest.version}) requires {newest.auditors_required} auditors' "
            "cosignatures, and no auditor was asked: probes that pin the root keys would refuse this head. Pass "
            "--auditor URL (and --auditor-key) to opos render; set OPOS_AUDITORS and OPOS_AUDITORS_REQUIRED for "
            "the service",
            alarms=(),
        )


def renew_head(
    key: ed25519.Ed25519PrivateKey, out: Path, now: dt.datetime, head_ttl: dt.timedelta = render.DEFAULT_HEAD_TTL,
    oonirun: LinkSettings | None = None,
) -> Head | None:  # fmt: skip
    """Re-issue the published head (same commit, same feed) with a new expiry; None when nothing is published.

    Needs no repository: whatever the branch does (rejected, rewritten, unreachable), the last
    verified commit stays served with a head that has not expired.
    """
    head = published_head(out)
    if head is None:
        return None
    envelope = (out / "v1" / "feed" / f"{head.commit}.json").read_bytes()
    bridged = bridge.load_bridged(out, head.commit) if oonirun is not None else None
    if oonirun is not None and bridged is not None:  # the link's expiry follows the head's
        bridge.write_link(out, oonirun, bridged, now + head_ttl, now)
    data = render.sign("head", render.head_payload(head.commit, head.sequence, envelope, now, head_ttl), key)
    write_atomically(out / "v1" / "head.json", data)
    return read_own_head(data)


def refresh_link(out: Path, settings: LinkSettings, now: dt.datetime) -> dt.datetime | None:
    """Write the OONI Run link again for the served head and feed (a window opened or closed); when it changes next."""
    head = published_head(out)
    bridged = bridge.load_bridged(out, head.commit) if head is not None else None
    if head is None or bridged is None:
        return None
    return bridge.write_link(out, settings, bridged, head.expires, now)


def prune_feeds(out: Path, keep: int) -> list[Path]:
    """Remove all but the `keep` most recently written pinned feeds; never the one the head names.

    Probes only ask for the feed of the head they accepted; older pinned feeds are kept for
    auditors and caches, for as long as the retention says. Returns what was removed.
    """
    current = published_commit(out)
    folder = out / "v1" / "feed"
    try:
        feeds = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    except OSError:
        return []
    removed = []
    for path in feeds[max(keep, 1) :]:
        if path.stem != current:
            path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        bridge.forget(out, (path.stem for path in removed))
    return removed
