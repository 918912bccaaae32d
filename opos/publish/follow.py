"""Following the ledger: fetch → verify → render → publish, one sync at a time across all workers.

The service (webhook/) builds the settings from its configuration and runs this. Every gunicorn
worker runs a follower thread. A webhook (or the timer) records a sync request in
the data directory and wakes the thread; whichever worker holds the sync lock does the work, and
requests that arrive meanwhile are coalesced into one follow-up sync. Publication is atomic
(feed files first, head last, each renamed into place), so every worker serves the new head as
soon as it is on disk, and a crash at any instant leaves the previous complete state served.
"""

from __future__ import annotations

import collections
import datetime as dt
import fcntl
import json
import logging
import os
import shutil
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, get_args

from opos.atomic import write_atomically
from opos.errors import HistoryRejected, LedgerInvalid, OposError, RepositoryDamaged
from opos.instructions import rules
from opos.instructions.oonirun import LinkSettings
from opos.model import CommitHash, format_time
from opos.publish.cosigning import asking
from opos.publish.errors import CosignaturesMissing
from opos.publish.site import (
    Auditors,
    cosignature_path,
    keys_expiry_warning,
    prune_feeds,
    publish,
    published_head,
    refresh_link,
    renew_head,
)
from opos.publish.stages import Stages
from opos.signing import keys
from opos.trust.gitrepo import GitLedger, fetch_branch, redact
from opos.trust.verification import Verification

logger = logging.getLogger("opos.sync")


@dataclass
class ServiceState:
    """What is served, and how the last sync went (data_dir/state.json, shared by all workers)."""

    commit: str | None = None
    sequence: int | None = None
    last_success: str | None = None  # time of the last sync that ended with nothing wrong
    last_attempt: str | None = None
    problem: str | None = None  # why the service is degraded, for people

    @classmethod
    def load(cls, path: Path) -> ServiceState:
        try:
            return cls(**json.loads(path.read_bytes()))
        except (OSError, ValueError, TypeError):
            return cls()

    def save(self, path: Path) -> None:
        write_atomically(path, json.dumps(asdict(self), indent=1).encode())


Outcome = Literal["published", "unchanged", "renewed", "rejected", "uncosigned", "failed"]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)


@dataclass(frozen=True)
class SyncResult:
    outcome: Outcome
    commit: str | None
    detail: str = ""


def _short(detail: str) -> str:
    """What /healthz (public) says of a failure: its first line, cut short; the whole is in the log."""
    first = detail.strip().splitlines()[0] if detail.strip() else "failed"
    return first if len(first) <= 200 else first[:199] + "…"


@dataclass(frozen=True)
class FollowSettings:
    """What following needs of the service's configuration (webhook.feed_service.config.Config.following())."""

    remote: str
    branch: str
    ledger_dir: str
    trust_root: str | None
    feed_key: Path
    data_dir: Path
    site_dir: Path
    head_ttl_seconds: float
    feed_retention: int
    auditor_urls: tuple[str, ...] = ()
    auditor_key_files: tuple[Path, ...] = ()
    auditors_required: int = 0
    oonirun: LinkSettings | None = None  # the OONI Run bridge's link, when it is on


