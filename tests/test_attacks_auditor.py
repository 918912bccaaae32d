"""The auditor under attack (issue 21), for real: gunicorn with webhook/auditor.conf.py, git daemon, 127.0.0.1.

An auditor is reached by anyone (POST /v1/cosign) and fetches from a remote it does not control: slow
bodies, an enormous or silent remote, a damaged log and raw bytes each get a bounded, clear refusal.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from attackers import SlowBodies, get_from, raw_request

from conftest import LedgerRepo, SshKey, opos, push
from servers import GUNICORN, ROOT, AuditorProcess

StartAuditor = Callable[..., AuditorProcess]


@pytest.fixture
def feed(published_ledger: tuple[LedgerRepo, str], feed_key_file: Path, tmp_path: Path) -> bytes:
    """The feed of the published ledger's head, signed with the pinned feed key."""
    repo, _ = published_ledger
    site = tmp_path / "site"
    assert opos("render", "--repo", repo.path, "--key", feed_key_file, "--out", site).code == 0
    return (site / "v1" / "feed.json").read_bytes()


def cosign_from(source: str, auditor: AuditorProcess, envelope: bytes, timeout: float) -> Any:
    request = (f"POST /v1/cosign HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(envelope)}\r\nConnection: close\r\n\r\n").encode() + envelope  # fmt: skip
    return raw_request(auditor.port, request, source, timeout)


@pytest.mark.slow
def test_500_slow_bodies_to_cosign_leave_health_and_a_real_cosign_answered(
    start_auditor: StartAuditor, feed: bytes
) -> None:
    """450 slow 4 MB bodies on /v1/cosign used to time /healthz out: with auditors required, nothing was published."""
    auditor = start_auditor()
    assert auditor.cosign(feed).status == 200  # fetched and cosigned once: asking again is answered from the log
    head = (b"POST /v1/cosign HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 4000000\r\n\r\n")  # fmt: skip
    answers = []
    with SlowBodies(auditor.port, 500, head) as attack:
        ends = time.monotonic() + 15
        while time.monotonic() < ends:
            for ask in (lambda: get_from("127.0.0.2", auditor.port, "/healthz", timeout=2),
                        lambda: cosign_from("127.0.0.2", auditor, feed, timeout=2)):  # fmt: skip
                try:
                    answers.append(ask().status)
                except OSError:
                    answers.append(0)  # not answered within 2 s
            time.sleep(0.5)
        assert attack.reopened >= 400  # past the per-address limit, closed at once and opened again
    assert len(answers) >= 40 and set(answers) == {200}, answers


def test_an_enormous_repository_at_the_remote_is_refused_at_the_fetch_limit(
    published_ledger: tuple[LedgerRepo, str], keys: dict[str, SshKey], start_auditor: StartAuditor, feed: bytes
) -> None:
    repo, _ = published_ledger
    repo.write("attachments/huge.bin", os.urandom(3 * 1024 * 1024).hex())  # 6 MB that does not compress
    repo.commit("Something enormous", keys["alice"])
    push(repo)
    auditor = start_auditor(auditor_fetch_bytes=str(1024 * 1024))
    answer = auditor.cosign(feed, timeout=30)
    assert answer.status == 503 and "OPOS_AUDITOR_FETCH_BYTES" in answer.json()["detail"], answer.body
    clone = Path(auditor.env["OPOS_AUDITOR_STATE"]) / "ledger.git"
    assert not list(clone.glob("objects/pack/*.pack")) and not list(clone.glob("objects/tmp*"))  # nothing kept


def test_a_remote_that_never_answers_costs_the_fetch_deadline(start_auditor: StartAuditor, feed: bytes) -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (the kernel does), never says a word
    try:
        silent_remote = f"git://127.0.0.1:{silent.getsockname()[1]}/ledger.git"
        auditor = start_auditor(remote=silent_remote, auditor_fetch_seconds="2")
        answer = auditor.cosign(feed, timeout=20)
        assert answer.status == 503 and "within 2 s" in answer.json()["detail"], answer.body
        assert auditor.get("/healthz").status == 200  # the auditor itself is fine: the remote is not
    finally:
        silent.close()


def test_a_damaged_log_stops_cosigning_says_why_and_refuses_to_start(
    start_auditor: StartAuditor, feed: bytes, feed_key_file: Path, published_ledger: tuple[LedgerRepo, str]
) -> None:
    """A damaged middle line used to be dropped silently: the auditor forgot what it had cosigned."""
    auditor = start_auditor()
    assert auditor.cosign(feed).status == 200
    log = Path(auditor.env["OPOS_AUDITOR_STATE"]) / "cosigned.jsonl"
    line = log.read_text()
    log.write_text(line + line[: len(line) // 2] + "\n" + line)  # the second line cut short, the third whole
    health = auditor.get("/healthz")
    assert health.status == 503 and "damaged at line 2" in health.json()["problem"]
    refused = auditor.cosign(feed)
    assert refused.status == 503 and "cosigns nothing until then" in refused.json()["detail"]
    auditor.stop()
    started = subprocess.run(
        [str(GUNICORN), "-c", str(ROOT / "webhook" / "auditor.conf.py"), "--bind", f"127.0.0.1:{auditor.port}",
         "webhook.auditor:create_app()"],
        cwd=ROOT, env={**os.environ, **auditor.env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert started.returncode != 0 and "damaged at line 2" in started.stderr
    repo, _ = published_ledger
    feed_file = Path(tempfile.mkdtemp()) / "feed.json"
    feed_file.write_bytes(feed)
    state = auditor.env["OPOS_AUDITOR_STATE"]
    one_shot = opos("auditor", "cosign", feed_file, "--key", auditor.env["OPOS_AUDITOR_KEY"], "--feed-key",
                    f"{feed_key_file}.pub", "--repo", repo.path, "--state", state)  # fmt: skip
    assert one_shot.code == 2 and "damaged at line 2" in one_shot.err
    log.write_text(line + line[:20])  # a torn last line is what a crash leaves: it was never answered
    auditor.start()
    assert auditor.get("/healthz").status == 200 and auditor.cosign(feed).status == 200


def test_the_auditor_has_its_own_control_socket_and_reads_only_utf8(start_auditor: StartAuditor) -> None:
    auditor = start_auditor(state=Path(tempfile.mkdtemp(prefix="opos-auditor-", dir="/tmp")))  # short: a socket
    said = f"Control socket listening at {auditor.env['OPOS_AUDITOR_STATE']}/gunicorn.ctl"
    waited = time.monotonic() + 20  # gunicorn opens its control socket once the workers are up: it may log it late
    while said not in auditor.log.read_text() and time.monotonic() < waited:
        time.sleep(0.05)
    assert said in auditor.log.read_text()
    for line in ("GET /healthz?\xff=1", "GET /v1/cosigned.json?x=\xfe", "POST /v1/cosign?\xff", "GET /nope?\xff"):
        request = f"{line} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode("latin-1")
        answer = raw_request(auditor.port, request)
        assert answer.status == 400 and json.loads(answer.body)["detail"].endswith("percent-encoded where it is "
                                                                                    "not ASCII")  # fmt: skip
    assert "Traceback" not in auditor.log.read_text()
