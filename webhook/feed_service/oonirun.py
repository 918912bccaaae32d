"""The OONI Run v2 bridge (docs/oonirun.md): one link whose answers follow from the signed feed alone.

    GET  /api/v2/oonirun/links/{id}                                the link: what every probe runs now
    POST /api/v2/oonirun/links/{id}/engine-descriptor/{revision}   what a probe of a country and network runs
    GET  /api/v2/oonirun/links/{id}/revisions                      the revisions (feed sequences) it answers for

Each answer names the feed it was derived from (X-OPOS-Commit, X-OPOS-Sequence), so anyone can derive it again
(`opos audit --oonirun`). Answers are kept per (feed, country, network) until a window opens or closes: a
request costs a lookup, never a render.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, abort, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from opos.instructions import oonirun
from opos.instructions.oonirun import Bridge, LinkSettings
from opos.instructions.oonirun_meta import META_MAX_BYTES, MetaInvalid, parse_meta
from opos.lru import LRU
from opos.publish import bridge as site_bridge
from opos.publish.bridge import Bridged
from opos.signing.documents import Feed
from webhook.body import read_body
from webhook.feed_service.feed import SHORT_CACHE
from webhook.feed_service.service import Service, current

blueprint = Blueprint("oonirun", __name__)
_REVISION = re.compile(r"latest|[0-9]{1,20}")
PREFIX = "/api/v2/oonirun/links/<link_id>"
Derive = Callable[[Bridge, dt.datetime], tuple[dict[str, Any], dt.datetime | None]]


@dataclass(frozen=True)
class _Answer:
    body: bytes
    commit: str
    sequence: int
    until: dt.datetime | None  # when a window of what it lists opens or closes: it is derived again then

    @functools.cached_property
    def etag(self) -> str:  # once per answer, not per request: apps poll the link
        return hashlib.sha256(self.body).hexdigest()[:32]


class Answers:
    """The bridges of recent feeds and the answers given, per worker (the app's extensions["opos-oonirun"])."""

    def __init__(self) -> None:
        self._bridges: LRU[str, Bridged] = LRU(16)
        self._answers: LRU[tuple[object, ...], _Answer] = LRU(4096)
        self._sequences: tuple[object, dict[int, str]] = (None, {})
        self._lock = threading.Lock()

    def sequences(self, service: Service) -> dict[int, str]:
        """Which commit each kept feed's sequence is, read once per version of the site's file."""
        version, data = service.site.versioned(site_bridge.SEQUENCES)
        if version is None or data is None:
            return {}
        if self._sequences[0] != version:
            self._sequences = (version, dict(site_bridge.parse_sequences(data)))
        return self._sequences[1]

    def bridged(self, feed: Feed) -> Bridged:
        """What of the served feed crosses, indexed once per feed."""
        with self._lock:
            known = self._bridges.get(feed.commit)
        if known is None:
            known = site_bridge.bridged_of(feed)
            with self._lock:
                self._bridges.put(feed.commit, known)
        return known

    def source(self, service: Service, revision: str) -> Bridged:
        """What answers for `latest` (the served feed) or for a kept revision (its small bridged file); 404 when
        there is none."""
        if revision == "latest":
            return self.bridged(_served(service))
        commit = self.sequences(service).get(int(revision))
        with self._lock:
            known = self._bridges.get(commit) if commit else None
        if known is not None:
            return known
        data = service.site.read(site_bridge.bridged_path(commit)) if commit else None
        found = site_bridge.read_bridged(data) if data is not None else None
        if found is None or found.sequence != int(revision):
            abort(404, f"revision {revision} is not a feed this service keeps: ask for `latest`, or one of …/revisions")
        with self._lock:
            self._bridges.put(found.commit, found)
        return found

    def get(self, key: tuple[object, ...], now: dt.datetime) -> _Answer | None:
        with self._lock:
            answer = self._answers.get(key)
        return answer if answer is not None and (answer.until is None or now < answer.until) else None

    def put(self, key: tuple[object, ...], answer: _Answer) -> _Answer:
        with self._lock:
            self._answers.put(key, answer)
        return answer


def answers() -> Answers:
    kept: Answers = current_app.extensions["opos-oonirun"]
    return kept


def _served(service: Service) -> Feed:
    feed = service.site.feed()
    if feed is None:
        abort(503, "no feed is published yet: the first sync has not finished (see /healthz)")
    return feed


def _settings(service: Service, link_id: str) -> LinkSettings:
    settings = service.oonirun
    if settings is None or link_id != settings.link_id:
        abort(404, "OONI Run link not found")
    return settings


def _send(answer: _Answer, cache_control: str) -> Response:
    response = Response(answer.body, mimetype="application/json")
    response.headers["X-OPOS-Commit"] = answer.commit
    response.headers["X-OPOS-Sequence"] = str(answer.sequence)
    response.headers["Cache-Control"] = cache_control
    return response


def _answer(source: Bridged, key: tuple[object, ...], derive: Derive) -> _Answer:
    """The answer kept for `key`, or derived now from the source's bridge and kept until a window changes it."""
    now = dt.datetime.now(dt.UTC)
    kept = answers()
    answer = kept.get(key, now)
    if answer is None:
        document, until = derive(source.bridge, now)
        answer = kept.put(key, _Answer(oonirun.to_bytes(document), source.commit, source.sequence, until))
    return answer


@blueprint.get(PREFIX)
def link(link_id: str) -> ResponseReturnValue:
    service = current()
    settings = _settings(service, link_id)
    feed, head = _served(service), service.site.head()
    expires = head.expires if head is not None and head.commit == feed.commit else dt.datetime.now(dt.UTC)
    answer = _answer(
        answers().bridged(feed),
        ("link", feed.commit, expires),
        lambda bridge, now: oonirun.link(settings, bridge, feed.sequence, feed.committed, expires, now),
    )
    response = _send(answer, SHORT_CACHE)
    response.set_etag(answer.etag)
    return response.make_conditional(request)


@blueprint.post(f"{PREFIX}/engine-descriptor/<revision>")
def engine_descriptor(link_id: str, revision: str) -> ResponseReturnValue:
    service = current()
    _settings(service, link_id)
    if not _REVISION.fullmatch(revision):
        problem = {"type": "string_pattern_mismatch", "loc": ["path", "revision_number"],
                   "msg": "invalid revision number specified, must be 'latest' or a number"}  # fmt: skip
        return jsonify(error="Unprocessable Entity", detail=[problem]), 422
    request.max_content_length = META_MAX_BYTES  # 413 past it, before a byte is read
    try:
        meta = parse_meta(read_body())
    except MetaInvalid as err:
        name = "Unprocessable Entity" if err.status == 422 else "Bad Request"
        return jsonify(error=name, detail=err.detail), err.status
    source = answers().source(service, revision)
    country, network = meta.country, meta.network
    answer = _answer(source, ("engine", source.commit, country, network),
                     lambda bridge, now: oonirun.engine_descriptor(bridge, source.sequence, source.committed, now,
                                                                   country, network))  # fmt: skip
    return _send(answer, "no-store")


@blueprint.get(f"{PREFIX}/revisions")
def revisions(link_id: str) -> ResponseReturnValue:
    service = current()
    _settings(service, link_id)
    feed = _served(service)
    kept = answers().sequences(service)
    document = oonirun.revisions([sequence for sequence in kept if sequence <= feed.sequence] + [feed.sequence])
    return _send(_Answer(oonirun.to_bytes(document), feed.commit, feed.sequence, None), SHORT_CACHE)
