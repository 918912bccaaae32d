"""The feed service for real: gunicorn with several workers, a ledger behind git daemon, signed pushes."""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import functools
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from conftest import LedgerRepo, SshKey, add_signed, instruction, opos, push
from opos.instructions import resources
from opos.probe.claims import claim_each
from opos.probe.plan import Probe
from opos.probe.state import ProbeState
from opos.signing.documents import Feed, verify_envelope
from opos.signing.keys import load_public
from opos.transport import HttpFetcher
from opos.transport import Mirror as ClientMirror
from servers import ROOT, Service, free_port, http, post_json, wait_for_port

pytestmark = pytest.mark.slow
SECRET = "s3cret"


def health(service: Service) -> dict[str, Any]:
    return service.get("/healthz").json()  # type: ignore[no-any-return]


def test_a_signed_push_is_served_by_every_worker(
    published_ledger: tuple[LedgerRepo, str], keys: dict[str, SshKey], start_service: Any
) -> None:
    repo, url = published_ledger
    service = start_service(url)
    first = service.wait_for(service.served_commit, what="the first sync")
    assert first == repo.head()
    new = add_signed(repo, keys["alice"], "second-one")
    answer = service.webhook(SECRET)
    assert answer.status == 202 and answer.json() == {"sync": "queued"}
    service.wait_for(lambda: service.served_commit() == new, what="the pushed commit")
    # each request may land on any of the three workers: all of them serve the new head
    assert {service.served_commit() for _ in range(30)} == {new}
    feed = service.get("/v1/feed.json")
    assert feed.status == 200 and feed.headers["ETag"] == f'"{new}"'
    assert service.get("/v1/feed.json", {"If-None-Match": f'"{new}"'}).status == 304
    head = service.get("/v1/head.json")
    assert "max-age" in head.headers["Cache-Control"] and int(head.headers["Cache-Control"].split("=")[-1]) <= 60
    assert service.get("/v1/head.json", {"If-None-Match": head.headers["ETag"]}).status == 304
    pinned = service.get(f"/v1/feed/{first}.json")  # published by the first sync: kept as a static file
    assert pinned.status == 200 and "immutable" in pinned.headers["Cache-Control"]
    assert service.get(f"/v1/feed/{'a' * 40}.json").status == 404
    assert service.get("/v1/feed/ABC.json").status == 400
    body = health(service)
    assert body["status"] == "ok" and body["commit"] == new and body["sequence"] == 1


def test_preloaded_workers_follow_the_ledger(
    published_ledger: tuple[LedgerRepo, str], keys: dict[str, SshKey], start_service: Any
) -> None:
    """With --preload, create_app runs once in the master; each worker starts its own follower after the fork."""
    repo, url = published_ledger
    service = start_service(url, workers=2, gunicorn_args="--preload")
    assert service.wait_for(service.served_commit) == repo.head()
    new = add_signed(repo, keys["alice"], "after-preload")
    assert service.webhook(SECRET).status == 202
    assert service.wait_for(lambda: service.served_commit() == new, what="a sync by a preloaded worker")
    lock = Path(service.env["OPOS_DATA_DIR"]) / "sync.lock"
    inode = f":{lock.stat().st_ino} "
    holders = {int(line.split()[4]) for line in Path("/proc/locks").read_text().splitlines() if inode in line}
    assert holders and service.process.pid not in holders  # the leader is a worker, never the master


def test_bad_webhooks_change_nothing(
    published_ledger: tuple[LedgerRepo, str], keys: dict[str, SshKey], start_service: Any
) -> None:
    repo, url = published_ledger
    service = start_service(url)
    first = service.wait_for(service.served_commit)
    add_signed(repo, keys["alice"], "second-one")
    assert service.webhook("wrong").status == 401
    assert service.webhook(SECRET, signature="sha256=" + "0" * 64).status == 401
    assert http("POST", service.url + "/hooks/github", b"{}").status == 401
    assert service.webhook(SECRET, event="ping").json() == {"pong": True}
    assert "ignored" in service.webhook(SECRET, branch="other").json()
    assert "ignored" in service.webhook(SECRET, event="issues").json()
    # a 2 MiB body is refused from its declared length, before it is read (so the answer comes
    # while the client is still sending: read it the way curl does, not after sending everything)
    request = (b"POST /hooks/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\nContent-Length: 2097152\r\n"
               b"Content-Type: application/json\r\n\r\n" + b"x" * 65536)  # fmt: skip
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413") and b'"error"' in answer, answer
    time.sleep(1.5)  # had anything started a sync, it would be done by now
    assert service.served_commit() == first


