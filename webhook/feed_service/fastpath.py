"""The two paths every probe polls, answered before Flask: the head and the feed, from bytes prepared once.

A poll is nearly always a conditional GET of /v1/head.json answered 304. Through Flask that costs
some 60 µs of request context and response building; a plain WSGI callable in front answers it
from headers computed once per published file, with the same status, body and headers as the
Flask routes in webhook/feed_service/feed.py (which still answer everything else: other methods, query
strings, and the 503 before the first sync).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from webhook.feed_service import metrics
from webhook.feed_service.feed import SHORT_CACHE
from webhook.feed_service.site_files import SiteFiles, Version

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


@dataclass(frozen=True)
class _Prepared:
    version: Version
    body: bytes
    etag: str  # quoted
    full: list[tuple[str, str]]  # the 200's headers
    not_modified: list[tuple[str, str]]  # the 304's


class FastPath:
    """WSGI middleware: GET and HEAD of the head and the feed, with ETag and If-None-Match."""

    PATHS = ("/v1/head.json", "/v1/feed.json")

    def __init__(self, app: WSGIApplication, site: SiteFiles, extra_headers: dict[str, str]) -> None:
        self.app = app
        self.site = site
        self.extra = list(extra_headers.items())
        self._prepared: dict[str, _Prepared] = {}
        self._lock = threading.Lock()
        self._counters = {
            (p, status): metrics.REQUESTS.labels(p, status) for p in self.PATHS for status in ("200", "304")
        }

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if (
            path not in self.PATHS
            or environ.get("REQUEST_METHOD") not in ("GET", "HEAD")
            or environ.get("QUERY_STRING")
        ):
            return self.app(environ, start_response)
        prepared = self._prepare(path)
        if prepared is None:  # nothing published yet: Flask says so, with its 503
            return self.app(environ, start_response)
        if _matches(environ.get("HTTP_IF_NONE_MATCH"), prepared.etag):
            self._counters[path, "304"].inc()
            start_response("304 NOT MODIFIED", prepared.not_modified)
            return [b""]
        self._counters[path, "200"].inc()
        start_response("200 OK", prepared.full)
        return [b""] if environ["REQUEST_METHOD"] == "HEAD" else [prepared.body]

    def _prepare(self, path: str) -> _Prepared | None:
        relative = path.removeprefix("/")
        version, data = self.site.versioned(relative)
        if version is None or data is None:
            return None
        with self._lock:
            prepared = self._prepared.get(path)
        if prepared is not None and prepared.version == version:
            return prepared
        if path == "/v1/head.json":
            tag = hashlib.sha256(data).hexdigest()[:32]
        else:
            feed = self.site.feed()
            if feed is None:
                return None
            tag = feed.commit
        etag = f'"{tag}"'
        common = [("ETag", etag), ("Cache-Control", SHORT_CACHE), *self.extra]
        full = [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *common]
        prepared = _Prepared(version, data, etag, full, common)
        with self._lock:
            self._prepared[path] = prepared
        return prepared


def _matches(header: str | None, etag: str) -> bool:
    """If-None-Match against a strong tag: weak comparison, as RFC 9110 asks for GET."""
    if not header:
        return False
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False
