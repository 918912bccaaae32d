"""HTTP for the probe: bounded in size and time, through any mirror, optionally domain-fronted.

Every failure becomes a FetchFailed with a reason a person can read; the caller moves on to the
next mirror. Nothing here trusts what it downloads: verification is the caller's.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from opos.errors import OposError


class FetchFailed(OposError):
    """A mirror did not give a usable answer (unreachable, slow, too large, an HTTP error)."""


@dataclass(frozen=True)
class Mirror:
    """A base URL to connect to; `host`, when set, is sent as the Host header (a fronted domain)."""

    url: str
    host: str | None = None

    @classmethod
    def parse(cls, text: str) -> Mirror:
        """`https://cdn.example/opos`, or `https://front.example/opos#host=hidden.example` to front a domain."""
        url, _, host = text.partition("#host=")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{text!r} is not an http(s) URL (like https://mirror.example/opos)")
        return cls(url.rstrip("/"), host or None)

    def __str__(self) -> str:
        return self.url if self.host is None else f"{self.url} (Host: {self.host})"


@dataclass(frozen=True)
class Limits:
    connect_seconds: float = 10.0
    total_seconds: float = 30.0  # for a whole answer, however slowly it trickles
    gap_seconds: float = 10.0  # the longest silence while reading
    head_bytes: int = 64 * 1024
    feed_bytes: int = 16 * 1024 * 1024


@dataclass(frozen=True)
class Answer:
    status: int  # 200 or 304
    body: bytes
    etag: str | None


def get(mirror: Mirror, path: str, max_bytes: int, limits: Limits, etag: str | None = None) -> Answer:
    """GET mirror.url/path. Raises FetchFailed; answers 200 (with the body) or 304."""
    return _request("GET", mirror, path, None, max_bytes, limits, etag)


def post(mirror: Mirror, path: str, document: Any, limits: Limits) -> Answer:
    """POST a JSON document to mirror.url/path; a 200 answer of at most 64 KiB, or FetchFailed."""
    return _request("POST", mirror, path, json.dumps(document).encode(), 64 * 1024, limits, None)


def _request(
    method: str, mirror: Mirror, path: str, body: bytes | None, max_bytes: int, limits: Limits, etag: str | None
) -> Answer:
    parts = urlsplit(mirror.url)
    deadline = time.monotonic() + limits.total_seconds
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(
            parts.hostname or "", parts.port, timeout=limits.connect_seconds, context=ssl.create_default_context()
        )
    else:
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=limits.connect_seconds)
    headers = {"Accept": "application/json", "User-Agent": "opos-probe/1", "Accept-Encoding": "identity"}
    if mirror.host:
        headers["Host"] = mirror.host
    if etag:
        headers["If-None-Match"] = etag
    if body is not None:
        headers["Content-Type"] = "application/json"
    try:
        connection.connect()
        if connection.sock is not None:
            connection.sock.settimeout(limits.gap_seconds)
        connection.request(method, parts.path.rstrip("/") + "/" + path, body=body, headers=headers)
        response = connection.getresponse()
        if response.status == 304 and method == "GET":
            return Answer(304, b"", etag)
        if response.status != 200:
            raise FetchFailed(f"HTTP {response.status} for {path}")
        declared = response.getheader("Content-Length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise FetchFailed(f"{path} is {declared} bytes; the limit is {max_bytes}")
        chunks: list[bytes] = []
        size = 0
        while True:
            if time.monotonic() > deadline:
                raise FetchFailed(f"{path} took longer than {limits.total_seconds:g} s")
            chunk = response.read1(65536)
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:
                raise FetchFailed(f"{path} is larger than the limit of {max_bytes} bytes")
            chunks.append(chunk)
        return Answer(200, b"".join(chunks), response.getheader("ETag"))
    except FetchFailed:
        raise
    except TimeoutError:
        raise FetchFailed(f"{path}: no answer within the time limit") from None
    except socket.gaierror as err:
        raise FetchFailed(f"cannot resolve {parts.hostname}: {err.strerror}") from None
    except UnicodeError:
        raise FetchFailed(f"cannot resolve {parts.hostname}: not a valid host name") from None
    except ConnectionRefusedError:
        raise FetchFailed(f"connection refused by {parts.hostname}:{parts.port or ''}") from None
    except (OSError, http.client.HTTPException) as err:
        raise FetchFailed(f"{path}: {type(err).__name__}: {err}") from None
    finally:
        connection.close()
