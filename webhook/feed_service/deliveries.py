"""Webhook deliveries already acted on: a replay changes nothing.

A delivery is known by the SHA-256 of its signed body, which the HMAC covers (a captured body
replayed under new X-GitHub-Delivery ids, or none, is the same body), and by its delivery id when
it has one. SQLite in the data directory, shared by the workers of one instance; both are forgotten
after `keep_seconds` (24 h: GitHub redelivers by hand within hours; a replay later than that costs
one sync, which the floor between syncs bounds anyway).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from webhook.limits import LIMITS


class Deliveries:
    def __init__(self, path: Path, keep_seconds: float = 24 * 3600) -> None:
        self.path = path
        self.keep_seconds = keep_seconds
        self.lock = threading.Lock()  # one connection per process (a thread-local is one per greenlet)
        self.connection: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self.connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("CREATE TABLE IF NOT EXISTS deliveries (id TEXT PRIMARY KEY, seen REAL NOT NULL)")
            connection.execute("CREATE INDEX IF NOT EXISTS deliveries_seen ON deliveries (seen)")
            self.connection = connection
        return self.connection

    def first_time(self, *names: str) -> bool:
        """Record the delivery under each of its `names`; False when any was seen within keep_seconds (a replay)."""
        now = time.time()
        with self.lock:
            connection = self._connect()
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.execute("DELETE FROM deliveries WHERE seen < ?", (now - self.keep_seconds,))
                inserted = 0
                for name in names:
                    cursor = connection.execute(
                        "INSERT OR IGNORE INTO deliveries (id, seen) VALUES (?, ?)",
                        (name[: LIMITS.delivery_id_length], now),
                    )
                    inserted += cursor.rowcount
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            return inserted == len(names)

    def close(self) -> None:
        with self.lock:
            if self.connection is not None:
                self.connection.close()
                self.connection = None
