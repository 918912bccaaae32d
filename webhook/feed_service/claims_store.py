"""Where claims live: SQLite (one machine) or PostgreSQL (several instances), behind one small interface.

A claim is a probe's slot in an instruction's cap. `claim()` is atomic: at most `limit` probes
hold a slot in one (instruction, scope), also under many concurrent workers and instances, and a
probe that asks again gets its existing slot back without using a second one. Slots are never
given back by themselves: "at most N probes" counts every probe that ever ran it; staff can
revoke them (`opos claims revoke`). Raising max_probes in the ledger opens more slots.

Against made-up probe ids, a source address block (webhook.addresses: an IPv4 address, an IPv6 /48)
may hold at most `per_address` slots of one instruction, and `hit()` counts requests per block in
fixed windows, in the same database, so every worker and instance shares the counts.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import psycopg

from webhook.deadline import call_later
from webhook.feed_service.claims_sql import CLAIM_FUNCTION
from webhook.feed_service.errors import ClaimsUnavailable

Refusal = Literal["cap", "address"]


@dataclass(frozen=True)
class ClaimResult:
    granted: bool
    used: int  # slots taken in this scope, after this request
    refusal: Refusal | None = None  # why not granted: the cap is full, or this address holds its share


@dataclass(frozen=True)
class HeldClaim:
    instruction: str
    probe_id: str
    scope: str
    address: str
    claimed_at: str


class ClaimsStore(Protocol):
    def claim(
        self, instruction: str, scope: str, probe_id: str, limit: int, address: str = "", per_address: int = 0
    ) -> ClaimResult: ...

    def hit(self, key: str, amount: int, seconds: int) -> int:
        """Count a request against `key` in the current window of `seconds`; 0 when allowed, else seconds to wait."""

    def held(self, instruction: str | None = None) -> list[HeldClaim]: ...

    def revoke(self, instruction: str, probe_id: str | None = None, address: str | None = None) -> int: ...

    def ping(self) -> None:
        """One round trip to the database (raises ClaimsUnavailable): what /healthz asks while degraded."""

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
    "ALTER TABLE opos_claims ADD COLUMN address TEXT NOT NULL DEFAULT ''",
    "CREATE INDEX opos_claims_address ON opos_claims (instruction, address)",
    """CREATE TABLE opos_rate (
        key TEXT NOT NULL,
        window_start BIGINT NOT NULL,
        hits INTEGER NOT NULL,
        PRIMARY KEY (key, window_start)
    )""",
    # the slots used per (instruction, scope), kept with each claim: a claim reads one row, not a count
    """CREATE TABLE opos_claim_counts (
        instruction TEXT NOT NULL,
        scope TEXT NOT NULL,
        used INTEGER NOT NULL,
        PRIMARY KEY (instruction, scope)
    )""",
    """INSERT INTO opos_claim_counts (instruction, scope, used)
        SELECT instruction, scope, count(*) FROM opos_claims GROUP BY instruction, scope""",
]

Run = Callable[[str, tuple[Any, ...]], Any]


_USED = "SELECT used FROM opos_claim_counts WHERE instruction = ? AND scope = ?"


def _claim(
    run: Run, instruction: str, scope: str, probe_id: str, limit: int, address: str, per_address: int
) -> ClaimResult:
    """The claim itself, inside a transaction that the caller has serialised for this instruction.

    Every question is asked before any answer is read, so that PostgreSQL's pipeline mode sends
    them in one round trip.
    """
    holding = run("SELECT scope FROM opos_claims WHERE instruction = ? AND probe_id = ?", (instruction, probe_id))
    counted = run(_USED, (instruction, scope))
    by_address = (
        run("SELECT count(*) FROM opos_claims WHERE instruction = ? AND address = ?", (instruction, address))
        if per_address > 0 and address
        else None
    )
    held, row = holding.fetchone(), counted.fetchone()
    mine = int(by_address.fetchone()[0]) if by_address is not None else 0
    if held is not None and held[0] != scope:  # asking again, perhaps from another network: the slot it holds
        scope = held[0]
        row = run(_USED, (instruction, scope)).fetchone()
    used = int(row[0]) if row else 0
    if held is not None:
        return ClaimResult(True, used)
    if used >= limit:
        return ClaimResult(False, used, "cap")
    if per_address > 0 and address and mine >= per_address:
        return ClaimResult(False, used, "address")
    run(
        "INSERT INTO opos_claims (instruction, probe_id, scope, address) VALUES (?, ?, ?, ?)",
        (instruction, probe_id, scope, address),
    )
    run(
        "INSERT INTO opos_claim_counts (instruction, scope, used) VALUES (?, ?, 1) "
        "ON CONFLICT (instruction, scope) DO UPDATE SET used = opos_claim_counts.used + 1",
        (instruction, scope),
    )
    return ClaimResult(True, used + 1)


def _hit(run: Run, key: str, amount: int, seconds: int, now: float) -> int:
    window = int(now // seconds) * seconds
    run("DELETE FROM opos_rate WHERE key = ? AND window_start < ?", (key, window))
    row = run(
        "INSERT INTO opos_rate (key, window_start, hits) VALUES (?, ?, 1) "
        "ON CONFLICT (key, window_start) DO UPDATE SET hits = opos_rate.hits + 1 RETURNING hits",
        (key, window),
    ).fetchone()
    return 0 if int(row[0]) <= amount else max(1, int(window + seconds - now + 0.999))


def _held(run: Run, instruction: str | None) -> list[HeldClaim]:
    query = "SELECT instruction, probe_id, scope, address, claimed_at FROM opos_claims"
    rows = (
        run(query + " WHERE instruction = ? ORDER BY claimed_at, probe_id", (instruction,))
        if instruction
        else (run(query + " ORDER BY instruction, claimed_at, probe_id", ()))
    )
    return [HeldClaim(r[0], r[1], r[2], r[3], str(r[4])) for r in rows.fetchall()]


def _revoke(run: Run, instruction: str, probe_id: str | None, address: str | None) -> int:
    query, params = "DELETE FROM opos_claims WHERE instruction = ?", [instruction]
    if probe_id is not None:
        query, params = query + " AND probe_id = ?", [*params, probe_id]
    if address is not None:
        query, params = query + " AND address = ?", [*params, address]
    removed = len(run(query + " RETURNING probe_id", tuple(params)).fetchall())  # rowcount waits for a sync
    run("DELETE FROM opos_claim_counts WHERE instruction = ?", (instruction,))  # counted afresh: revoking is rare
    run(
        "INSERT INTO opos_claim_counts (instruction, scope, used) "
        "SELECT instruction, scope, count(*) FROM opos_claims WHERE instruction = ? GROUP BY instruction, scope",
        (instruction,),
    )
    return removed


class _Store:
    """The operations, on whatever `_transaction` each database provides (`lock`: serialise per instruction)."""

    def _transaction(self, work: Callable[[Run], Any], lock: str | None = None) -> Any:
        raise NotImplementedError

    def claim(
        self, instruction: str, scope: str, probe_id: str, limit: int, address: str = "", per_address: int = 0
    ) -> ClaimResult:
        result: ClaimResult = self._transaction(
            lambda run: _claim(run, instruction, scope, probe_id, limit, address, per_address), lock=instruction
        )
        return result

    def hit(self, key: str, amount: int, seconds: int) -> int:
        wait: int = self._transaction(lambda run: _hit(run, key, amount, seconds, time.time()))
        return wait

    def held(self, instruction: str | None = None) -> list[HeldClaim]:
        claims: list[HeldClaim] = self._transaction(lambda run: _held(run, instruction))
        return claims

    def revoke(self, instruction: str, probe_id: str | None = None, address: str | None = None) -> int:
        count: int = self._transaction(lambda run: _revoke(run, instruction, probe_id, address), lock=instruction)
        return count

    def ping(self) -> None:
        self._transaction(lambda run: run("SELECT 1", ()).fetchone())


def open_store(url: str, timeout_seconds: float = 2.0) -> ClaimsStore:
    """`sqlite:///path/to/file` or `postgresql://…` (whose every transaction is over within `timeout_seconds`)."""
    if url.startswith("sqlite:///"):
        return SqliteStore(Path(url.removeprefix("sqlite://")))
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url, timeout_seconds)
    raise ClaimsUnavailable(f"OPOS_CLAIMS_DATABASE {url!r}: use sqlite:///path or postgresql://…")


class SqliteStore(_Store):
    """A file in WAL mode; BEGIN IMMEDIATE serialises writers across every worker process.

    One connection per process, used under a lock: with gevent workers a thread-local would be
    one connection per request.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.connection: sqlite3.Connection | None = None
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
        if self.connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.connection = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self.connection.execute("PRAGMA busy_timeout=30000")
        return self.connection

    def _transaction(self, work: Callable[[Run], Any], lock: str | None = None) -> Any:
        with self.lock:  # BEGIN IMMEDIATE serialises every writer of the file already: `lock` adds nothing
            try:
                connection = self._connect()
                connection.execute("BEGIN IMMEDIATE")
                try:
                    result = work(lambda sql, params: connection.execute(sql, params))
                    connection.execute("COMMIT")
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
                return result
            except sqlite3.Error as err:
                raise ClaimsUnavailable(f"the claims database {self.path} failed: {err}") from err

    def close(self) -> None:
        with self.lock:
            if self.connection is not None:
                self.connection.close()
                self.connection = None