class Syncer:
    """One sync: the work itself, with no locking (the Follower serialises it)."""

    def __init__(self, config: FollowSettings, on_result: Callable[[SyncResult, float], None] | None = None) -> None:
        self.config = config
        self.head_ttl = dt.timedelta(seconds=config.head_ttl_seconds)
        self.on_result = on_result
        self.clone = config.data_dir / "ledger.git"
        self.site = config.site_dir
        self.state_path = config.data_dir / "state.json"
        self._checked = rules.new_check_memo()  # parsed instruction files, kept between syncs
        self.auditors = list(config.auditor_urls) if config.auditors_required else []
        self._warned: dt.datetime | None = None  # when the key document's expiry was last logged
        self._link_due: dt.datetime | None = dt.datetime.min.replace(tzinfo=dt.UTC)  # when to write the link again

    def _auditors(self) -> Auditors | None:
        """With auditors configured, who must cosign: the head names a new commit only once enough did."""
        if not self.auditors:
            return None
        return Auditors(asking(self.auditors), tuple(keys.load_public(path) for path in self.config.auditor_key_files),
                        self.config.auditors_required)  # fmt: skip

    def state(self) -> ServiceState:
        return ServiceState.load(self.state_path)

    def open_ledger(self) -> GitLedger:
        """A fresh view of the clone (it sees every object fetched so far); the caller closes it."""
        return GitLedger(self.clone, self.config.ledger_dir)

    def verification(self, ledger: GitLedger, commit: CommitHash) -> Verification:
        return Verification.open(ledger, commit, self.config.trust_root, self._checked)

    def sync(self, now: dt.datetime | None = None) -> SyncResult:
        started = time.monotonic()
        now = now or dt.datetime.now(dt.UTC)
        state = self.state()
        state.last_attempt = format_time(now)
        try:
            result = self._sync(state, now)
            if result.outcome in ("rejected",):
                state.problem = result.detail
            else:
                state.problem = None
                state.last_success = format_time(now)
        except CosignaturesMissing as err:  # the new head waits for the auditors; the previous one stays
            result = SyncResult("uncosigned", state.commit, err.diagnostics())
            state.problem = _short(result.detail)
        except RepositoryDamaged as err:
            # The mirror is ours to rebuild: what is served stays, and the next sync fetches afresh.
            shutil.rmtree(self.clone, ignore_errors=True)
            result = SyncResult("failed", state.commit, redact(f"{err.diagnostics()}; the local clone was removed"))
            state.problem = "the local clone of the ledger was damaged: it is fetched again on the next sync"
        except OposError as err:
            result = SyncResult("failed", state.commit, redact(err.diagnostics()))
            state.problem = _short(result.detail)
        except Exception as err:  # keep following: the next sync may succeed
            trace = "".join(traceback.format_exception(err))
            logger.error("sync failed with an internal error:\n%s", redact(trace))  # the traceback, no secrets
            result = SyncResult("failed", state.commit, redact(f"internal error: {type(err).__name__}: {err}"))
            state.problem = "internal error while syncing (the details are in the service's log)"
        if result.outcome in ("rejected", "uncosigned", "failed"):
            self._keep_head_fresh(now)
        self._keep_link_fresh(now)
        state.save(self.state_path)
        seconds = time.monotonic() - started
        if result.outcome in ("rejected", "uncosigned", "failed"):
            logger.warning("sync %s (%.2f s): %s", result.outcome, seconds, result.detail)
        else:
            logger.info("sync %s: %s (%.2f s) %s", result.outcome, result.commit, seconds, result.detail)
        warning = keys_expiry_warning(self.site, now)
        if warning and (self._warned is None or now - self._warned >= dt.timedelta(hours=1)):
            logger.warning("%s", warning)  # once an hour: the log says it, /healthz and /metrics too
            self._warned = now
        if self.on_result:
            self.on_result(result, seconds)
        return result

    def _sync(self, state: ServiceState, now: dt.datetime) -> SyncResult:
        branch = self.config.branch
        stages = Stages()
        remote_commit = fetch_branch(self.clone, self.config.remote, branch)
        stages.mark("fetch")
        head = published_head(self.site)
        served = head.commit if head is not None else None
        cosigned = served is None or not self.auditors or cosignature_path(self.site, served).exists()
        if remote_commit == served and head is not None and not head.renewal_due(now) and cosigned:
            return SyncResult("unchanged", served)
        key = keys.load_private(self.config.feed_key)
        with self.open_ledger() as ledger:
            verification = self.verification(ledger, remote_commit)
            verdict = verification.verdict(remote_commit, since=served)
            if not verdict.ok:
                lines = "; ".join(verdict.lines())
                fix = verification.recovery(verdict, served, branch)
                return SyncResult("rejected", served, f"{branch} at {remote_commit} was not accepted: {lines}. {fix}")
            try:
                published = publish(verification, remote_commit, key, self.site, now, self.head_ttl, self._auditors(),
                                    self.config.oonirun, stages)  # fmt: skip
            except (HistoryRejected, LedgerInvalid) as err:
                detail = err.diagnostics().replace("\n", "; ")
                return SyncResult("rejected", served, f"{branch} at {remote_commit} was not accepted: {detail}")
        state.commit, state.sequence = published.commit, published.sequence
        if published.head_updated:
            self._link_due = published.link_changes
            pruned = prune_feeds(self.site, self.config.feed_retention)
            if pruned:
                logger.info("pruned %d feed(s) past the retention of %d", len(pruned), self.config.feed_retention)
        stages.mark("prune")
        return SyncResult("renewed" if remote_commit == served else "published", remote_commit, f"({stages})")

    def _keep_head_fresh(self, now: dt.datetime) -> None:
        """Re-issue the served head at half its life even while the branch is rejected or unreachable."""
        head = published_head(self.site)
        if head is None or not head.renewal_due(now):
            return
        try:
            renew_head(keys.load_private(self.config.feed_key), self.site, now, self.head_ttl, self.config.oonirun)
            logger.info("head of %s re-issued while the branch is not accepted", head.commit)
        except (OposError, OSError):
            logger.exception("the served head could not be re-issued")

    def _keep_link_fresh(self, now: dt.datetime) -> None:
        """Write the OONI Run link again when a window of what it lists opens or closes (checked at every sync)."""
        if self.config.oonirun is None or self._link_due is None or now < self._link_due:
            return
        try:
            self._link_due = refresh_link(self.site, self.config.oonirun, now)
        except OSError:
            logger.exception("the OONI Run link could not be written")


