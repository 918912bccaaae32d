"""The per-process service object: configuration, syncer, follower, claims store, site files."""

from __future__ import annotations

import datetime as dt
import logging
import threading

from flask import current_app

from opos.errors import OposError
from opos.eventlog.logindex import LogIndex
from opos.feed.site import published_commit
from webhook import metrics
from webhook.claims_store import ClaimsStore, ClaimsUnavailable, open_store
from webhook.config import Config
from webhook.site_files import SiteFiles
from webhook.sync import Follower, Syncer, SyncResult

log = logging.getLogger("opos.service")


class Service:
    def __init__(self, config: Config) -> None:
        self.config = config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.site = SiteFiles(config.site_dir)
        self.syncer = Syncer(
            remote=config.remote,
            branch=config.branch,
            data_dir=config.data_dir,
            ledger_dir=config.ledger_dir,
            trust_root=config.trust_root,
            feed_key=config.feed_key,
            head_ttl=dt.timedelta(seconds=config.head_ttl_seconds),
            on_result=self._count,
        )
        self.follower = Follower(self.syncer, config.data_dir, config.poll_seconds)
        self._log_index: LogIndex | None = None
        self._claims: ClaimsStore | None = None
        self._claims_lock = threading.Lock()
        try:
            self._claims = open_store(config.claims_location)  # creates or migrates the schema on start
        except ClaimsUnavailable as err:
            log.error("claims: %s (will retry on the next claim)", err)

    @staticmethod
    def _count(result: SyncResult, seconds: float) -> None:
        metrics.SYNCS.labels(result.outcome).inc()
        metrics.SYNC_SECONDS.observe(seconds)
        if result.outcome == "rejected":
            metrics.VERIFICATION_FAILURES.inc()

    def log_index(self) -> LogIndex | None:
        """The event log's index, once the first sync has made one (kept by the leader's syncs)."""
        if self._log_index is None:
            served = published_commit(self.config.site_dir)
            if served is None:
                return None
            try:
                verification = self.syncer.verification(served)
            except OposError:
                return None
            self._log_index = LogIndex.for_verification(verification)
        return self._log_index

    def claims(self) -> ClaimsStore:
        with self._claims_lock:
            if self._claims is None:
                self._claims = open_store(self.config.claims_location)
            return self._claims

    def close(self) -> None:
        self.follower.stop()
        if self._claims is not None:
            self._claims.close()


def current() -> Service:
    service: Service = current_app.extensions["opos"]
    return service
