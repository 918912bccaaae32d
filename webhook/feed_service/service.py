"""The per-process service object: configuration, syncer, follower, claims store, site files.

`create_app` only builds it; `start` (gunicorn's post_worker_init, or `opos serve`) opens what a
worker process holds, so nothing is opened in a process that forks afterwards (`--preload`), and
`close` (worker_exit) releases it.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from pathlib import Path

from flask import Response, current_app

from opos.atomic import write_atomically
from opos.errors import KeyInvalid, OposError, RepositoryError
from opos.eventlog.logindex import LogIndex
from opos.lru import LRU
from opos.publish.follow import Follower, Syncer, SyncResult
from opos.publish.site import published_commit, published_keys_expiry
from opos.signing import keys
from opos.trust.ancestry import descends_from
from opos.trust.gitrepo import GitLedger, fetch_branch, redact
from webhook.feed_service import metrics
from webhook.feed_service.claims_store import ClaimsStore, open_store
from webhook.feed_service.config import Config
from webhook.feed_service.deliveries import Deliveries
from webhook.feed_service.errors import ClaimsUnavailable, ConfigError
from webhook.feed_service.site_files import SiteFiles
from webhook.feed_service.sources import AsnDatabase, CountryDatabase, parse_rate, sources_from_config

logger = logging.getLogger("opos.service")
CLAIMS_RECHECK_SECONDS = 5.0  # while the claims database is failing, /healthz asks it again this often


class Service:
    def __init__(self, config: Config) -> None:
        self.config = config
        _check_feed_key(config)
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.site = SiteFiles(config.site_dir)
        self.oonirun = config.oonirun()  # the OONI Run bridge's link; None when it is off
        self.syncer = Syncer(config.following(), on_result=self._count)
        self.follower = Follower(
            self.syncer, config.data_dir, config.poll_seconds, min_interval=config.min_sync_interval_seconds
        )
        self.deliveries = Deliveries(config.data_dir / "deliveries.sqlite3")
        self.sources = sources_from_config(config)
        self.claims_rate = parse_rate(config.claims_rate)
        self.asn_db: AsnDatabase | None = None
        self.country_db: CountryDatabase | None = None
        self._log_index: LogIndex | None = None
        self._claims: ClaimsStore | None = None
        self._claims_lock = threading.Lock()
        self.rendered: LRU[str, Response] = LRU(128)  # log answers by ETag: a popular query once a minute
        self.rendered_lock = threading.Lock()
        self.started = False
        self._claims_checked = 0.0  # time.monotonic() of the last question to the claims database

    def start(self) -> None:
        """In the process that serves: open the claims store (creating or migrating its schema) and follow."""
        if self.started:
            return
        self.started = True
        if self.config.asn_db is not None:
            self.asn_db = AsnDatabase(self.config.asn_db)
        if self.config.country_db is not None:
            self.country_db = CountryDatabase(self.config.country_db)
        self.check_claims()  # /healthz says what is wrong from the start, not from the first claim
        if self.config.follow:
            self.follower.start()

    @staticmethod
    def _count(result: SyncResult, seconds: float) -> None:
        metrics.SYNCS.labels(result.outcome).inc()
        metrics.SYNC_SECONDS.observe(seconds)
        if result.outcome == "rejected":
            metrics.VERIFICATION_FAILURES.inc()
        if result.outcome == "uncosigned" and result.detail.startswith("SPLIT VIEW ALARM"):
            metrics.SPLIT_VIEW_ALARMS.inc()

    def log_index(self) -> LogIndex | None:
        """The event log's index, once the first sync has made one (kept by the leader's syncs)."""
        if self._log_index is None:
            served = published_commit(self.config.site_dir)
            if served is None:
                return None
            try:
                with self.syncer.open_ledger() as ledger:
                    self._log_index = LogIndex.for_verification(self.syncer.verification(ledger, served))
            except OposError:
                return None
        return self._log_index

    @property
    def _claims_problem_path(self) -> Path:
        return self.config.data_dir / "claims.problem"

    def claims_failed(self, err: ClaimsUnavailable) -> str:
        """Log the failure and say, for every worker's /healthz, that the claims database failed (claims are
        refused meanwhile); the problem as said."""
        logger.error("claims: %s", err.diagnostics())
        self._claims_checked = time.monotonic()
        problem = f"the claims database is unavailable ({err}): capped runs are refused until it is back"
        write_atomically(self._claims_problem_path, problem.encode())
        return problem

    def check_claims(self) -> str | None:
        """Ask the claims database now: its problem, recorded for every worker's /healthz, or None (cleared)."""
        self._claims_checked = time.monotonic()
        try:
            self.claims().ping()
        except ClaimsUnavailable as err:
            return self.claims_failed(err)
        self.claims_worked()
        return None

    def claims_worked(self) -> None:
        if self._claims_problem_path.exists():
            self._claims_problem_path.unlink(missing_ok=True)

    def key_document_expiry(self) -> dt.datetime | None:
        """When the published key document expires; None without one."""
        return published_keys_expiry(self.config.site_dir)

    def claims_problem(self) -> str | None:
        """What is wrong with the claims database as of at most CLAIMS_RECHECK_SECONDS ago (asked again if older)."""
        try:
            problem = self._claims_problem_path.read_text(encoding="utf-8", errors="replace") or "claims failed"
        except OSError:
            return None
        if time.monotonic() - self._claims_checked >= CLAIMS_RECHECK_SECONDS:
            return self.check_claims()
        return problem

    def claims(self) -> ClaimsStore:
        with self._claims_lock:
            if self._claims is None:
                self._claims = open_store(self.config.claims_database_url, self.config.claims_timeout_seconds)
            return self._claims

    def close(self) -> None:
        self.follower.stop()
        self.deliveries.close()
        for database in (self.asn_db, self.country_db):
            if database is not None:
                database.close()
        with self._claims_lock:
            if self._claims is not None:
                self._claims.close()
                self._claims = None