class Follower:
    """Runs syncs on request (webhooks) and on a timer, in one leader process at a time.

    Every worker runs a follower thread; the one that holds the lock on data_dir/sync.lock is the
    leader and does every sync, so its caches (parsed instructions, revisions) stay warm. Other
    workers only record requests, which the leader picks up within 10 ms. When the leader's
    process exits, the lock is released and another worker takes over within a second.
    """

    LEADER_CHECK = 0.01  # how soon the leader sees a request another worker recorded (two small reads)
    FOLLOWER_CHECK = 1.0
    BURST = 5  # syncs allowed back to back before the floor applies (a few pushes in a row stay fast)

    def __init__(self, syncer: Syncer, data_dir: Path, poll_seconds: float, min_interval: float = 0.0) -> None:
        self.syncer = syncer
        self.poll_seconds = poll_seconds
        self.min_interval = min_interval  # the sustained floor between syncs, whatever asks for them
        self._recent: collections.deque[float] = collections.deque()  # when the last BURST syncs started
        data_dir.mkdir(parents=True, exist_ok=True)
        self.lock_path = data_dir / "sync.lock"
        self.requested_path = data_dir / "sync.requested"
        self.done_path = data_dir / "sync.done"
        self.wake = threading.Event()
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None
        self.leader = False

    @staticmethod
    def _read_number(path: Path) -> int:
        try:
            return int(path.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def request(self) -> None:
        """Ask for a sync soon. Cheap and safe to call from a request handler."""
        write_atomically(self.requested_path, str(time.time_ns()).encode())
        self.wake.set()

    def pending(self) -> bool:
        return self._read_number(self.done_path) < self._read_number(self.requested_path)

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="opos-follower", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.wake.set()
        if self.thread is not None:
            self.thread.join(timeout=30)

    def _run(self) -> None:
        with self.lock_path.open("a") as lock:
            while not self.stopped.is_set():
                if not self.leader:
                    try:
                        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        self.leader = True
                        logger.info("this worker (pid %d) now runs the syncs", os.getpid())
                        self.request()  # a new leader syncs at once; what is on disk is served meanwhile
                    except BlockingIOError:
                        pass
                if self.leader:
                    if self._since_last_sync() >= self.poll_seconds:
                        self.request()
                    try:
                        self.serve_requests()
                    except Exception:
                        logger.exception("follower")
                self.wake.wait(timeout=self.LEADER_CHECK if self.leader else self.FOLLOWER_CHECK)
                self.wake.clear()

    def _since_last_sync(self) -> float:
        try:
            return time.time() - self.done_path.stat().st_mtime
        except OSError:
            return float("inf")

    def _may_sync(self) -> bool:
        window = self.BURST * self.min_interval
        now = time.monotonic()
        while self._recent and now - self._recent[0] >= window:
            self._recent.popleft()
        return len(self._recent) < self.BURST

    def serve_requests(self) -> None:
        """Sync until every request seen so far is served; requests made during a sync share one more.

        At most BURST syncs start within BURST times `min_interval`: a few pushes in a row are served at
        once, while a flood of webhooks (replayed, or sent by whoever has the secret) costs one sync
        per `min_interval`; the requests stay pending meanwhile and are served together.
        """
        while (
            not self.stopped.is_set()
            and self._may_sync()
            and self._read_number(self.done_path) < (wanted := self._read_number(self.requested_path))
        ):
            self._recent.append(time.monotonic())
            self.syncer.sync()
            write_atomically(self.done_path, str(wanted).encode())
