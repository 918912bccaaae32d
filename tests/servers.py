"""Real servers on 127.0.0.1 for the tests: git daemon, gunicorn running the service, HTTP helpers."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).parent / "gunicorn"


def terminate(process: subprocess.Popen[bytes], seconds: float = 15) -> None:
    """SIGTERM, then SIGKILL when it has not ended within `seconds`."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, seconds: float = 15, process: subprocess.Popen[bytes] | None = None) -> None:
    """Until something listens on `port`; with `process`, an AssertionError as soon as it has ended instead."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the server for 127.0.0.1:{port} ended ({process.returncode}) before it listened")
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {seconds} s")


def on_a_free_port(
    launch: Callable[[int], subprocess.Popen[bytes]], log: Callable[[], Path] | None = None
) -> tuple[int, subprocess.Popen[bytes]]:
    """`launch(port)` on a free port, until it listens. A port can be taken between free_port() and the server's
    bind (CI met it): the server then ends (gunicorn after saying "Connection in use" in its `log`), and it is
    launched again on another port, three times in all."""
    for attempt in range(3):
        port = free_port()
        process = launch(port)
        try:
            wait_for_port(port, process=process)
            return port, process
        except AssertionError:
            terminate(process)
            if attempt == 2 or (log is not None and "Connection in use" not in log().read_text(errors="replace")):
                raise
    raise AssertionError("not reached")


@dataclass
class HttpAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 15
) -> HttpAnswer:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return HttpAnswer(answer.status, dict(answer.headers), answer.read())
    except urllib.error.HTTPError as error:
        return HttpAnswer(error.code, dict(error.headers), error.read())


def post_json(url: str, document: Any, headers: dict[str, str] | None = None) -> HttpAnswer:
    return http("POST", url, json.dumps(document).encode(), {"Content-Type": "application/json", **(headers or {})})


class GitDaemon:
    """`git daemon` on 127.0.0.1 serving bare repositories under `base`, pushes allowed."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port, self.process = on_a_free_port(lambda port: subprocess.Popen(
            ["git", "daemon", "--reuseaddr", f"--base-path={base}", "--export-all", "--enable=receive-pack",
             "--listen=127.0.0.1", f"--port={port}", str(base)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))  # fmt: skip

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


class Service:
    """A real gunicorn running the OPOS service on 127.0.0.1."""

    def __init__(self, env: dict[str, str], workers: int = 3) -> None:
        self.env = env
        self.port, self.process = on_a_free_port(lambda port: self._launch(port, workers), lambda: self.log)

    def _launch(self, port: int, workers: int) -> subprocess.Popen[bytes]:
        self.url = f"http://127.0.0.1:{port}"
        self.log = Path(self.env["OPOS_DATA_DIR"]).parent / f"gunicorn-{port}.log"
        return subprocess.Popen(
            [str(GUNICORN), "-c", str(ROOT / "webhook" / "gunicorn.conf.py"), "--bind", f"127.0.0.1:{port}",
             "--workers", str(workers), "webhook:create_app()"],
            cwd=ROOT, env={**os.environ, **self.env}, stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip

    def get(self, path: str, headers: dict[str, str] | None = None) -> HttpAnswer:
        return http("GET", self.url + path, headers=headers)

    def head_payload(self) -> dict[str, Any] | None:
        answer = self.get("/v1/head.json")
        if answer.status != 200:
            return None
        return json.loads(base64.b64decode(json.loads(answer.body)["payload"]))  # type: ignore[no-any-return]

    def wait_for(self, condition: Any, seconds: float = 20, what: str = "") -> Any:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what or condition}; log:\n{self.log.read_text()[-3000:]}")

    def served_commit(self) -> str | None:
        payload = self.head_payload()
        return payload["commit"] if payload else None

    def webhook(
        self, secret: str, branch: str = "main", event: str = "push", signature: str | None = None
    ) -> HttpAnswer:
        # GitHub's bodies differ push by push (the commit pushed, its time): a body seen before is a replay
        body = json.dumps({"ref": f"refs/heads/{branch}", "after": os.urandom(20).hex()}).encode()
        digest = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        headers = {"X-GitHub-Event": event, "X-Hub-Signature-256": signature or digest,
                   "Content-Type": "application/json"}  # fmt: skip
        return http("POST", self.url + "/hooks/github", body, headers)

    def stop(self) -> None:
        terminate(self.process)


