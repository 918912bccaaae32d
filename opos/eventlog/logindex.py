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
import functools
import json
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from opos.errors import RepositoryError
from opos.eventlog import events as ev
from opos.lru import LRU, Serialised
from opos.model import CommitHash, Target, normalise_network, parse_time
from opos.trust.verification import Verification

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (ord INTEGER PRIMARY KEY, commit_id TEXT NOT NULL, data TEXT NOT NULL);
"""


Period = Literal["window", "time"]
INDEX_FORMAT = "3"  # 2: events carry their approvers; 3: keys-rotated events


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
        # what events() read last: the head, the index's generation (new at each rebuild), events, last ord
        self._loaded: tuple[str | None, str | None, list[ev.Event], int] = (None, None, [], 0)

    @classmethod
    def for_verification(cls, verification: Verification) -> LogIndex:
        """The index of a verified history: one object per file in a process, so what it read stays read."""
        path = verification.ledger.state.log_index_file(verification.scope)
        index = _indexes.get(path)
        if index is None:
            index = cls(path)
            _indexes.put(path, index)
        return index

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
        with contextlib.closing(self._connect()) as connection:
            meta = dict(connection.execute("SELECT key, value FROM meta").fetchall())
        # an index of an older format (without generations, or approvers) is built again whole
        known = meta.get("head") if meta.get("format") == INDEX_FORMAT and "generation" in meta else None
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
        # a new index, or the indexed head is not on the chain (history was rewritten): build it whole
        rebuild = known is None or commit is None
        generation = secrets.token_hex(8) if rebuild else meta.get("generation")
        added: list[ev.Event] = []
        connection = self._connect()
        try:
            connection.execute("BEGIN IMMEDIATE")
            if rebuild:
                connection.execute("DELETE FROM events")
                connection.execute("INSERT OR REPLACE INTO meta VALUES ('generation', ?)", (generation,))
                connection.execute("INSERT OR REPLACE INTO meta VALUES ('format', ?)", (INDEX_FORMAT,))
            signer_of = self._signer(verification)
            for step in reversed(chain):
                accepted = verification.verifier.cache.get(step)
                if accepted is None:
                    raise RepositoryError(f"{step} is not verified: verify the history before indexing it")
                parents = ledger.commit(step).parents
                parent = parents[0] if parents and step != verification.trust_root else None
                added += ev.step_events(
                    ledger, parent, step, accepted.sequence, signer_of, verification.checked, accepted.approvers
                )
            rows = [(event.commit, _stored_text(event)) for event in added]
            connection.executemany("INSERT INTO events (commit_id, data) VALUES (?, ?)", rows)
            connection.execute("INSERT OR REPLACE INTO meta VALUES ('head', ?)", (head,))
            last_ord = connection.execute("SELECT coalesce(max(ord), 0) FROM events").fetchone()[0]
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        finally:
            connection.close()
        self._keep(known, head, generation, rebuild, added, last_ord)

    def _keep(self, known: str | None, head: str, generation: str | None, rebuild: bool, added: list[ev.Event],
              last_ord: int) -> None:  # fmt: skip
        """What events() would read back, kept in hand: the events just indexed after those already read."""
        loaded_head, loaded_generation, loaded, _ = self._loaded
        if rebuild or (loaded_head, loaded_generation) == (known, generation):
            self._loaded = (head, generation, ([] if rebuild else loaded) + added, last_ord)

    @staticmethod
    def _signer(verification: Verification) -> ev.SignerOf:
        def signer_of(commit: CommitHash) -> tuple[str | None, str | None]:
            accepted = verification.verifier.cache.get(commit)
            if accepted is None or accepted.signer is None:
                return None, None
            return accepted.signer.principal, accepted.signer.fingerprint

        return signer_of

    def events(self) -> list[ev.Event]:
        """Every stored event, oldest first: one list per indexed commit, read from where the last one ended."""
        with contextlib.closing(self._connect()) as connection:
            meta = dict(connection.execute("SELECT key, value FROM meta").fetchall())
            head, generation = meta.get("head"), meta.get("generation")
            loaded_head, loaded_generation, loaded, last_ord = self._loaded
            if head is not None and (loaded_head, loaded_generation) == (head, generation):
                return loaded
            if generation is None or generation != loaded_generation:  # rebuilt (or new): read it all
                loaded, last_ord = [], 0
            rows = connection.execute("SELECT ord, data FROM events WHERE ord > ? ORDER BY ord", (last_ord,)).fetchall()
        events = [*loaded, *(_stored_event(data) for _, data in rows)]
        self._loaded = (head, generation, events, rows[-1][0] if rows else last_ord)
        return events


_indexes: LRU[Path, LogIndex] = LRU(8)


@dataclass(frozen=True)
class _Version:
    test: str
    target: Target
    start: dt.datetime
    end: dt.datetime


@dataclass(frozen=True)
class _Entry:
    """One event as queries see it: parsed once per indexed commit, not once per query."""

    key: tuple[str, int]  # (time, order): the sort key and what a cursor names
    event: ev.Event

    @functools.cached_property
    def moment(self) -> dt.datetime:
        return parse_time(self.event.time)

    @functools.cached_property
    def versions(self) -> tuple[_Version, ...]:
        """The instruction before and after (or its subject), parsed when a query first needs them."""
        return _versions(self.event)


@dataclass(frozen=True)
class _Timeline:
    """Every stored event and every `expired` event there can be, newest first.

    An `expired` event exists once its window's end has passed, so the timeline holds them all
    and a query skips those still in its future. Keys are canonical whether a timeline was built
    whole or extended: stored event i is (time, 2i), the expiry of its version (time, 2i + 1).
    """

    stored: list[ev.Event]  # kept so that the list's id, the cache key, cannot be reused
    entries: list[_Entry]
    by_instruction: dict[str, list[int]]  # instruction -> the indexes of its stored events

    @functools.cached_property
    def targets(self) -> dict[str, set[Target]]:
        """Every target each instruction has had: a query for a country or network walks only the entries of
        instructions one of whose targets takes it."""
        found: dict[str, set[Target]] = {}
        for entry in self.entries:
            for version in entry.versions:
                found.setdefault(entry.event.instruction, set()).add(version.target)
        return found

    def instructions_taking(self, country: str | None, network: str | None) -> set[str]:
        return {name for name, targets in self.targets.items() if any(t.takes(country, network) for t in targets)}


def _versions(event: ev.Event) -> tuple[_Version, ...]:
    if not event.about_instruction:
        return ()
    found = [v for v in (event.after, event.before) if v is not None] or [event.subject]
    return tuple(
        _Version(
            v["test"], Target.from_json(v["target"]), parse_time(v["window"]["start"]), parse_time(v["window"]["end"])
        )
        for v in found
    )


def _timeline(stored: list[ev.Event]) -> _Timeline:
    """The timeline of `stored`: the cached one, or the last one extended by the events added since."""
    cached = _timelines.get("last")
    if cached is not None and cached.stored is stored:
        return cached
    known = len(cached.stored) if cached is not None else 0
    grew = cached is not None and 0 < known <= len(stored) and stored[known - 1] is cached.stored[-1]
    timeline = _extended(cached if cached is not None and grew else _Timeline([], [], {}), stored)
    _timelines["last"] = timeline  # one history at a time: the newest list replaces the last
    return timeline


def _extended(timeline: _Timeline, stored: list[ev.Event]) -> _Timeline:
    """`timeline` with the events of `stored` past its own (the expiries of the instructions they touch redone)."""
    known = len(timeline.stored)
    by_instruction = {name: list(indexes) for name, indexes in timeline.by_instruction.items()}
    touched: set[str] = set()
    for index in range(known, len(stored)):
        event = stored[index]
        by_instruction.setdefault(event.instruction, []).append(index)
        touched.add(event.instruction)
    position = {id(stored[i]): i for name in touched for i in by_instruction[name]}
    kept = [e for e in timeline.entries if not (e.key[1] % 2 and e.event.instruction in touched)]
    added = [_Entry((stored[i].time, 2 * i), stored[i]) for i in range(known, len(stored))]
    for source, expired in ev.expirations(stored[i] for name in touched for i in by_instruction[name]):
        added.append(_Entry((expired.time, 2 * position[id(source)] + 1), expired))
    entries = sorted([*kept, *added], key=lambda entry: entry.key, reverse=True)
    return _Timeline(stored, entries, by_instruction)


_timelines: dict[str, _Timeline] = {}


def _matches(entry: _Entry, query: LogQuery, country: str | None, network: str | None) -> bool:
    """Whether the entry is on the query's page; `country` and `network` are the query's, normalised."""
    event = entry.event
    if not event.about_instruction:  # who may sign, and the limits: shown unless the query is about instructions
        if query.instruction or query.test or query.country or query.network:
            return False
        return (query.since is None or entry.moment >= query.since) and (
            query.until is None or entry.moment < query.until
        )
    if query.instruction and event.instruction != query.instruction:
        return False
    if query.test and not any(v.test == query.test for v in entry.versions):
        return False
    if (query.country or query.network) and not any(v.target.takes(country, network) for v in entry.versions):
        return False
    if query.period == "time":
        return (query.since is None or entry.moment >= query.since) and (
            query.until is None or entry.moment < query.until
        )
    if query.since is None and query.until is None:
        return True
    return any(
        (query.until is None or v.start < query.until) and (query.since is None or v.end > query.since)
        for v in entry.versions
    )


def select(stored: list[ev.Event], now: dt.datetime, query: LogQuery) -> tuple[list[ev.Event], str | None]:
    """A page of events, newest first, and the cursor of the next page (None on the last).

    The events are parsed and sorted once per list (the index hands out one list per indexed
    commit), and a page stops being searched once it is full.
    """
    after = decode_cursor(query.cursor) if query.cursor else None
    country = query.country.upper() if query.country else None
    network = normalise_network(query.network) if query.network else None
    page: list[_Entry] = []
    more = False
    timeline = _timeline(stored)
    # a filter by place: only the entries of instructions that ever targeted it can match (a necessary condition)
    taking = timeline.instructions_taking(country, network) if country or network else None
    for entry in timeline.entries:
        if taking is not None and entry.event.instruction not in taking:
            continue
        if after is not None and entry.key >= after:
            continue
        if entry.event.action == "expired" and entry.moment > now:
            continue  # its window has not ended yet
        if _matches(entry, query, country, network):
            if len(page) == query.limit:
                more = True
                break
            page.append(entry)
    cursor = base64.urlsafe_b64encode(json.dumps(list(page[-1].key)).encode()).decode() if more and page else None
    return [entry.event for entry in page], cursor


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


def log_json(events: list[ev.Event]) -> bytes:
    """`json.dumps(log_document(events, None), ensure_ascii=False)`, byte for byte, each event serialised once per
    process: the site's v1/log.json is written again at every sync, and nearly all its events are old."""
    _serialised.trim(len(events))
    parts = [_serialised.get(id(event), event, functools.partial(_event_json, event)) for event in events]
    return ('{"events": [' + ", ".join(parts) + '], "next": null}').encode()


def _event_json(event: ev.Event) -> str:
    return json.dumps(event.to_json(), ensure_ascii=False)


def _stored_event(data: str) -> ev.Event:
    """An event read from the index, its stored text kept for log_json."""
    event = ev.Event(**json.loads(data))
    _keep_text(event, data)
    return event


def _stored_text(event: ev.Event) -> str:
    """An event's text for the index, kept for log_json (a first render's 10,000 events)."""
    data = json.dumps(event.to_json())
    _keep_text(event, data)
    return data


def _keep_text(event: ev.Event, data: str) -> None:
    """The index's text of an event is what log_json makes of it unless it escapes a character (it is stored with
    ensure_ascii): kept, so that no process serialises ten thousand events a second time."""
    if "\\u" not in data:
        _serialised.get(id(event), event, lambda: data)


_serialised: Serialised[int, str] = Serialised()  # each event's JSON, by the event's identity
