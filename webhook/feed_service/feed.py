"""The signed site over HTTP: the same paths a static mirror serves, with ETags and cache headers."""

from __future__ import annotations

import hashlib
import re

from flask import Blueprint, Response, abort, request

from webhook.feed_service.service import current

blueprint = Blueprint("feed", __name__)
_COMMIT = re.compile(r"[0-9a-f]{40}")
SHORT_CACHE = "public, max-age=30"
IMMUTABLE = "public, max-age=31536000, immutable"


def _json(data: bytes, etag: str, cache_control: str) -> Response:
    response = Response(data, mimetype="application/json")
    response.set_etag(etag)
    response.headers["Cache-Control"] = cache_control
    if request.if_none_match.contains_weak(etag):  # RFC 9110: If-None-Match compares weakly
        response.status_code = 304
        response.set_data(b"")
    return response


def _site_file(relative: str, missing: str, status: int = 404) -> bytes:
    """A file of the published site, as the sync wrote it; `status` with `missing` when there is none."""
    data = current().site.read(relative)
    if data is None:
        abort(status, missing)
    return data


def _by_contents(data: bytes, cache_control: str) -> Response:
    """`data` with an ETag made from its contents (for files that a commit does not name)."""
    return _json(data, hashlib.sha256(data).hexdigest()[:32], cache_control)


@blueprint.get("/v1/head.json")
def head() -> Response:
    data = _site_file("v1/head.json", "no feed is published yet: the first sync has not finished (see /healthz)", 503)
    return _by_contents(data, SHORT_CACHE)


@blueprint.get("/v1/feed.json")
def feed() -> Response:
    site = current().site
    data, document = site.read("v1/feed.json"), site.feed()
    if data is None or document is None:
        abort(503, "no feed is published yet: the first sync has not finished (see /healthz)")
    return _json(data, document.commit, SHORT_CACHE)


@blueprint.get("/v1/feed/<commit>.json")
def pinned(commit: str) -> Response:
    """A feed this service published, as the static file it wrote then: nothing is rendered on request."""
    missing = f"{commit} is not a commit this service has published (or its feed is past the retention)"
    data = _commit_file("feed", commit, missing)
    return _json(data, commit, IMMUTABLE)


def _commit_file(folder: str, commit: str, missing: str) -> bytes:
    """`v1/<folder>/<commit>.json` as the sync wrote it; 400 for what is not a commit, 404 when absent."""
    if not _COMMIT.fullmatch(commit):
        abort(400, "a commit is 40 lowercase hexadecimal characters")
    return _site_file(f"v1/{folder}/{commit}.json", missing)


@blueprint.get("/v1/cosignatures/<commit>.json")
def cosignatures(commit: str) -> Response:
    """The auditors' cosignatures of a published commit, as the file the sync wrote before its head."""
    data = _commit_file("cosignatures", commit, f"no auditor cosignatures of {commit} are published here")
    return _by_contents(data, SHORT_CACHE)


@blueprint.get("/v1/keys.json")
def key_document() -> Response:
    """The newest key document of the ledger (what probes that pin root keys walk to)."""
    data = _site_file("v1/keys.json", "this ledger has no key documents (probes pin the feed keys themselves)")
    return _by_contents(data, SHORT_CACHE)


@blueprint.get("/v1/keys/<version>.json")
def key_document_version(version: str) -> Response:
    """One version of the key document, as committed: never changed once published."""
    if not (len(version) <= 10 and version.isascii() and version.isdigit() and version[0] != "0"):
        abort(404, "a version is a number from 1")
    data = _site_file(f"v1/keys/{version}.json", f"there is no key document version {version}")
    return _by_contents(data, IMMUTABLE)
