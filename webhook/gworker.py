"""The gunicorn worker of both web services: gevent's own WSGI server, with doors that close.

gunicorn's `gevent` worker parses HTTP in Python; its `gevent_pywsgi` worker uses gevent's server,
which answers a poll in well under half the time (the benchmark: about 18,000 answers a second
against 10,600 for the same bare application on this project's machine). gevent's server, though,
trusts its clients' pace, so this worker adds three bounds:

- each request (and each idle keep-alive connection) has `keepalive` seconds to deliver its line
  and headers, as gunicorn's own async workers do; then the connection is closed without an answer;
- a body the application did not read to its end (a 408 after OPOS_BODY_SECONDS, a 413, a route
  that wants none) is never read on after the answer, as gevent would to keep the connection: the
  connection is closed, after a short bounded drain so that the client can read the answer;
- one address block holds at most OPOS_CONNECTIONS_PER_ADDRESS connections across the workers
  (webhook/connections.py); past it, a new connection is closed when it is accepted.
"""

from __future__ import annotations

import logging
import os
import resource
import socket
import time
import weakref
from typing import Any, ClassVar

import gevent
from gevent import pywsgi
from gunicorn.workers.ggevent import GeventPyWSGIWorker, PyWSGIHandler, PyWSGIServer

from webhook.addresses import Sources
from webhook.connections import AddressLimiter, ConnectionPolicy, SharedCounts

logger = logging.getLogger("opos.connections")
LINGER_SECONDS = 1.0  # after closing an unread body: time for the client to read the answer before we close
LINGER_BYTES = 16 * 1024 * 1024  # read and dropped: the time is the bound that matters


class HeadersTooSlow(socket.timeout):
    """The request line and headers did not arrive in time (an OSError: gevent closes the connection)."""


class _UnreadInput(pywsgi.Input):  # type: ignore[misc]
    """gevent's request body, except that what the application left unread is never read after the answer."""

    __slots__ = ()

    def _discard(self) -> None:
        return None


def _unfinished(body: Any) -> bool:
    if body is None:
        return False
    if body.chunked_input:
        return bool(body.chunk_length != 0)
    return bool(body.position < (body.content_length or 0))


class BoundedHandler(PyWSGIHandler):  # type: ignore[misc]
    header_seconds = 5.0  # set from gunicorn's `keepalive` when the worker starts
    _deadline: gevent.Timeout | None = None

    def handle_one_request(self) -> Any:
        try:
            return super().handle_one_request()
        finally:
            self._stop_deadline()  # whatever happened, the application never runs under it

    def read_requestline(self) -> str:
        self._deadline = gevent.Timeout.start_new(
            self.header_seconds, HeadersTooSlow(f"no request within {self.header_seconds} s")
        )
        line: str = super().read_requestline()
        return line

    def read_request(self, raw_requestline: str) -> Any:
        try:
            return super().read_request(raw_requestline)
        finally:
            self._stop_deadline()

    def get_environ(self) -> Any:
        environ = super().get_environ()
        if self.wsgi_input is not None:
            self.wsgi_input.__class__ = _UnreadInput  # same layout: only _discard differs
        return environ

    def handle_one_response(self) -> None:
        super().handle_one_response()
        if _unfinished(self.wsgi_input):
            self.close_connection = True
            self._linger()

    def _linger(self) -> None:
        """Stop sending, then read (and drop) what the client still sends for a moment: closing a socket
        with unread data resets it, and a client still sending would lose the answer it was given."""
        try:
            self.socket.shutdown(socket.SHUT_WR)
            with gevent.Timeout(LINGER_SECONDS, False):
                drained = 0
                while drained < LINGER_BYTES:
                    data = self.socket.recv(16384)
                    if not data:
                        break
                    drained += len(data)
        except OSError:
            pass

    def log_request(self) -> None:
        # gunicorn's handler builds the whole access-log record before its logger checks whether
        # there is an access log; with none (the default), that is a fifth of a poll's work for nothing
        if getattr(self.server.log, "access_log_enabled", True):
            super().log_request()

    def _handle_client_error(self, ex: BaseException) -> Any:
        if isinstance(ex, HeadersTooSlow):
            return None  # close without an answer: nothing was asked in time
        return super()._handle_client_error(ex)

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.close()
            self._deadline = None


def _peer(address: Any) -> str:
    return str(address[0]) if isinstance(address, tuple) and address else ""


class BoundedServer(PyWSGIServer):  # type: ignore[misc]
    limiter: ClassVar[AddressLimiter | None] = None  # the worker's, set when it has loaded the application
    _refused: ClassVar[int] = 0
    _said: ClassVar[float] = 0.0

    def do_handle(self, sock: socket.socket, address: Any) -> None:
        limiter = self.limiter
        if limiter is None:
            return super().do_handle(sock, address)  # type: ignore[no-any-return]
        bucket = limiter.bucket(_peer(address))
        if not limiter.take(bucket):
            sock.close()  # before a byte is read: a refusal costs an accept and a close
            self._count_refusal(_peer(address), limiter.policy.per_address)
            return None
        try:
            return super().do_handle(sock, address)  # type: ignore[no-any-return]
        except BaseException:
            limiter.give_back(bucket)
            raise

    def handle(self, sock: socket.socket, address: Any) -> None:
        try:
            super().handle(sock, address)
        finally:
            if self.limiter is not None:
                self.limiter.give_back(self.limiter.bucket(_peer(address)))

    @classmethod
    def _count_refusal(cls, peer: str, limit: int) -> None:
        cls._refused += 1
        now = time.monotonic()
        if now - cls._said >= 60:  # a flood is one line a minute, not one a connection
            logger.warning("refused %d connection(s) in the last minute, the latest from %s: its address block "
                           "holds %d already (OPOS_CONNECTIONS_PER_ADDRESS)", cls._refused, peer, limit)  # fmt: skip
            cls._refused, cls._said = 0, now


def default_policy() -> ConnectionPolicy:
    return ConnectionPolicy(int(os.environ.get("OPOS_CONNECTIONS_PER_ADDRESS", "100")), Sources.from_environment())


class BoundedGeventWorker(GeventPyWSGIWorker):  # type: ignore[misc]
    wsgi_handler = BoundedHandler
    server_class = BoundedServer
    _counts: ClassVar[SharedCounts | None] = None
    _rows: ClassVar[weakref.WeakValueDictionary[int, BoundedGeventWorker]] = weakref.WeakValueDictionary()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # in the master, before the fork: the table and the row are shared
        cls = BoundedGeventWorker
        if cls._counts is None:
            cls._counts = SharedCounts(rows=2 * self.cfg.workers + 8)  # a reload runs old and new workers at once
        self.row = next((row for row in range(cls._counts.rows) if row not in cls._rows), None)
        if self.row is not None:
            cls._rows[self.row] = self

    def init_process(self) -> None:
        BoundedHandler.header_seconds = float(self.cfg.keepalive)
        _allow_descriptors(self.worker_connections + 256)
        super().init_process()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        policy = getattr(self.wsgi, "config", {}).get("OPOS_CONNECTIONS") or default_policy()
        counts = BoundedGeventWorker._counts
        if self.row is None or counts is None:  # more workers than rows: this one counts its own connections
            counts, self.row = SharedCounts(rows=1), 0
        BoundedServer.limiter = AddressLimiter(policy, counts, self.row)


def _allow_descriptors(wanted: int) -> None:
    """Raise this process's open-file limit towards `wanted` (as far as the hard limit lets it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < ceiling:
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