def check_before_serving(config: Config) -> None:
    """Refuse to start on a configuration that can never publish: a feed key that cannot sign, or a
    trust root that is not in the history of the followed branch. Raises ConfigError.

    An unreachable remote is not refused: it may come back, and the service says so in /healthz.
    """
    _check_feed_key(config)
    if config.auditors_required > len(config.auditor_urls):
        raise ConfigError(f"OPOS_AUDITORS_REQUIRED is {config.auditors_required}, but OPOS_AUDITORS names "
                          f"{len(config.auditor_urls)} auditor(s): no head could ever be published")  # fmt: skip
    if not config.trust_root:
        return
    clone = config.data_dir / "ledger.git"
    try:
        head = fetch_branch(clone, config.remote, config.branch)
    except RepositoryError as err:
        logger.warning("cannot check OPOS_TRUST_ROOT before serving: %s", err.diagnostics())
        return
    with GitLedger(clone, config.ledger_dir) as ledger:
        try:
            root = ledger.resolve(config.trust_root)
        except RepositoryError:
            root = None
        if root is None or not descends_from(ledger, head, root):
            raise ConfigError(
                f"OPOS_TRUST_ROOT {config.trust_root} is not in the history of {config.branch} at "
                f"{redact(config.remote)}: wrong repository, wrong branch, or history rewritten"
            )


def _check_feed_key(config: Config) -> None:
    """Refuse to start with a feed key that cannot sign or that others can read: say so now, not at the first sync."""
    try:
        mode = config.feed_key.stat().st_mode
        keys.load_private(config.feed_key)
    except OSError as err:
        raise ConfigError(f"OPOS_FEED_KEY {config.feed_key}: {err.strerror}") from err
    except KeyInvalid as err:
        raise ConfigError(f"OPOS_FEED_KEY: {err} (the private key from `opos keygen`, not its .pub)") from err
    if mode & 0o077:
        raise ConfigError(f"OPOS_FEED_KEY {config.feed_key} is readable by others (mode {mode & 0o777:o}): "
                          f"chmod 600 {config.feed_key}")  # fmt: skip


def current() -> Service:
    service: Service = current_app.extensions["opos"]
    return service
