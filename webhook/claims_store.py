"""Where claims live: SQLite (one machine) or PostgreSQL (several instances), behind one small interface.

A claim is a probe's slot in an instruction's cap. `claim()` is atomic: at most `limit` probes
hold a slot in one (instruction, scope), also under many concurrent workers and instances, and a
probe that asks again gets its existing slot back without using a second one. Slots are never
given back: "at most N probes" counts every probe that ever ran it. Raising max_probes in the
ledger opens more slots.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psycopg

from opos.errors import OposError


class ClaimsUnavailable(OposError):
    """The claims database cannot be reached or used."""


@dataclass(frozen=True)
class ClaimResult:
    granted: bool
    used: int  # slots taken in this scope, after this request


class ClaimsStore(Protocol):
    def claim(self, instruction: str, scope: str, probe_id: str, limit: int) -> ClaimResult: ...

    def close(self) -> None: ...


# Versioned schema: each entry runs once, in order, recorded in opos_schema_version.
MIGRATIONS = [
    """CREATE TABLE opos_claims (
        instruction TEXT NOT NULL,
        probe_id TEXT NOT NULL,
        scope TEXT NOT NULL,
        claimed_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
        PRIMARY KEY (instruction, probe_id)
    )""",
    "CREATE INDEX opos_claims_scope ON opos_claims (instruction, scope)",
]


def _claim(
    run: Callable[[str, tuple[Any, ...]], Any], instruction: str, scope: str, probe_id: str, limit: int
) -> ClaimResult:
    """The claim itself, inside a transaction that the caller has serialised for this instruction."""
    held = run(
        "SELECT scope FROM opos_claims WHERE instruction = ? AND probe_id = ?", (instruction, probe_id)
    ).fetchone()
    if held is not None:
        scope = held[0]  # asking again, perhaps from another network: the slot it holds, not a new one
    used = int(
        run("SELECT count(*) FROM opos_claims WHERE instruction = ? AND scope = ?", (instruction, scope)).fetchone()[0]
    )
    if held is not None:
        return ClaimResult(True, used)
    if used >= limit:
        return ClaimResult(False, used)
    run("INSERT INTO opos_claims (instruction, probe_id, scope) VALUES (?, ?, ?)", (instruction, probe_id, scope))
    return ClaimResult(True, used + 1)


def open_store(url: str) -> ClaimsStore:
    """`sqlite:///path/to/file` or `postgresql://…`."""
    if url.startswith("sqlite:///"):
        return SqliteStore(Path(url.removeprefix("sqlite://")))
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url)
    raise ClaimsUnavailable(f"OPOS_CLAIMS_DATABASE {url!r}: use sqlite:///path or postgresql://…")


class SqliteStore:
    """A file in WAL mode; BEGIN IMMEDIATE serialises writers across every worker process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.local = threading.local()
        with self._connect() as connection:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("CREATE TABLE IF NOT EXISTS opos_schema_version (version INTEGER NOT NULL)")
            row = connection.execute("SELECT max(version) FROM opos_schema_version").fetchone()
            for number, statement in enumerate(MIGRATIONS[row[0] or 0 :], start=(row[0] or 0) + 1):
                connection.execute(statement)
                connection.execute("INSERT INTO opos_schema_version VALUES (?)", (number,))
            connection.execute("COMMIT")

    def _connect(self) -> sqlite3.Connection:
        connection = getattr(self.local, "connection", None)
        if connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            connection.execute("PRAGMA busy_timeout=30000")
            self.local.connection = connection
        return connection

    def claim(self, instruction: str, scope: str, probe_id: str, limit: int) -> ClaimResult:
        try:
            connection = self._connect()
            connection.execute("BEGIN IMMEDIATE")
            try:
                result = _claim(
                    lambda sql, params: connection.execute(sql, params), instruction, scope, probe_id, limit
                )
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            return result
        except sqlite3.Error as err:
            raise ClaimsUnavailable(f"the claims database {self.path} failed: {err}") from err

    def close(self) -> None:
        connection = getattr(self.local, "connection", None)
        if connection is not None:
            connection.close()
            self.local.connection = None


class PostgresStore:
    """PostgreSQL via psycopg 3; a transaction-scoped advisory lock per (instruction, scope) serialises claims."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.local = threading.local()
        try:
            with self._connect().transaction():
                connection = self._connect()
                connection.execute("SELECT pg_advisory_xact_lock(hashtextextended('opos-migrations', 0))")
                connection.execute("CREATE TABLE IF NOT EXISTS opos_schema_version (version INTEGER NOT NULL)")
                current = connection.execute("SELECT max(version) FROM opos_schema_version").fetchone()
                done = current[0] if current and current[0] else 0
                for number, statement in enumerate(MIGRATIONS[done:], start=done + 1):
                    connection.execute(statement)
                    connection.execute("INSERT INTO opos_schema_version VALUES (%s)", (number,))
        except psycopg.Error as err:
            raise ClaimsUnavailable(f"cannot use the claims database: {_describe(err)}") from err

    def _connect(self) -> Any:
        connection = getattr(self.local, "connection", None)
        if connection is None or connection.closed or connection.broken:
            connection = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
            self.local.connection = connection
        return connection

    def claim(self, instruction: str, scope: str, probe_id: str, limit: int) -> ClaimResult:
        try:
            connection = self._connect()
            with connection.transaction():
                connection.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (instruction,))
                result = _claim(
                    lambda sql, params: connection.execute(sql.replace("?", "%s"), params),
                    instruction, scope, probe_id, limit,
                )  # fmt: skip
            return result
        except psycopg.Error as err:
            raise ClaimsUnavailable(f"the claims database failed: {_describe(err)}") from err

    def close(self) -> None:
        connection = getattr(self.local, "connection", None)
        if connection is not None:
            connection.close()
            self.local.connection = None


def _describe(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
