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

MAX_ID_LENGTH = 100


class Deliveries:
    def __init__(self, path: Path, keep_seconds: float = 6 * 3600) -> None:
        self.path = path
        self.keep_seconds = keep_seconds
        self.local = threading.local()

    def _connect(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self.local, "connection", None)
        if connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("CREATE TABLE IF NOT EXISTS deliveries (id TEXT PRIMARY KEY, seen REAL NOT NULL)")
            connection.execute("CREATE INDEX IF NOT EXISTS deliveries_seen ON deliveries (seen)")
            self.local.connection = connection
        return connection

    def first_time(self, delivery: str) -> bool:
        """Record `delivery`; False when it was seen within keep_seconds (a replay)."""
        now = time.time()
        connection = self._connect()
        connection.execute("DELETE FROM deliveries WHERE seen < ?", (now - self.keep_seconds,))
        inserted = connection.execute(
            "INSERT OR IGNORE INTO deliveries (id, seen) VALUES (?, ?)", (delivery[:MAX_ID_LENGTH], now)
        )
        return inserted.rowcount == 1

    def close(self) -> None:
        connection = getattr(self.local, "connection", None)
        if connection is not None:
            connection.close()
            self.local.connection = None
