"""Attackers for the tests, all on 127.0.0.1: raw requests from a chosen source address, and slow bodies.

Linux answers on the whole of 127.0.0.0/8, so a test can be the attacker at 127.0.0.1 and an honest
client at 127.0.0.2 against one server.
"""

from __future__ import annotations

import contextlib
import resource
import selectors
import socket
import threading
import time
from dataclasses import dataclass


@dataclass
class RawAnswer:
    status: int
    head: bytes
    body: bytes
    seconds: float


def raw_request(port: int, request: bytes, source: str = "127.0.0.1", timeout: float = 10) -> RawAnswer:
    """Send `request` as it is (any bytes) and read the answer until the server closes or the body is whole."""
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0)) as connection:
        connection.sendall(request)
        data = b""
        while True:
            try:
                chunk = connection.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), None)  # fmt: skip
            if length is not None and len(body) >= length:
                break
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1]) if head.startswith(b"HTTP/") else 0
    return RawAnswer(status, head, body, time.monotonic() - began)


def get_from(source: str, port: int, path: str, timeout: float) -> RawAnswer:
    """A GET from `source`, over a new connection (closed after the answer)."""
    return raw_request(port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(), source, timeout)


def allow_descriptors(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


class SlowBodies:
    """`count` connections from `source`, each sending `head` (a request line and headers that announce a body)
    and then its body one byte a second; every connection the server closes is opened again at the next tick.

    A thread of its own, with non-blocking sockets: about 4 KB/s for 4,400 connections, as an attacker would.
    """

    def __init__(self, port: int, count: int, head: bytes, source: str = "127.0.0.1") -> None:
        self.port, self.count, self.head, self.source = port, count, head, source
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.reopened = 0
        self.holding = 0  # connections whose headers went out and that the server has not closed
        self.selector = selectors.DefaultSelector()
        self.sockets: dict[socket.socket, bool] = {}  # each connection: whether its headers went out

    def __enter__(self) -> SlowBodies:
        allow_descriptors(self.count + 1024)
        for _ in range(self.count):
            self._open()
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self.thread.join()
        for connection in list(self.sockets):
            connection.close()
        self.selector.close()

    def _open(self) -> None:
        connection = socket.socket()
        connection.setblocking(False)
        connection.bind((self.source, 0))
        connection.connect_ex(("127.0.0.1", self.port))
        self.sockets[connection] = False
        self.selector.register(connection, selectors.EVENT_WRITE)

    def _reopen(self, connection: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(connection)
        self.sockets.pop(connection, None)
        connection.close()
        self.reopened += 1
        self._open()

    def _run(self) -> None:
        while not self.stopping.is_set():
            tick = time.monotonic() + 1
            while (left := tick - time.monotonic()) > 0 and not self.stopping.is_set():
                for key, _ in self.selector.select(timeout=min(left, 0.2)):
                    connection = key.fileobj
                    assert isinstance(connection, socket.socket)
                    self.selector.unregister(connection)
                    try:
                        connection.send(self.head)
                        self.sockets[connection] = True
                    except OSError:
                        self._reopen(connection)
            closed = []
            for connection, started in list(self.sockets.items()):
                if not started:
                    continue
                try:
                    connection.send(b"1")
                    if connection.recv(65536) == b"":  # an answer (a 408) is read and dropped; b"": closed
                        closed.append(connection)
                except BlockingIOError:
                    pass
                except OSError:
                    closed.append(connection)
            for connection in closed:
                self._reopen(connection)
            self.holding = sum(self.sockets.values())


class Forwarder:
    """A TCP relay on 127.0.0.1 to `target`, that can freeze: once frozen it accepts and reads nothing, sends
    nothing, and leaves every connection open, as a database whose server hangs (or a silent remote) would."""

    def __init__(self, target: tuple[str, int], frozen: bool = False, port: int = 0) -> None:
        self.target = target
        self.frozen = threading.Event()
        if frozen:
            self.frozen.set()
        self.listener = socket.create_server(("127.0.0.1", port))
        self.port = int(self.listener.getsockname()[1])
        self.held: list[socket.socket] = []
        self.closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.held.append(client)
            if not self.frozen.is_set():
                try:
                    upstream = socket.create_connection(self.target, timeout=5)
                except OSError:
                    client.close()
                    continue
                self.held.append(upstream)
                for source, sink in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = source.recv(65536)
                while self.frozen.is_set() and not self.closing:
                    time.sleep(0.05)  # holds what it read: neither side hears anything more
                if not data or self.closing:
                    break
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.closing = True
        self.listener.close()
        for connection in self.held:
            connection.close()