def test_an_unsigned_commit_is_never_served(
    published_ledger: tuple[LedgerRepo, str], keys: dict[str, SshKey], start_service: Any
) -> None:
    repo, url = published_ledger
    service = start_service(url)
    good = service.wait_for(service.served_commit)
    repo.write("ledger/instructions/evil-one.yaml", instruction("evil-one"))
    bad = repo.commit("Unsigned", None)
    push(repo)
    service.webhook(SECRET)
    problem = service.wait_for(lambda: health(service)["problem"], what="the problem to be reported")
    assert bad in problem and "unsigned" in problem
    answer = service.get("/healthz")
    assert answer.status == 503 and answer.json()["status"] == "degraded" and answer.json()["commit"] == good
    assert service.served_commit() == good
    assert service.get(f"/v1/feed/{bad}.json").status == 404
    repo.git("reset", "-q", "--hard", good)  # the branch is fixed: it recovers by itself
    push(repo, "--force")
    service.webhook(SECRET)
    service.wait_for(lambda: health(service)["status"] == "ok", what="recovery")


def test_a_force_push_is_never_served(
    published_ledger: tuple[LedgerRepo, str], keys: dict[str, SshKey], start_service: Any
) -> None:
    repo, url = published_ledger
    service = start_service(url)
    served = service.wait_for(service.served_commit)
    repo.write("ledger/instructions/other-one.yaml", instruction("other-one"))
    rewritten = repo.commit("Rewritten trust root", keys["alice"], None, "--amend")  # signed, but not a descendant
    push(repo, "--force")
    service.webhook(SECRET)
    problem = service.wait_for(lambda: health(service)["problem"], what="the rewrite to be reported")
    assert rewritten in problem and ("does not descend" in problem or "rewritten" in problem)
    assert service.served_commit() == served


def test_the_timer_follows_without_webhooks_and_renews_the_head(
    published_ledger: tuple[LedgerRepo, str], keys: dict[str, SshKey], start_service: Any
) -> None:
    repo, url = published_ledger
    service = start_service(url, workers=2, poll_seconds="1", head_ttl_seconds="4")
    service.wait_for(service.served_commit)
    first_issue = service.head_payload()["issued"]  # type: ignore[index]
    new = add_signed(repo, keys["alice"], "second-one")
    service.wait_for(lambda: service.served_commit() == new, what="the timer's sync")
    service.wait_for(lambda: service.head_payload()["issued"] != first_issue, what="a renewed head")  # type: ignore[index]
    renewed = service.head_payload()
    assert renewed is not None and renewed["commit"] == new and renewed["issued"] > first_issue
    assert renewed["expires"] > renewed["issued"]


def _claim(base: str, probe: str, ident: str = "capped-one", country: str = "IR", network: str = "AS197207") -> Any:
    document = {"instruction": ident, "probe_id": probe, "country": country, "network": network}
    return post_json(base + "/v1/claims", document)


def _capped_ledger(repo: LedgerRepo, keys: dict[str, SshKey]) -> None:
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=1)
    window = f"\n  start: {start:%Y-%m-%dT%H:%M:%SZ}\n  end: {start + dt.timedelta(days=30):%Y-%m-%dT%H:%M:%SZ}"
    add_signed(
        repo, keys["alice"], "capped-one", window=window,
        target="\n  countries: [IR]\n  networks: [AS197207]\n  max_probes: 5",
    )  # fmt: skip


