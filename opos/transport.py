"""Fetching for the probe: bounded in size and time, through any mirror, optionally domain-fronted.

`Fetcher` owns the limits, as python-tuf's FetcherInterface does: one deadline for the whole
exchange and a cap on the body, whatever the transport. A transport (`HttpFetcher` over sockets,
or an in-memory one in tests) only opens an exchange and hands over the status, the headers and
the body in pieces. Every failure becomes a FetchFailed with a reason a person can read; the caller
moves on to the next mirror. Nothing here trusts what it downloads: verification is the caller's.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import SplitResult, urlsplit

from opos.errors import FetchFailed


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
    total_seconds: float = 30.0  # for a whole exchange, however slowly it trickles
    gap_seconds: float = 10.0  # the longest silence while reading
    head_bytes: int = 64 * 1024
    feed_bytes: int = 16 * 1024 * 1024
    answer_bytes: int = 64 * 1024  # a claims answer


@dataclass(frozen=True)
class Answer:
    status: int  # 200 or 304
    body: bytes
    etag: str | None


class Reply(NamedTuple):
    status: int
    body: bytes
    retry_after: str | None  # the answer's Retry-After, as sent


class Fetched(NamedTuple):
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes


class Deadline:
    """The one moment by which an exchange must be over."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        return self.at - time.monotonic()

    def check(self, what: str) -> None:
        if self.left() <= 0:
            raise FetchFailed(f"{what} took longer than {self.seconds:g} s")


@dataclass
class Exchange:
    """What a transport hands over: the status, the headers (lower-case names) and the body in pieces."""

    status: int
    headers: Mapping[str, str]
    body: Iterator[bytes]


