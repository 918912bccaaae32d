"""The gunicorn worker of the service: gevent's own WSGI server, with a deadline on every request's headers.

gunicorn's `gevent` worker parses HTTP in Python; its `gevent_pywsgi` worker uses gevent's server,
which answers a poll in well under half the time (the benchmark: about 18,000 answers a second
against 10,600 for the same bare application on this project's machine). gevent's server, though,
waits for a request's line and headers as long as a client cares to trickle them, which would let
a few thousand slow connections hold every greenlet. This worker gives each request (and each
idle keep-alive connection) `keepalive` seconds to deliver its line and headers, as gunicorn's
own async workers do, and then closes the connection without an answer.
"""

from __future__ import annotations

import socket
from typing import Any

import gevent
from gunicorn.workers.ggevent import GeventPyWSGIWorker, PyWSGIHandler


class HeadersTooSlow(socket.timeout):
    """The request line and headers did not arrive in time (an OSError: gevent closes the connection)."""


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


class BoundedGeventWorker(GeventPyWSGIWorker):  # type: ignore[misc]
    wsgi_handler = BoundedHandler

    def init_process(self) -> None:
        BoundedHandler.header_seconds = float(self.cfg.keepalive)
        super().init_process()