class PostgresStore(_Store):
    """PostgreSQL via psycopg 3; a transaction-scoped advisory lock per instruction serialises its claims.

    One connection per process, used under a lock (see SqliteStore); it is opened again when broken.
    Every transaction, the wait for the lock included, is over within `timeout_seconds`: the server
    is told (statement_timeout), and a server that accepts and then never answers has the socket
    shut under it, which fails whatever psycopg is waiting for at once (the rollback included).
    """

    def __init__(self, url: str, timeout_seconds: float = 2.0) -> None:
        self.url = url
        self.timeout = timeout_seconds
        self.lock = threading.Lock()
        self.connection: Any = None
        self._migrate()

    def _migrate(self) -> None:
        def migrate(run: Run) -> None:
            run("SELECT pg_advisory_xact_lock(hashtextextended('opos-migrations', 0))", ())
            run("CREATE TABLE IF NOT EXISTS opos_schema_version (version INTEGER NOT NULL)", ())
            current = run("SELECT max(version) FROM opos_schema_version", ()).fetchone()
            done = current[0] if current and current[0] else 0
            for number, statement in enumerate(MIGRATIONS[done:], start=done + 1):
                run(statement, ())
                run("INSERT INTO opos_schema_version VALUES (?)", (number,))
            run(CLAIM_FUNCTION, ())

        self._transaction(migrate, pipeline=False)

    def claim(
        self, instruction: str, scope: str, probe_id: str, limit: int, address: str = "", per_address: int = 0
    ) -> ClaimResult:
        """One statement (opos_claim), so one round trip: what a claim costs is the database's own work."""
        sql = "SELECT o_granted, o_used, o_refusal FROM opos_claim(?, ?, ?, ?, ?, ?)"
        parameters = (instruction, scope, probe_id, limit, address, per_address)
        row = self._transaction(lambda run: run(sql, parameters).fetchone(), transaction=False)
        return ClaimResult(bool(row[0]), int(row[1]), row[2])

    def _connect(self) -> tuple[Any, bool]:
        """The connection, and whether it is new (bounded by libpq's connect_timeout: whole seconds, at least 2)."""
        if self.connection is None or self.connection.closed or self.connection.broken:
            seconds = max(2, math.ceil(self.timeout))
            self.connection = psycopg.connect(self.url, autocommit=True, connect_timeout=seconds)
            return self.connection, True
        return self.connection, False

    def _transaction(
        self, work: Callable[[Run], Any], lock: str | None = None, pipeline: bool = True, transaction: bool = True
    ) -> Any:
        """`work` in a transaction (pipelined), or as the single statement it is (its own transaction)."""
        if not self.lock.acquire(timeout=self.timeout):
            raise ClaimsUnavailable(f"the claims database is busy: no answer within {self.timeout:g} s")
        cut: list[bool] = []
        try:
            connection, new = self._connect()
            cancel = call_later(self.timeout, lambda: cut.append(_shut(connection)))
            try:
                if new:  # the server's own bound, for what waits on its side (a lock held elsewhere)
                    connection.execute(f"SET statement_timeout = {max(1, int(self.timeout * 1000))}")
                if not transaction:
                    return work(lambda sql, params: connection.execute(sql.replace("?", "%s"), params))
                with connection.pipeline() if pipeline else contextlib.nullcontext(), connection.transaction():
                    if lock is not None:
                        connection.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (lock,))
                    return work(lambda sql, params: connection.execute(sql.replace("?", "%s"), params))
            finally:
                cancel()
        except psycopg.Error as err:
            if cut:
                raise ClaimsUnavailable(f"the claims database did not answer within {self.timeout:g} s "
                                        "(OPOS_CLAIMS_TIMEOUT_SECONDS)") from err  # fmt: skip
            raise ClaimsUnavailable(f"the claims database failed: {_describe(err)}") from err
        finally:
            self.lock.release()

    def close(self) -> None:
        with self.lock:
            if self.connection is not None:
                self.connection.close()
                self.connection = None


def _shut(connection: Any) -> bool:
    """Shut the connection's socket (a duplicate of its descriptor: libpq keeps its own to close)."""
    with (
        contextlib.suppress(OSError, ValueError, psycopg.Error),
        socket.socket(fileno=os.dup(connection.fileno())) as duplicate,
    ):
        duplicate.shutdown(socket.SHUT_RDWR)
    return True


def _describe(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