class Fetcher(ABC):
    """GET and POST with the limits applied; subclasses supply `_open`, the transport."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()

    @abstractmethod
    def _open(
        self, method: str, mirror: Mirror, path: str, body: bytes | None, headers: dict[str, str], deadline: Deadline
    ) -> contextlib.AbstractContextManager[Exchange]:
        """Start the exchange; raise FetchFailed when it cannot be had. Reads must not outlive `deadline`."""

    def get(self, mirror: Mirror, path: str, max_bytes: int, etag: str | None = None) -> Answer:
        """GET mirror.url/path: 200 with the body, or 304 in answer to `etag`. Raises FetchFailed."""
        headers = {"If-None-Match": etag} if etag else {}
        deadline = Deadline(self.limits.total_seconds)
        with self._open("GET", mirror, path, None, _headers(mirror, headers), deadline) as exchange:
            if exchange.status == 304 and etag:
                return Answer(304, b"", etag)
            if exchange.status == 304:
                raise FetchFailed(f"HTTP 304 for {path}, but nothing was asked for with If-None-Match")
            if exchange.status != 200:
                raise FetchFailed(f"HTTP {exchange.status} for {path}")
            return Answer(200, _read(exchange, path, max_bytes, deadline), exchange.headers.get("etag"))

    def post(self, mirror: Mirror, path: str, document: Any) -> Answer:
        """POST a JSON document to mirror.url/path; a 200 answer of at most answer_bytes, or FetchFailed."""
        reply = self.send(mirror, path, json.dumps(document).encode())
        if reply.status != 200:
            raise FetchFailed(f"HTTP {reply.status} for {path}")
        return Answer(200, reply.body, None)

    def send(self, mirror: Mirror, path: str, body: bytes) -> Reply:
        """POST `body` (JSON) to mirror.url/path: the status, at most answer_bytes of the answer and its
        Retry-After, whatever the status (a refusal's body says why). Raises FetchFailed."""
        fetched = self.request("POST", mirror, path, body, self.limits.answer_bytes)
        return Reply(fetched.status, fetched.body, fetched.headers.get("retry-after"))

    def request(self, method: str, mirror: Mirror, path: str, body: bytes | None, max_bytes: int) -> Fetched:
        """Any exchange (a JSON `body` for POST), bounded as the others: its status, headers and at most
        `max_bytes` of its body, whatever the status. Raises FetchFailed."""
        deadline = Deadline(self.limits.total_seconds)
        headers = _headers(mirror, {"Content-Type": "application/json"} if body is not None else {})
        with self._open(method, mirror, path, body, headers, deadline) as exchange:
            return Fetched(exchange.status, exchange.headers, _read(exchange, path, max_bytes, deadline))


def _headers(mirror: Mirror, extra: dict[str, str]) -> dict[str, str]:
    headers = {"Accept": "application/json", "User-Agent": "opos-probe/1", "Accept-Encoding": "identity", **extra}
    if mirror.host:  # a fronted domain: the connection goes to mirror.url, the request names the host behind it
        headers["Host"] = mirror.host
    return headers


def _read(exchange: Exchange, path: str, max_bytes: int, deadline: Deadline) -> bytes:
    declared = exchange.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise FetchFailed(f"{path} is {declared} bytes; the limit is {max_bytes}")
    chunks: list[bytes] = []
    size = 0
    for chunk in exchange.body:
        deadline.check(path)
        size += len(chunk)
        if size > max_bytes:
            raise FetchFailed(f"{path} is larger than the limit of {max_bytes} bytes")
        chunks.append(chunk)
    deadline.check(path)
    return b"".join(chunks)


class HttpFetcher(Fetcher):
    """HTTP and HTTPS over sockets, with http.client: the transport of real probes.

    Every read waits at most the gap or the time left, whichever is shorter, and a watchdog shuts
    the socket down at the deadline: a mirror that trickles its TLS handshake, status line or
    headers a byte at a time is cut off like one that trickles its body.
    """

    @contextlib.contextmanager
    def _open(
        self, method: str, mirror: Mirror, path: str, body: bytes | None, headers: dict[str, str], deadline: Deadline
    ) -> Iterator[Exchange]:
        parts = urlsplit(mirror.url)
        limits = self.limits
        connection = _connection(parts, max(0.001, min(limits.connect_seconds, deadline.left())))
        expired = threading.Event()

        def cut_off() -> None:
            expired.set()
            sock = connection.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

        watchdog = threading.Timer(max(0.0, deadline.left()), cut_off)
        watchdog.daemon = True

        def read_timeout() -> float:
            return max(0.001, min(limits.gap_seconds, deadline.left()))

        try:
            watchdog.start()
            connection.connect()
            if connection.sock is not None:
                connection.sock.settimeout(read_timeout())
            connection.request(method, parts.path.rstrip("/") + "/" + path, body=body, headers=headers)
            response = connection.getresponse()
            names = {name.lower(): value for name, value in response.getheaders()}
            yield Exchange(response.status, names, _pieces(connection, response, read_timeout, expired, path, deadline))
        except FetchFailed:
            raise
        except (OSError, http.client.HTTPException, ValueError, UnicodeError) as err:
            if expired.is_set() or deadline.left() <= 0:
                raise FetchFailed(f"{path} took longer than {deadline.seconds:g} s") from err
            raise FetchFailed(_describe(err, parts.hostname, parts.port, path)) from err
        finally:
            watchdog.cancel()
            connection.close()


def _describe(err: Exception, host: str | None, port: int | None, path: str) -> str:
    """What went wrong with a mirror, for the plan's `rejected`."""
    if isinstance(err, TimeoutError):
        return f"{path}: no answer within the time limit"
    if isinstance(err, socket.gaierror):
        return f"cannot resolve {host}: {err.strerror}"
    if isinstance(err, UnicodeError):
        return f"cannot resolve {host}: not a valid host name"
    if isinstance(err, ConnectionRefusedError):
        return f"connection refused by {host}:{port or ''}"
    return f"{path}: {type(err).__name__}: {err}"


def _connection(parts: SplitResult, connect_seconds: float) -> http.client.HTTPConnection:
    if parts.scheme == "https":
        return http.client.HTTPSConnection(
            parts.hostname or "", parts.port, timeout=connect_seconds, context=ssl.create_default_context()
        )
    return http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=connect_seconds)


def _pieces(
    connection: http.client.HTTPConnection, response: http.client.HTTPResponse, read_timeout: Callable[[], float],
    expired: threading.Event, path: str, deadline: Deadline,
) -> Iterator[bytes]:  # fmt: skip
    """The body as it arrives, each read bounded by the gap and what is left of the deadline."""
    while True:
        if connection.sock is not None:
            connection.sock.settimeout(read_timeout())
        chunk = response.read1(65536)
        if not chunk:
            if expired.is_set():
                raise FetchFailed(f"{path} took longer than {deadline.seconds:g} s")
            return
        yield chunk
