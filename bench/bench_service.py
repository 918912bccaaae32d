"""Benchmark: the feed service under gunicorn on 127.0.0.1 — push-to-served latency and polling throughput.

    .venv/bin/python bench/bench_service.py [--instructions 1000] [--workers 4] [--seconds 10]

1. Builds a ledger of signed commits with N instructions, serves it through `git daemon`, and
   starts gunicorn (sync workers) following it.
2. Latency: five times, a new signed commit is pushed and the webhook sent; the time until
   /v1/head.json names the commit is measured (the issue's goal: under 2 s for 1,000 instructions).
3. Throughput: `wrk` (Debian package) polls /v1/head.json as probes do — with If-None-Match (304,
   the usual answer) and without — and fetches /v1/feed.json; requests per second times 60 is how many
   probes polling once a minute one instance serves. wrk runs on the same two cores, so the
   figures are a floor. Everything talks to 127.0.0.1 only and stops by itself.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from bench_ledger import build

from servers import GitDaemon, free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent


def served(base: str) -> str | None:
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=5) as answer:
            return json.loads(answer.read())["commit"]  # type: ignore[no-any-return]
    except OSError:
        return None


def webhook(base: str, secret: str) -> None:
    body = b'{"ref": "refs/heads/main"}'
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(
        base + "/hooks/github",
        body,
        {"X-GitHub-Event": "push", "X-Hub-Signature-256": signature, "Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=5).read()


def wrk(url: str, seconds: int, header: str | None = None) -> float:
    command = ["wrk", "-t2", "-c64", f"-d{seconds}s", url]
    if header:
        command[1:1] = ["-H", header]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    return float(match.group(1)) if match else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instructions", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="opos-bench-service-"))
    daemon_root = folder / "daemon"
    daemon_root.mkdir()
    _, one_more = build(daemon_root / "ledger.git", args.instructions, args.instructions)
    subprocess.run(["git", "-C", str(daemon_root / "ledger.git"), "config", "core.bare", "true"], check=True)
    daemon = GitDaemon(daemon_root)
    key = folder / "feed-key"
    subprocess.run([sys.executable, "-m", "opos", "keygen", "--out", str(key)], check=True, capture_output=True)
    port, secret = free_port(), "bench-secret"
    env = {**os.environ, "OPOS_REMOTE": daemon.url("ledger.git"), "OPOS_DATA_DIR": str(folder / "data"),
           "OPOS_FEED_KEY": str(key), "OPOS_WEBHOOK_SECRET": secret, "OPOS_POLL_SECONDS": "3600"}  # fmt: skip
    command = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "webhook" / "gunicorn.conf.py"),
               "--bind", f"127.0.0.1:{port}", "--workers", str(args.workers), "--access-logfile", "/dev/null",
               "webhook:create_app()"]  # fmt: skip
    service = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port, 60)
        started = time.monotonic()
        while served(base) is None and time.monotonic() - started < 120:
            time.sleep(0.1)
        print(f"{args.instructions} instructions; first sync (cold: verify and render all) "
              f"{time.monotonic() - started:.1f} s")  # fmt: skip
        latencies = []
        for _ in range(5):
            commit = one_more()
            started = time.monotonic()
            webhook(base, secret)
            while served(base) != commit:
                time.sleep(0.01)
            latencies.append(time.monotonic() - started)
        print(f"push to served (webhook): median {statistics.median(latencies):.2f} s, max {max(latencies):.2f} s")
        with urllib.request.urlopen(base + "/v1/head.json") as answer:
            etag = answer.headers["ETag"]
        with urllib.request.urlopen(base + "/v1/feed.json") as answer:
            feed_size = len(answer.read())
        rows = [
            (
                "GET /v1/head.json, If-None-Match (304)",
                wrk(base + "/v1/head.json", args.seconds, f"If-None-Match: {etag}"),
            ),
            ("GET /v1/head.json (200)", wrk(base + "/v1/head.json", args.seconds)),
            (f"GET /v1/feed.json (200, {feed_size // 1024} KiB)", wrk(base + "/v1/feed.json", args.seconds)),
        ]
        for label, rate in rows:
            print(f"{label:44} {rate:9.0f} req/s  = {rate * 60:10.0f} probes polling once a minute")
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(timeout=30)
        daemon.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