POSTGRES_URL = os.environ.get("OPOS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


class Mirror:
    """A real HTTP server on 127.0.0.1 serving a site's files, or misbehaving on purpose.

    `files` maps paths ("/v1/head.json") to bytes; `behaviour` maps paths to "endless" (streams
    without end), "trickle" (a body byte every 0.2 s), "trickle-status" (the status line a byte
    every 0.2 s), "trickle-headers" (a header line every 0.2 s, without end), "unsolicited-304"
    (304 whatever was asked), or an HTTP status code. POSTs get the bytes in `answers[path]`. With `host`, requests must
    carry that Host header (a fronted domain). ETags are honoured for If-None-Match.
    """

    def __init__(self, files: dict[str, bytes] | None = None, host: str | None = None) -> None:
        import http.server
        import threading

        self.files = dict(files or {})
        self.behaviour: dict[str, Any] = {}
        self.answers: dict[str, bytes] = {}
        self.host = host
        self.requests: list[str] = []
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                mirror.requests.append(self.path)
                if mirror.host and self.headers.get("Host") != mirror.host:
                    self.send_error(421)
                    return
                how = mirror.behaviour.get(self.path)
                if how == "endless":
                    self.send_response(200)
                    self.end_headers()
                    with contextlib.suppress(OSError):
                        for _ in range(100_000):  # bounded: 6.4 GB at most, the client stops long before
                            self.wfile.write(b" " * 65536)
                    return
                if how == "trickle":
                    self.send_response(200)
                    self.end_headers()
                    with contextlib.suppress(OSError):
                        for _ in range(300):  # bounded: a minute at most
                            self.wfile.write(b" ")
                            self.wfile.flush()
                            time.sleep(0.2)
                    return
                if how == "trickle-status":
                    with contextlib.suppress(OSError):
                        for byte in b"HTTP/1.1 200 OK\r\n" * 20:  # bounded: a minute at most
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(0.2)
                    return
                if how == "trickle-headers":
                    with contextlib.suppress(OSError):
                        self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                        for number in range(300):  # bounded: a minute at most
                            self.wfile.write(b"X-Slow-%d: 1\r\n" % number)
                            self.wfile.flush()
                            time.sleep(0.2)
                    return
                if how == "unsolicited-304":
                    self.send_response(304)
                    self.end_headers()
                    return
                if isinstance(how, int):
                    self.send_error(how)
                    return
                data = mirror.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ETag", etag)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                mirror.requests.append(self.path)
                if mirror.host and self.headers.get("Host") != mirror.host:
                    self.send_error(421)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(min(length, 1 << 20))
                data = mirror.answers.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @classmethod
    def of_site(cls, site: Path, host: str | None = None) -> Mirror:
        return cls({"/" + str(p.relative_to(site)): p.read_bytes() for p in site.rglob("*.json")}, host)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class AuditorProcess:
    """A real gunicorn running an OPOS auditor (webhook/auditor/app.py) on 127.0.0.1; restartable on the same port."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.port, self.process = on_a_free_port(self._launch, lambda: log)
        self._wait_healthy()

    def start(self) -> None:
        """Again, on the same port."""
        self.process = self._launch(self.port)
        wait_for_port(self.port, process=self.process)
        self._wait_healthy()

    def _launch(self, port: int) -> subprocess.Popen[bytes]:
        self.url = f"http://127.0.0.1:{port}"
        return subprocess.Popen(
            [str(GUNICORN), "-c", str(ROOT / "webhook" / "auditor.conf.py"), "--bind", f"127.0.0.1:{port}",
             "--workers", "2", "webhook.auditor:create_app()"],
            cwd=ROOT, env={**os.environ, **self.env}, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the port opens with the master; a worker answers a moment later
            with contextlib.suppress(OSError):
                if http("GET", f"{self.url}/healthz", timeout=2).status == 200:
                    return
            time.sleep(0.05)
        raise AssertionError(f"the auditor did not start; log:\n{self.log.read_text()[-3000:]}")

    def cosign(self, envelope: bytes, timeout: float = 60) -> HttpAnswer:
        return http("POST", f"{self.url}/v1/cosign", envelope, {"Content-Type": "application/json"}, timeout)

    def get(self, path: str) -> HttpAnswer:
        return http("GET", self.url + path)

    def kill(self) -> None:
        """SIGKILL to the master and its workers: no cleanup, as in a power cut."""
        assert self.process is not None
        workers = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout
        for pid in [self.process.pid, *map(int, workers.split())]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process)
