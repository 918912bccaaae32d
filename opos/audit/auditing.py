"""An auditor: cosign a feed only when it is the public ledger, byte for byte, and extends all it cosigned.

The checks, in order (the cheap ones first, so a bad request costs little):
1. the envelope is a feed signed by a pinned feed key;
2. it does not conflict with the auditor's log: another commit at a sequence it cosigned, a
   lower sequence (a rollback) — the split-view alarm, `AuditConflict`;
3. its commit is in the public ledger (reachable from the branch the auditor fetched), the
   history from the trust root to it verifies, and the feed re-rendered there is the same bytes;
4. the commit descends from the last one cosigned.
Then `(sequence, commit, feed_sha256, time)` is appended to the log and fsynced before the
cosignature is handed out, so an auditor killed at any instant never cosigns a conflicting
commit afterwards. The CLI (`opos auditor cosign`) and the auditor service share this code.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from opos.audit.errors import AuditConflict, AuditLogDamaged, AuditRefused
from opos.errors import LedgerInvalid, OposError, UntrustedDataError
from opos.model import CommitHash, format_time
from opos.publish.site import feed_at
from opos.signing import cosignature, keydoc
from opos.signing.documents import Feed, read_unverified, verify_envelope
from opos.trust import keyhistory
from opos.trust.gitrepo import GitLedger
from opos.trust.verification import Verification


@dataclass(frozen=True)
class LogEntry:
    sequence: int
    commit: str
    feed_sha256: str
    time: str


_PROCESS_LOCKS: dict[Path, threading.Lock] = {}
_PROCESS_LOCKS_GUARD = threading.Lock()


def _process_lock(folder: Path) -> threading.Lock:
    with _PROCESS_LOCKS_GUARD:
        return _PROCESS_LOCKS.setdefault(folder.resolve(), threading.Lock())


_RESTORE = (
    "restore it from a backup (or remove the damaged line only if you know what it said); this auditor "
    "cosigns nothing until then"
)


class AuditLog:
    """`DIR/cosigned.jsonl`: one line a cosigned feed, appended and fsynced; `DIR/lock` serialises auditors."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "cosigned.jsonl"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One cosigning at a time, across processes (gunicorn workers, a cron job beside them) and within one.

        Two requests in one gevent worker would deadlock on a blocking flock (the second blocks the
        whole process, so the first never releases it): they queue on a lock of this process first,
        and the file lock is polled, which lets the process's other requests run meanwhile.
        """
        ours = _process_lock(self.folder)
        while not ours.acquire(blocking=False):  # polled: a lock made before gevent patched threading blocks all
            time.sleep(0.01)
        try:
            with (self.folder / "lock").open("a") as handle:
                while True:
                    try:
                        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        time.sleep(0.01)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
        finally:
            ours.release()

    def entries(self) -> list[LogEntry]:
        """Every entry; a last line cut short by a crash was never answered, so it is dropped.

        Any other line that cannot be read is damage, not a crash: raises AuditLogDamaged, since an
        auditor that forgot what it cosigned could cosign a split view.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as err:
            raise AuditLogDamaged(f"{self.path} cannot be read ({err.strerror}): {_RESTORE}") from None
        entries = []
        for number, line in enumerate(data.split(b"\n")[:-1], start=1):  # after the last newline: a torn write
            try:
                value = json.loads(line.decode("utf-8"))
                entries.append(LogEntry(int(value["sequence"]), str(value["commit"]), str(value["feed_sha256"]),
                                        str(value["time"])))  # fmt: skip
            except (ValueError, KeyError, TypeError) as err:
                what = f"{type(err).__name__}: {err}" if not isinstance(err, KeyError) else f"no {err} field"
                raise AuditLogDamaged(f"{self.path} is damaged at line {number} ({what}): {_RESTORE}") from None
        return entries

    def append(self, entry: LogEntry) -> None:
        new = not self.path.exists()
        self._drop_torn_tail()
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(asdict(entry), sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        if new:  # the file's name must survive a crash too
            descriptor = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)

    def _drop_torn_tail(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        if data and not data.endswith(b"\n"):
            with self.path.open("r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)


@dataclass(frozen=True)
class Cosigned:
    envelope: bytes  # this auditor's cosignature
    entry: LogEntry
    appended: bool  # False when the same feed was cosigned before


def check_conflict(log: Sequence[LogEntry], sequence: int, commit: str) -> None:
    """Raise AuditConflict when (sequence, commit) contradicts the log; descent is checked later, with git."""
    if not log:
        return
    latest = log[-1]
    if any(e.sequence == sequence and e.commit == commit for e in log):
        return
    same = next((e for e in log if e.sequence == sequence), None)
    if same is not None:
        raise AuditConflict(f"split view: sequence {sequence} is {commit}, but this auditor cosigned {same.commit} "
                            "at that sequence", latest)  # fmt: skip
    if sequence < latest.sequence:
        raise AuditConflict(f"rollback: sequence {sequence} is lower than {latest.sequence} ({latest.commit}), "
                            "which this auditor cosigned", latest)  # fmt: skip


@dataclass(frozen=True)
class Request:
    """A feed to audit, as far as it can be checked without the ledger: signed by a pinned feed key, or (for an
    auditor that follows the root keys) well formed, its signature checked once the ledger is fetched."""

    envelope: bytes
    feed: Feed
    payload: bytes
    digest: str  # SHA-256 of the envelope: the head's feed_sha256
    roots: tuple[keydoc.Key, ...] = ()  # with `signed` False: the key documents from these name the feed keys
    signed: bool = True  # verified with a pinned feed key already

    @property
    def statement(self) -> cosignature.Statement:
        return cosignature.Statement(self.feed.commit, self.feed.sequence, self.digest)


def receive(
    envelope: bytes, feed_keys: Sequence[ed25519.Ed25519PublicKey], roots: Sequence[keydoc.Key] = ()
) -> Request:
    """The feed in an envelope, checked before anything costly (outsiders get no fetch). Raises AuditRefused.

    With `roots`, a feed not signed by a pinned feed key is taken on its form, and its signature is
    checked against the feed keys of the ledger's key documents at its commit (check_feed_key).
    """
    try:
        verified, signed = verify_envelope(envelope, feed_keys), True
    except UntrustedDataError as err:
        if not roots:
            raise AuditRefused(f"not a feed signed by a pinned feed key: {err}") from None
        try:
            verified, signed = read_unverified(envelope), False
        except UntrustedDataError as error:
            raise AuditRefused(f"not a feed: {error}") from None
    if not isinstance(verified.document, Feed):
        raise AuditRefused(f"that is a {verified.kind}, not a feed: send the feed envelope")
    digest = hashlib.sha256(envelope).hexdigest()
    return Request(envelope, verified.document, verified.payload, digest, tuple(roots), signed)


def check_feed_key(request: Request, ledger: GitLedger) -> list[ed25519.Ed25519PublicKey]:
    """For a request taken on its form: signed by a feed key that the key documents at its commit list, their
    chain starting at the pinned root keys, as probes check it. Those feed keys; raises AuditRefused."""
    commit = request.feed.commit
    try:
        documents = keyhistory.at(ledger, CommitHash(commit))
        if not documents:
            raise AuditRefused(f"the ledger at {commit[:12]} has no key document to learn its feed keys from: pin "
                               "the feed key (--feed-key) instead")  # fmt: skip
        feed_keys = keydoc.chain(documents, request.roots).feed_public_keys()
        verify_envelope(request.envelope, feed_keys)
    except (UntrustedDataError, LedgerInvalid) as err:
        raise AuditRefused(f"not a feed signed by a feed key that the key documents at {commit[:12]} list (from "
                           f"the pinned root keys): {err}") from None  # fmt: skip
    return feed_keys


LedgerAt = Callable[[], tuple[Verification, CommitHash | None]]  # the ledger, fetched: (verification, public tip)


def audit(
    request: Request, key: ed25519.Ed25519PrivateKey, log: AuditLog, ledger_at: LedgerAt, now: dt.datetime
) -> Cosigned:
    """Cosign the feed when the ledger says the same (the caller holds `log.locked()`).

    A feed cosigned before is cosigned again from the log, without `ledger_at`: a retry or a replay
    costs no fetch. Otherwise `ledger_at` gives the verified ledger to check it against.
    """
    feed = request.feed
    entries = log.entries()
    known = next((e for e in entries if (e.commit, e.feed_sha256) == (feed.commit, request.digest)), None)
    if known is not None:
        return Cosigned(cosignature.cosign(request.statement, key), known, False)
    check_conflict(entries, feed.sequence, feed.commit)
    verification, public_tip = ledger_at()
    ledger = verification.ledger
    if not request.signed:
        check_feed_key(request, ledger)
    try:
        ledger.commit(feed.commit)
    except OposError:
        raise AuditRefused(f"the feed's commit {feed.commit} is not in the public ledger") from None
    if public_tip is not None and not verification.verifier.on_chain(public_tip, feed.commit):
        raise AuditRefused(f"the feed's commit {feed.commit} is not on the public branch's first-parent chain "
                           f"(at {public_tip})")  # fmt: skip
    since = CommitHash(entries[-1].commit) if entries else None
    verdict = verification.verdict(feed.commit, since)
    if verdict.rewritten and entries:
        latest = entries[-1]
        raise AuditConflict(f"split view: {latest.commit} (sequence {latest.sequence}), which this auditor "
                            f"cosigned, is not on the first-parent chain of {feed.commit}", latest)  # fmt: skip
    if not verdict.ok:
        raise AuditRefused(f"the history to {feed.commit} may not be followed: " + "; ".join(verdict.lines()))
    rendered = feed_at(verification, feed.commit, since)
    if rendered != request.payload:
        raise AuditRefused(
            f"the feed differs from the ledger at {feed.commit}:\n{difference(rendered, request.payload)}"
        )
    entry = LogEntry(feed.sequence, feed.commit, request.digest, format_time(now))
    log.append(entry)
    return Cosigned(cosignature.cosign(request.statement, key), entry, True)


def difference(
    ours: bytes, theirs: bytes, our_name: str = "re-rendered from git", their_name: str = "the signed feed"
) -> str:
    """A unified diff of two JSON documents (feed payloads), pretty-printed: what theirs adds or changes."""
    mine = json.dumps(json.loads(ours), indent=1, sort_keys=True).splitlines()
    other = json.dumps(json.loads(theirs), indent=1, sort_keys=True).splitlines()
    lines = difflib.unified_diff(mine, other, our_name, their_name, lineterm="")
    return "\n".join(lines)
