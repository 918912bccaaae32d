"""The demo's second half: the feed service under gunicorn on 127.0.0.1, following the demo ledger."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
import signal
import socket
import subprocess  # nosec B404
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, TextIO

import webhook
from opos.cli._demo_ledger import land_reviewed
from opos.cli.probe import describe
from opos.model import format_time
from opos.probe import ClientConfig, Mirror, TrustAnchors, poll
from opos.probe.plan import Plan
from opos.signing import keydoc, keys
from opos.trust.gitrepo import GitLedger, check_out


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST" if body else "GET")
    try:
        # the demo's own service on http://127.0.0.1, never a URL from outside
        with urllib.request.urlopen(request, timeout=5) as answer:  # nosec B310
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")
    except (OSError, ValueError):
        return 0, None


def _served(base: str) -> str | None:
    status, health = _get(f"{base}/healthz")
    return health.get("commit") if status == 200 and isinstance(health, dict) else None


def _wait(condition: Any, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    return None


def serve_demo(folder: Path, repo: Path, feed_key: Path, port: int, out: TextIO) -> int:
    if not _port_free(port):
        wanted, port = port, _free_port()
        print(f"Port {wanted} on 127.0.0.1 is in use by another program: the demo serves on {port} instead "
              "(choose one with --port).", file=out)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    secret = secrets.token_hex(16)
    auditor_url, auditor = _start_auditor(folder, repo, feed_key)
    env = {
        **os.environ,
        "OPOS_REMOTE": str(repo),
        "OPOS_DATA_DIR": str(folder / "service"),
        "OPOS_FEED_KEY": str(feed_key),
        "OPOS_WEBHOOK_SECRET": secret,
        "OPOS_POLL_SECONDS": "5",
        "OPOS_BIND": f"127.0.0.1:{port}",
        "OPOS_WORKERS": "2",
        "OPOS_AUDITORS": auditor_url,  # each new commit is cosigned by the auditor before its head is published
        "OPOS_AUDITORS_REQUIRED": "1",  # the key document names the auditor's key and asks for its cosignature
        "OPOS_OONIRUN_AUTHOR": os.environ.get("OPOS_OONIRUN_AUTHOR", "demo@ooni.example"),  # the OONI Run bridge
    }
    config = Path(webhook.__file__).resolve().parent / "gunicorn.conf.py"
    log_path = folder / "service.log"
    command = [sys.executable, "-m", "gunicorn", "-c", str(config), "webhook:create_app()"]
    with log_path.open("wb") as log:
        # our own gunicorn with a fixed command line (why bandit's subprocess warnings are silenced here)
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)  # nosec B603
    try:
        first = _wait(lambda: _served(base), 30)
        if not first:
            print(f"The service did not start; see {log_path}", file=out)
            return 1
        print(f"5. An auditor ({auditor_url}, key {folder / 'auditor-key.pub'}) re-rendered the feed from the "
              f"signed history and cosigned it; the feed service (gunicorn, 2 workers) serves the demo ledger at "
              f"{first[:12]}:", file=out)  # fmt: skip
        for path in ("/v1/head.json", "/v1/feed.json", f"/v1/feed/{first}.json", f"/v1/cosignatures/{first}.json",
                     "/healthz", "/metrics", "/openapi.json"):  # fmt: skip
            print(f"     {base}{path}", file=out)
        seconds, commit, status = _push_and_notify(repo, folder, base, secret)
        print(f"6. Bob signed a new instruction and alice approved it (policy.yaml asks two signers); after the "
              f"webhook (answered {status}) the service served the merge {commit[:12]} in {seconds:.2f} s",
              file=out)  # fmt: skip
        print("7. A probe in IR / AS197207 that pins only the root key (it learns the feed key from the key "
              "documents) and requires the auditor's cosignature polls the service, verifies what it gets and plans:",
              file=out)  # fmt: skip
        probe = _probe(base, feed_key, folder / "probe-state", folder / "auditor-key.pub")
        print("     " + describe(probe).replace("\n", "\n     "), file=out)
        print("   The same from the command line:", file=out)
        print(f"     opos probe --mirror {base} --root-key {folder / 'root-key.pub'} --auditor "
              f"{folder / 'auditor-key.pub'} --country IR --network AS197207 --claims {base} --state "
              f"{folder / 'probe-state'}", file=out)  # fmt: skip
        _show_bridge(base, feed_key, out)
        print(f"\nServing until you press Ctrl-C (log: {log_path}). Commits signed into {repo} are", file=out)
        print(f"followed within 5 s; the staff keys are in {folder / 'staff-keys'}.", file=out, flush=True)
        process.wait()
        return 0
    except KeyboardInterrupt:  # Ctrl-C is how the demo is meant to stop, at any moment
        return 0
    finally:
        for running in (process, auditor):
            if running.poll() is None:
                running.send_signal(signal.SIGTERM)
                try:
                    running.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    running.kill()


def _show_bridge(base: str, feed_key: Path, out: TextIO) -> None:
    """What OONI's apps and engine get through the OONI Run v2 bridge, and how anyone checks it."""
    link = f"{base}/api/v2/oonirun/links/10000"
    meta = {"run_type": "timed", "is_charging": True, "probe_cc": "IR", "probe_asn": "AS197207", "network_type": "wifi"}
    asked = urllib.request.Request(f"{link}/engine-descriptor/latest", json.dumps(meta).encode(),
                                   {"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(asked, timeout=10) as answer:  # nosec B310 (our own service on 127.0.0.1)
            nettests = json.loads(answer.read())["nettests"]
    except (OSError, ValueError, KeyError) as error:
        print(f"8. The OONI Run v2 bridge at {link} did not answer: {error}", file=out)
        return
    print(f"8. OONI's apps and engine follow the same run instructions through the OONI Run v2 bridge: an engine "
          f"in IR / AS197207 gets {len(nettests)} nettest(s) from POST {link}/engine-descriptor/latest; the app "
          f"installs {link}. Anyone checks the bridge against the signed feed:", file=out)  # fmt: skip
    print(f"     opos audit --oonirun {link} --key {feed_key}.pub", file=out)


def _start_auditor(folder: Path, repo: Path, feed_key: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """An auditor under gunicorn following the demo ledger (its key is the one the key document names): it
    cosigns only what it re-renders itself."""
    url = f"http://127.0.0.1:{_free_port()}"
    env = {**os.environ, "OPOS_AUDITOR_KEY": str(folder / "auditor-key"), "OPOS_AUDITOR_FEED_KEYS": f"{feed_key}.pub",
           "OPOS_AUDITOR_STATE": str(folder / "auditor-state"), "OPOS_AUDITOR_REMOTE": str(repo),
           "OPOS_AUDITOR_BIND": url.removeprefix("http://"), "OPOS_AUDITOR_WORKERS": "1"}  # fmt: skip
    config = Path(webhook.__file__).resolve().parent / "auditor.conf.py"
    command = [sys.executable, "-m", "gunicorn", "-c", str(config), "webhook.auditor:create_app()"]
    with (folder / "auditor.log").open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)  # nosec B603: as above
    _wait(lambda: _get(f"{url}/healthz")[0] == 200, 30)
    return url, process


def _probe(base: str, feed_key: Path, state: Path, auditor_key: Path) -> Plan:
    root = keydoc.Key.of(keys.load_public(feed_key.parent / "root-key.pub"))
    config = ClientConfig(
        mirrors=[Mirror(base)], trust=TrustAnchors(root_keys=(root,), auditors=(keys.load_public(auditor_key),),
                                                   auditors_required=1),
        country="IR", network="AS197207", state_dir=state, claims=(Mirror(base),),
    )  # fmt: skip
    return poll(config)


def _push_and_notify(repo: Path, folder: Path, base: str, secret: str) -> tuple[float, str, int]:
    """A new instruction by bob that alice approves (policy.yaml asks two signers), then a signed
    webhook: how long until the service serves the merge."""
    bob = keys.load_private(folder / "staff-keys" / "bob")
    alice = keys.load_private(folder / "staff-keys" / "alice")
    start = dt.datetime.now(dt.UTC).replace(microsecond=0)
    text = (
        "id: mm-dns-resolvers\nkind: run\ntitle: Check DNS-over-HTTPS resolvers in Myanmar\n"
        "reason: A new filter is said to block encrypted DNS.\ntest: dnscheck\n"
        "inputs:\n  - https://dns.google/dns-query\ntarget:\n  countries: [MM]\n  sample: 0.5\n"
        f"window:\n  start: {format_time(start)}\n  end: {format_time(start + dt.timedelta(days=7))}\n"
    )
    with GitLedger(repo) as ledger:
        parent = ledger.resolve("HEAD")
        changes: dict[str, bytes | None] = {"ledger/instructions/mm-dns-resolvers.yaml": text.encode()}
        message = "Check DNS resolvers in Myanmar"
        commit, _ = land_reviewed(ledger, parent, changes, message, bob, alice, int(time.time()))
    check_out(repo)
    started = time.monotonic()
    body = json.dumps({"ref": "refs/heads/main", "after": commit}).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    status, _ = _get(f"{base}/hooks/github", body, {"X-GitHub-Event": "push", "X-Hub-Signature-256": signature,
                                                    "Content-Type": "application/json"})  # fmt: skip
    _wait(lambda: _served(base) == commit, 30)
    return time.monotonic() - started, commit, status
