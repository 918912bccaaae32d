"""A scripted mirror (and claims service) on 127.0.0.1: serves a scenario's files, or misbehaves as told.

`files` maps paths to bytes (ETags are the SHA-256 of the bytes; If-None-Match gets 304);
`behaviour` maps a path to one of HOSTILE (the transport attacks of the scenarios) or an HTTP
status; `answers` maps a POST path to (status, body, headers). Every hostile answer is bounded in
time by itself, so a client that never gives up still lets the kit end.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.server
import threading
import time
from dataclasses import dataclass, field
from typing import Any

TRANSPORT_ATTACKS = (
    "trickle-status", "trickle-headers", "trickle-body", "endless", "many-headers", "long-header", "gzip-bomb",
    "redirect", "negative-length", "close-mid-body",
)  # fmt: skip
HOSTILE = (*TRANSPORT_ATTACKS, "unsolicited-304")
_BOUND_SECONDS = 60.0  # the longest any hostile answer goes on: longer than the kit allows a poll to take


@dataclass
class Script:
    files: dict[str, bytes] = field(default_factory=dict)
    behaviour: dict[str, str | int] = field(default_factory=dict)
    answers: dict[str, tuple[int, bytes, dict[str, str]]] = field(default_factory=dict)
    host: str | None = None  # a fronted domain: requests must name it in Host (else 421)
    requests: list[str] = field(default_factory=list)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _QuietServer

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        script = self.server.script
        script.requests.append(f"GET {self.path}")
        if script.host and self.headers.get("Host") != script.host:
            self._plain(421, b'{"error": "Misdirected Request"}')
            return
        how = script.behaviour.get(self.path)
        if isinstance(how, int):
            self._plain(how, b"{}")
        elif how is not None:
            _hostile(self, str(how))
        elif self.path in script.files:
            self._file(script.files[self.path])
        else:
            self._plain(404, b'{"error": "Not Found"}')

    def do_POST(self) -> None:
        script = self.server.script
        script.requests.append(f"POST {self.path}")
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(min(length, 1 << 20))
        status, body, headers = script.answers.get(self.path, (404, b'{"error": "Not Found"}', {}))
        self._plain(status, body, headers)

    def _file(self, body: bytes) -> None:
        etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._plain(200, body, {"ETag": etag})

    def _plain(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(body)


class ScriptedMirror:
    def __init__(self) -> None:
        self.server = _QuietServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def script(self) -> Script:
        return self.server.script

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietServer(http.server.ThreadingHTTPServer):
    script = Script()

    def __init__(self, address: tuple[str, int], handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self.script = Script()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up on a hostile answer are the point of the exercise


def _hostile(handler: http.server.BaseHTTPRequestHandler, how: str) -> None:
    """Answer as an attacker would; each ends by itself within _BOUND_SECONDS."""
    out = handler.wfile
    ends = time.monotonic() + _BOUND_SECONDS
    with contextlib.suppress(OSError):
        if how == "trickle-status":
            for byte in b"HTTP/1.1 200 OK\r\n":
                if time.monotonic() > ends:
                    break
                out.write(bytes([byte]))
                out.flush()
                time.sleep(0.5)
        elif how == "trickle-headers":
            out.write(b"HTTP/1.1 200 OK\r\n")
            while time.monotonic() < ends:
                out.write(b"X-Slow: 1\r\n")
                out.flush()
                time.sleep(0.5)
        elif how in ("trickle-body", "endless", "close-mid-body"):
            # small enough a declared length to be read (a client may refuse a large one before reading); the
            # endless body declares none and ends with the connection, so only a size limit stops it
            length = b"Content-Length: 4000\r\n" if how != "endless" else b"Connection: close\r\n"
            out.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + length + b"\r\n{")
            if how == "close-mid-body":
                out.write(b'"payload": "')
                out.flush()
                return  # the connection closes with the body cut short
            while time.monotonic() < ends:
                out.write(b" " if how == "trickle-body" else b" " * 65536)
                out.flush()
                if how == "trickle-body":
                    time.sleep(0.2)
        elif how == "many-headers":
            out.write(b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-H%d: 1\r\n" % n for n in range(5000)) + b"\r\n")
        elif how == "long-header":
            out.write(b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 200_000 + b"\r\nContent-Length: 2\r\n\r\n{}")
        elif how == "gzip-bomb":
            bomb = gzip.compress(b" " * (64 * 1024 * 1024))
            out.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(bomb) + bomb)
        elif how == "redirect":
            out.write(b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9/v1/head.json\r\nContent-Length: 0\r\n\r\n")
        elif how == "negative-length":
            out.write(b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n{}")
        elif how == "unsolicited-304":
            out.write(b'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\nContent-Length: 0\r\n\r\n')
        out.flush()
    handler.close_connection = True