def _many_claims(bases: list[str], count: int) -> list[tuple[str, Any]]:
    """`count` probes claim at once, spread over the services at `bases`: (probe id, answer) pairs."""
    probes = [secrets.token_urlsafe(16) for _ in range(count)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        answers = pool.map(lambda pair: _claim(bases[pair[0] % len(bases)], pair[1]), enumerate(probes))
        return list(zip(probes, answers, strict=True))


def test_two_hundred_concurrent_claims_for_five_slots_on_sqlite(
    published_ledger: tuple[LedgerRepo, str], keys: dict[str, SshKey], start_service: Any
) -> None:
    repo, url = published_ledger
    _capped_ledger(repo, keys)
    service = start_service(url, workers=4, claims_per_address="0", claims_rate="0")  # 200 probes, one address
    service.wait_for(lambda: service.served_commit() == repo.head())
    answers = [answer for _, answer in _many_claims([service.url], 200)]
    assert {a.status for a in answers} == {200}
    assert sum(a.json()["granted"] for a in answers) == 5
    schema = resources.schema_document("openapi")["components"]["schemas"]["ClaimResponse"]
    for answer in answers:
        jsonschema.validate(answer.json(), schema)


def test_two_instances_share_one_cap_on_postgresql(
    published_ledger: tuple[LedgerRepo, str], keys: dict[str, SshKey], start_service: Any, postgres_url: str
) -> None:
    repo, url = published_ledger
    _capped_ledger(repo, keys)
    one = start_service(url, workers=2, claims_database=postgres_url, claims_per_address="0", claims_rate="0")
    two = start_service(url, workers=2, claims_database=postgres_url, claims_per_address="0", claims_rate="0")
    for service in (one, two):
        service.wait_for(lambda s=service: s.served_commit() == repo.head())
    answers = _many_claims([one.url, two.url], 200)
    assert {a.status for _, a in answers} == {200}
    granted = [probe for probe, a in answers if a.json()["granted"]]
    assert len(granted) == 5
    refused = next(probe for probe, a in answers if not a.json()["granted"])
    # asking again, at either instance, gives the same answer and takes no second slot
    for probe in granted:
        again = _claim(two.url, probe).json()
        assert again["granted"] and again["used"] == 5
    assert _claim(one.url, refused).json() == {**_claim(two.url, refused).json(), "granted": False}


def test_metrics_and_openapi(published_ledger: tuple[LedgerRepo, str], start_service: Any) -> None:
    _, url = published_ledger
    service = start_service(url, workers=2)
    service.wait_for(service.served_commit)
    service.get("/v1/head.json")
    text = service.get("/metrics").body.decode()
    for name in ("opos_http_requests_total", "opos_syncs_total", "opos_sync_duration_seconds",
                 "opos_claims_total", "opos_verification_failures_total"):  # fmt: skip
        assert name in text, name
    document = service.get("/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) >= {"/v1/head.json", "/v1/feed.json", "/v1/feed/{commit}.json", "/v1/claims",
                                      "/healthz", "/metrics", "/hooks/github"}  # fmt: skip
    jsonschema.validate(health(service), document["components"]["schemas"]["Health"])
    jsonschema.validate(service.get("/v1/head.json").json(), document["components"]["schemas"]["Envelope"])
    jsonschema.validate(service.get("/v1/nope").json(), document["components"]["schemas"]["Error"])


def test_opos_serve_runs_the_same_service(
    published_ledger: tuple[LedgerRepo, str], feed_key_file: Path, tmp_path: Path
) -> None:
    _, url = published_ledger
    env = {
        **os.environ,
        "OPOS_REMOTE": url,
        "OPOS_DATA_DIR": str(tmp_path / "serve"),
        "OPOS_FEED_KEY": str(feed_key_file),
    }
    process = subprocess.Popen([sys.executable, "-m", "opos", "serve", "--port", "0"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # --port 0: the port it really listens on is the one it prints
        port = int(first.split("http://127.0.0.1:")[1].split("/")[0])
        wait_for_port(port)
        deadline = time.monotonic() + 20
        while http("GET", f"http://127.0.0.1:{port}/healthz").status != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert http("GET", f"http://127.0.0.1:{port}/healthz").json()["status"] == "ok"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_opos_serve_without_configuration_says_what_is_missing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPOS_")}
    result = subprocess.run(
        [sys.executable, "-m", "opos", "serve"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1 and "OPOS_REMOTE" in result.stderr and "Traceback" not in result.stderr


def test_the_demo_serves_until_interrupted(tmp_path: Path) -> None:
    busy = socket.socket()  # another program holds the port asked for: the demo moves, and says why
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    wanted = busy.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "opos", "demo", "--serve", "--dir", str(tmp_path / "demo"), "--port", str(wanted)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        if line.startswith("Serving until"):
            break
    busy.close()
    text = "".join(lines)
    assert "6. Bob signed a new instruction" in text and "claim granted" in text, text
    assert "after the webhook (answered 202)" in text  # the webhook itself started the sync, not the timer
    assert "8. OONI's apps and engine follow the same run instructions through the OONI Run v2 bridge" in text
    audit = text.split("opos audit --oonirun ")[1].split()  # as printed, the bridge's audit passes
    assert opos("audit", "--oonirun", audit[0], "--key", audit[2]).code == 0
    assert f"Port {wanted} on 127.0.0.1 is in use by another program: the demo serves on " in text
    port = int(text.split("the demo serves on ")[1].split()[0])
    health = http("GET", f"http://127.0.0.1:{port}/healthz").json()
    assert health["status"] == "ok" and health["sequence"] == 7
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=20) == 0


def test_at_most_two_of_five_watching_probes_run_it(
    published_ledger: tuple[LedgerRepo, str], keys: dict[str, SshKey], start_service: Any, tmp_path: Path,
    feed_key_file: Path,
) -> None:  # fmt: skip
    """End to end: a signed push with max_probes 2; five probes in the network watch; exactly two run it."""
    repo, url = published_ledger
    service = start_service(url, workers=3, claims_per_address="0", claims_rate="0")  # six probes, one address
    service.wait_for(service.served_commit)

    def watch(name: str, network: str) -> subprocess.Popen[str]:
        command = [sys.executable, "-m", "opos", "probe", "--mirror", service.url, "--key", f"{feed_key_file}.pub",
                   "--country", "IR", "--network", network, "--claims", service.url, "--state", str(tmp_path / name),
                   "--json", "--watch", "0.5"]  # fmt: skip
        return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)

    probes = {f"probe-{n}": watch(f"probe-{n}", "AS197207") for n in range(5)}
    outsider = watch("outsider", "AS12880")
    try:
        start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
        window = f"\n  start: {start:%Y-%m-%dT%H:%M:%SZ}\n  end: {start + dt.timedelta(days=2):%Y-%m-%dT%H:%M:%SZ}"
        add_signed(repo, keys["alice"], "ir-capped", window=window,
                   target="\n  countries: [IR]\n  networks: [AS197207]\n  max_probes: 2")  # fmt: skip
        service.webhook(SECRET)
        claims: dict[str, str] = {}
        for name, process in probes.items():
            assert process.stdout is not None
            for line in process.stdout:  # each change is one JSON line, printed when noticed
                jsonschema.validate(json.loads(line), resources.schema_document("plan.schema"))
                runs = [r for r in json.loads(line)["runs"] if r["instruction"] == "ir-capped"]
                if runs:
                    claims[name] = runs[0]["claim"]
                    break
        assert sorted(claims.values()) == ["granted", "granted", "refused", "refused", "refused"]
        assert outsider.stdout is not None
        for line in outsider.stdout:  # it sees the new commit, and nothing in it for its network
            seen = json.loads(line)
            assert seen["runs"] == []
            if seen["commit"] == repo.head():
                break
        else:
            raise AssertionError("the outsider never saw the new commit")
    finally:
        for process in [*probes.values(), outsider]:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=10)


@pytest.mark.slow
def test_a_thousand_slow_clients_do_not_stall_the_service(
    published_ledger: tuple[LedgerRepo, str], keys: dict[str, SshKey], start_service: Any
) -> None:
    """1,000 connections each sending a header byte now and then: the head is still answered, the
    slow ones are dropped after the header read time, and the leader still syncs a push. (All from one
    address: the per-address limit is off here, so that the header deadline alone is what is tested.)"""
    repo, url = published_ledger
    service = start_service(url, workers=2, connections_per_address="0")
    service.wait_for(service.served_commit)
    slow: list[socket.socket] = []
    try:
        for _ in range(1000):
            connection = socket.create_connection(("127.0.0.1", service.port), timeout=5)
            connection.sendall(b"GET /v1/head.json HTTP/1.1\r\nHost: x\r\n")
            slow.append(connection)
        answered = 0
        for round_number in range(4):  # about six seconds, past the five allowed for headers
            for connection in slow:
                with contextlib.suppress(OSError):
                    connection.send(b"X")
            for _ in range(5):
                answer = http("GET", service.url + "/v1/head.json", timeout=2)
                answered += answer.status == 200
            time.sleep(1.5 if round_number < 3 else 0)
        assert answered == 20  # every real request was answered while the slow ones were open
        time.sleep(1)
        dropped = 0
        for connection in slow:
            connection.settimeout(0.5)
            with contextlib.suppress(OSError):
                dropped += connection.recv(1) == b""  # the server closed it: no request ever completed
        assert dropped >= 990  # the header read time applies to each
        new = add_signed(repo, keys["alice"], "after-the-flood")
        assert service.webhook(SECRET).status == 202
        assert service.wait_for(lambda: service.served_commit() == new, what="a sync after the flood")
    finally:
        for connection in slow:
            connection.close()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@pytest.mark.slow
def test_load_while_syncing_has_no_errors_and_flat_memory(
    published_ledger: tuple[LedgerRepo, str], keys: dict[str, SshKey], start_service: Any
) -> None:
    """wrk for 20 s with 64 connections (heads, feeds, the log) while signed pushes are synced."""
    wrk = shutil.which("wrk")
    if wrk is None:
        pytest.fail("wrk is not installed: ./dev.sh test installs it")
    repo, url = published_ledger
    service = start_service(url, workers=4)
    service.wait_for(service.served_commit)
    for _ in range(200):  # warm every worker up before the first measure
        http("GET", service.url + "/v1/log.json?limit=10")
    workers = [int(p) for p in subprocess.run(["pgrep", "-P", str(service.process.pid)], capture_output=True,
                                              text=True).stdout.split()]  # fmt: skip
    before = {pid: _rss_kib(pid) for pid in workers}
    stop = threading.Event()
    pushed: list[str] = []

    def push() -> None:
        while not stop.is_set() and len(pushed) < 8:
            pushed.append(add_signed(repo, keys["alice"], f"under-load-{len(pushed)}"))
            service.webhook(SECRET)
            stop.wait(2)

    pusher = threading.Thread(target=push)
    pusher.start()
    script = Path(__file__).parent / "load" / "mixed.lua"
    try:
        result = subprocess.run([wrk, "-t2", "-c64", "-d20s", "--timeout", "5s", "-s", str(script), service.url],
                                capture_output=True, text=True, timeout=60)  # fmt: skip
    finally:
        stop.set()
        pusher.join()
    assert result.returncode == 0, result.stderr
    assert "Socket errors" not in result.stdout, result.stdout  # no connect, read, write or timeout errors
    assert "Non-2xx or 3xx responses" not in result.stdout, result.stdout
    service.wait_for(lambda: service.served_commit() == pushed[-1], what="the last push under load")
    after = {pid: _rss_kib(pid) for pid in workers}
    grew = {pid: after[pid] - before[pid] for pid in workers if after.get(pid)}
    assert len(grew) == len(workers)  # no worker died under load
    assert max(grew.values()) < 64 * 1024, grew  # KiB: memory stays flat (no per-request growth)


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_openapi(
    published_ledger: tuple[LedgerRepo, str], start_service: Any
) -> None:
    """Generated requests for every operation of /openapi.json (bounded), against the live service."""
    _, url = published_ledger
    service = start_service(url, workers=2, claims_rate="0")
    service.wait_for(service.served_commit)
    command = [str(Path(sys.executable).parent / "st"), "run", f"{service.url}/openapi.json", "--max-examples", "25",
               "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
               "response_schema_conformance", "--generation-deterministic", "--request-timeout", "10",
               "--exclude-checks", "unsupported_method,missing_required_header,ignored_auth"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-6000:]
    assert " generated, " in result.stdout and " failed" not in result.stdout.split("Test cases:")[-1]


def test_each_sync_is_logged_with_time_and_level(published_ledger: tuple[LedgerRepo, str], start_service: Any) -> None:
    _, url = published_ledger
    service = start_service(url, workers=2)
    first = service.wait_for(service.served_commit)
    service.wait_for(lambda: f"sync published: {first}" in service.log.read_text(), what="the sync's log line")
    line = next(line for line in service.log.read_text().splitlines() if f"sync published: {first}" in line)
    assert line.startswith("[20") and "[INFO]" in line and line.rstrip().endswith("s)")  # gunicorn's format


def test_the_service_refuses_to_start_with_a_trust_root_outside_the_history(
    published_ledger: tuple[LedgerRepo, str], feed_key_file: Path, tmp_path: Path
) -> None:
    _, url = published_ledger
    env = {**os.environ, "OPOS_REMOTE": url, "OPOS_DATA_DIR": str(tmp_path / "data"),
           "OPOS_FEED_KEY": str(feed_key_file), "OPOS_TRUST_ROOT": "0123456789abcdef" * 2 + "01234567"}  # fmt: skip
    command = [str(Path(sys.executable).parent / "gunicorn"), "-c", str(ROOT / "webhook" / "gunicorn.conf.py"),
               "--bind", f"127.0.0.1:{free_port()}", "webhook:create_app()"]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode != 0
    assert "the service cannot start: OPOS_TRUST_ROOT 0123456789abcdef" in result.stdout + result.stderr
    assert "wrong repository, wrong branch, or history rewritten" in result.stdout + result.stderr
    serve = subprocess.run([sys.executable, "-m", "opos", "serve", "--port", "0"], env=env, capture_output=True,
                           text=True, timeout=60)  # fmt: skip
    assert serve.returncode == 1 and "is not in the history of main" in serve.stderr and "Traceback" not in serve.stderr


def test_the_access_log_is_off_unless_asked_for(published_ledger: tuple[LedgerRepo, str], start_service: Any) -> None:
    _, url = published_ledger
    quiet, logged = start_service(url, workers=1), start_service(url, workers=1, access_log="-")
    for service in (quiet, logged):
        service.wait_for(service.served_commit)
        assert service.get("/v1/head.json").status == 200
    quiet.stop()
    logged.stop()
    assert "GET /v1/head.json" not in quiet.log.read_text()
    assert 'GET /v1/head.json HTTP/1.1" 200' in logged.log.read_text()


def test_a_refused_claim_says_why_and_is_asked_again_after_its_retry_after(
    published_ledger: tuple[LedgerRepo, str], keys: dict[str, SshKey], start_service: Any, tmp_path: Path,
    feed_key_file: Path,
) -> None:  # fmt: skip
    """The probe said "claim refused: do not run" without the reason, and remembered it for an hour, even after
    staff revoked the slot that was in the way."""
    repo, url = published_ledger
    service = start_service(url, workers=2, claims_per_address="0", claims_rate="0")
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    window = f"\n  start: {start:%Y-%m-%dT%H:%M:%SZ}\n  end: {start + dt.timedelta(days=2):%Y-%m-%dT%H:%M:%SZ}"
    capped = add_signed(repo, keys["alice"], "ir-one-slot", window=window,
                        target="\n  countries: [IR]\n  networks: [AS197207]\n  max_probes: 1")  # fmt: skip
    service.webhook(SECRET)
    service.wait_for(lambda: service.served_commit() == capped, what="the capped instruction")

    def probe(name: str) -> Any:
        return opos("probe", "--mirror", service.url, "--key", f"{feed_key_file}.pub", "--country", "IR", "--network",
                    "AS197207", "--claims", service.url, "--state", tmp_path / name)  # fmt: skip

    first = probe("first")
    assert "ir-one-slot" in first.out and "claim granted" in first.out, first.out
    second = probe("second")
    assert "claim refused (all 1 slots are taken): do not run" in second.out, second.out
    remembered = json.loads((tmp_path / "second" / "claims.json").read_text())["ir-one-slot"]
    at, until = dt.datetime.fromisoformat(remembered["at"]), dt.datetime.fromisoformat(remembered["until"])
    assert until - at == dt.timedelta(seconds=600)  # the answer's Retry-After, not an hour
    database = f"sqlite:///{service.env['OPOS_DATA_DIR']}/claims.sqlite3"
    first_id = (tmp_path / "first" / "probe_id").read_text().strip()
    assert opos("claims", "revoke", "--database", database, "--instruction", "ir-one-slot", "--probe-id",
                first_id).code == 0  # fmt: skip
    state = ProbeState(tmp_path / "second")
    entry = verify_envelope(service.get("/v1/feed.json").body, [load_public(Path(f"{feed_key_file}.pub"))])
    assert isinstance(entry.document, Feed)
    capped_entry = [e for e in entry.document.entries if e.id == "ir-one-slot"]
    me = Probe(state.probe_id(), "IR", "AS197207")
    ask = functools.partial(claim_each, capped_entry, [ClientMirror(service.url)], dt.timedelta(minutes=10),
                            HttpFetcher(), state, me, rng=random.Random(1), rejected=[])  # fmt: skip
    assert ask(now=until - dt.timedelta(seconds=1)) == {"ir-one-slot": "refused"}  # remembered: not asked
    assert ask(now=until + dt.timedelta(seconds=1)) == {"ir-one-slot": "granted"}  # asked again: the slot is free
