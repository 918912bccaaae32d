"""Webhook deliveries already acted on, by GitHub's X-GitHub-Delivery id: a replay changes nothing.

SQLite in the data directory, shared by the workers of one instance; ids are forgotten after
`keep_seconds` (GitHub redelivers by hand within hours; a replay later than that costs one sync,
which the floor between syncs bounds anyway).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from webhook.limits import LIMITS


class Deliveries:
    def __init__(self, path: Path, keep_seconds: float = 6 * 3600) -> None:
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

    def first_time(self, delivery: str) -> bool:
        """Record `delivery`; False when it was seen within keep_seconds (a replay)."""
        now = time.time()
        with self.lock:
            connection = self._connect()
            connection.execute("DELETE FROM deliveries WHERE seen < ?", (now - self.keep_seconds,))
            inserted = connection.execute(
                "INSERT OR IGNORE INTO deliveries (id, seen) VALUES (?, ?)",
                (delivery[: LIMITS.delivery_id_length], now),
            )
            return inserted.rowcount == 1

    def close(self) -> None:
        with self.lock:
            if self.connection is not None:
                self.connection.close()
                self.connection = None
