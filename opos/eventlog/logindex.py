"""The event log's index: SQLite beside the repository, built from git, extended as the branch moves.

The history is the source of truth: the index only remembers events already derived from it
(rebuilt from git when missing, deleted or out of step with a rewritten history). Queries load
the events once per indexed commit and filter them in memory; `expired` events are derived at
query time, since they depend on the moment of asking.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from opos.errors import RepositoryError
from opos.eventlog import events as ev
from opos.model import CommitHash, Target, parse_time
from opos.trust.verification import Verification

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (ord INTEGER PRIMARY KEY, commit_id TEXT NOT NULL, data TEXT NOT NULL);
"""


Period = Literal["window", "time"]


@dataclass(frozen=True)
class LogQuery:
    country: str | None = None
    network: str | None = None
    test: str | None = None
    instruction: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    period: Period = "window"  # "window": the instruction's window overlaps [since, until); "time": the event's time
    cursor: str | None = None
    limit: int = 100


class LogIndex:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._loaded: tuple[str | None, list[ev.Event]] = (None, [])

    @classmethod
    def for_verification(cls, verification: Verification) -> LogIndex:
        return cls(verification.ledger.state.log_index_file(verification.scope))

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.executescript(SCHEMA)
        return connection

    def indexed(self) -> str | None:
        with contextlib.closing(self._connect()) as connection:
            row = connection.execute("SELECT value FROM meta WHERE key = 'head'").fetchone()
        return str(row[0]) if row else None

    def update(self, verification: Verification, head: CommitHash) -> None:
        """Index the first-parent steps from what is indexed to `head` (verified), or rebuild."""
        ledger = verification.ledger
        known = self.indexed()
        chain: list[CommitHash] = []
        commit: CommitHash | None = head
        while commit is not None and commit != known:
            chain.append(commit)
            if commit == verification.trust_root:
                commit = None
                break
            parents = ledger.commit(commit).parents
            if not parents:
                raise RepositoryError(f"{head} does not descend from the trust root along first parents")
            commit = parents[0]
        rebuild = commit is None and known is not None  # the indexed head is not on the chain: history was rewritten
        connection = self._connect()
        try:
            connection.execute("BEGIN IMMEDIATE")
            if rebuild:
                connection.execute("DELETE FROM events")
            rows = []
            for step in reversed(chain):
                accepted = verification.verifier.cache.get(step)
                if accepted is None:
                    raise RepositoryError(f"{step} is not verified: verify the history before indexing it")
                parents = ledger.commit(step).parents
                parent = parents[0] if parents and step != verification.trust_root else None
                for event in ev.step_events(ledger, parent, step, accepted.sequence, self._signer(verification)):
                    rows.append((step, json.dumps(event.to_json())))
            connection.executemany("INSERT INTO events (commit_id, data) VALUES (?, ?)", rows)
            connection.execute("INSERT OR REPLACE INTO meta VALUES ('head', ?)", (head,))
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        finally:
            connection.close()

    @staticmethod
    def _signer(verification: Verification) -> ev.SignerOf:
        def signer_of(commit: CommitHash) -> tuple[str | None, str | None]:
            accepted = verification.verifier.cache.get(commit)
            if accepted is None or accepted.signer is None:
                return None, None
            return accepted.signer.principal, accepted.signer.fingerprint

        return signer_of

    def events(self) -> list[ev.Event]:
        """Every stored event, oldest first (cached until the index moves)."""
        head = self.indexed()
        if self._loaded[0] != head or head is None:
            with contextlib.closing(self._connect()) as connection:
                rows = connection.execute("SELECT data FROM events ORDER BY ord").fetchall()
            self._loaded = (head, [ev.Event(**json.loads(row[0])) for row in rows])
        return self._loaded[1]


def _overlaps(instruction: dict[str, Any], since: dt.datetime | None, until: dt.datetime | None) -> bool:
    start, end = parse_time(instruction["window"]["start"]), parse_time(instruction["window"]["end"])
    return (until is None or start < until) and (since is None or end > since)


def _matches(event: ev.Event, query: LogQuery) -> bool:
    if not event.about_instruction:  # who may sign, and the limits: shown unless the query is about instructions
        if query.instruction or query.test or query.country or query.network:
            return False
        moment = parse_time(event.time)
        return (query.since is None or moment >= query.since) and (query.until is None or moment < query.until)
    versions = [v for v in (event.after, event.before) if v is not None] or [event.subject]
    if query.instruction and event.instruction != query.instruction:
        return False
    if query.test and not any(v["test"] == query.test for v in versions):
        return False
    if (query.country or query.network) and all(
        Target.from_json(v["target"]).excludes(query.country, query.network) for v in versions
    ):
        return False
    if query.period == "time":
        moment = parse_time(event.time)
        return (query.since is None or moment >= query.since) and (query.until is None or moment < query.until)
    return any(_overlaps(v, query.since, query.until) for v in versions)


def select(stored: list[ev.Event], now: dt.datetime, query: LogQuery) -> tuple[list[ev.Event], str | None]:
    """A page of events, newest first, and the cursor of the next page (None on the last)."""
    expired = ev.expired_events(stored, now)
    keyed = [((e.time, i), e) for i, e in enumerate([*stored, *expired])]
    keyed.sort(key=lambda item: item[0], reverse=True)
    if query.cursor:
        after = decode_cursor(query.cursor)
        keyed = [item for item in keyed if item[0] < after]
    chosen = [item for item in keyed if _matches(item[1], query)]
    page = chosen[: query.limit]
    more = len(chosen) > query.limit
    cursor = base64.urlsafe_b64encode(json.dumps(list(page[-1][0])).encode()).decode() if more and page else None
    return [event for _, event in page], cursor


def decode_cursor(cursor: str) -> tuple[str, int]:
    """The position a `next` cursor names: (time, order). Raises ValueError for anything we did not make."""
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, RecursionError) as err:
        raise ValueError(f"not a cursor: {err}") from None
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and type(value[1]) is int):
        raise ValueError("not a cursor")
    return value[0], value[1]


def log_document(events: list[ev.Event], cursor: str | None) -> dict[str, Any]:
    """The shape of /v1/log.json, `opos log --json` and the site's v1/log.json."""
    return {"events": [e.to_json() for e in events], "next": cursor}
