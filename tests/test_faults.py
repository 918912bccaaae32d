"""Faults: the world failing under the service (its remote, its disk, its database, its own processes).

Each test breaks one thing for real, checks that the service says it is degraded, keeps serving the
last good feed, and refuses rather than guesses; then repairs it and checks that the service
recovers by itself.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from conftest import LedgerRepo, SshKey, instruction
from opos.model import format_time
from opos.signing.documents import verify_envelope
from opos.signing.keys import load_public
from opos.trust.gitrepo import GitObjects, fetch_branch
from servers import free_port, http
from webhook import create_app

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
WINDOW = f"\n  start: {format_time(NOW - dt.timedelta(days=1))}\n  end: {format_time(NOW + dt.timedelta(days=9))}"
CAPPED = "\n  countries: [IR]\n  networks: [AS197207]\n  max_probes: 5"


def make_app(remote: Path, data: Path, key: Path, **settings: Any) -> Flask:
    return create_app({"remote": str(remote), "data_dir": str(data), "feed_key": str(key), "follow": False,
                       "claims_rate": "0", "claims_per_address": 0, **settings})  # fmt: skip


def sync(app: Flask) -> Any:
    return app.extensions["opos"].syncer.sync()


def health(app: Flask) -> tuple[int, dict[str, Any]]:
    answer = app.test_client().get("/healthz")
    return answer.status_code, answer.json


def test_the_remote_unreachable_then_back(ledger_repo: LedgerRepo, tmp_path: Path, feed_key_file: Path) -> None:
    app = make_app(ledger_repo.path, tmp_path / "data", feed_key_file)
    assert sync(app).outcome == "published"
    served = app.test_client().get("/v1/head.json").data
    away = tmp_path / "away"
    ledger_repo.path.rename(away)
    try:
        assert sync(app).outcome == "failed"
        status, body = health(app)
        assert status == 503 and body["status"] == "degraded" and "cannot fetch" in body["problem"]
        assert app.test_client().get("/v1/head.json").data == served  # the last good feed, still served
    finally:
        away.rename(ledger_repo.path)
    assert sync(app).outcome in ("unchanged", "renewed")
    status, body = health(app)
    assert status == 200 and body["status"] == "ok"


def test_a_corrupted_object_in_the_local_clone(
    ledger_repo: LedgerRepo, keys: dict[str, SshKey], tmp_path: Path, feed_key_file: Path
) -> None:
    app = make_app(ledger_repo.path, tmp_path / "data", feed_key_file)
    assert sync(app).outcome == "published"
    served = app.test_client().get("/v1/head.json").data
    ledger_repo.write("ledger/instructions/second-one.yaml", instruction("second-one"))
    new = ledger_repo.commit("Second", keys["alice"])
    clone = tmp_path / "data" / "ledger.git"
    assert sync(app).outcome == "published"
    # damage the newest commit's object in our clone: the next sync that reads it must not trust it
    with GitObjects(clone) as objects:  # the fetch wrote a pack: overwrite the commit's bytes in it
        pack = next(p for p in objects.repo.object_store.packs if new.encode() in p)
        offset, path = pack.index.object_offset(new.encode()), Path(pack._data_path)
    with path.open("r+b") as handle:
        handle.seek(offset + 2)
        handle.write(os.urandom(16))
    shutil.rmtree(clone / "opos")  # forget the verdicts, so the commit is read again
    ledger_repo.write("ledger/instructions/third-one.yaml", instruction("third-one"))
    new = ledger_repo.commit("Third", keys["alice"])  # its verification walks back through the damaged one
    result = sync(app)
    assert result.outcome == "failed" and "damaged" in result.detail
    status, body = health(app)
    assert status == 503 and "fetched again on the next sync" in body["problem"]
    assert app.test_client().get("/v1/head.json").status_code == 200
    assert sync(app).outcome == "published"  # a fresh clone, verified from the trust root
    status, body = health(app)
    assert status == 200 and body["commit"] == new and served


def test_the_site_directory_not_writable(
    ledger_repo: LedgerRepo, keys: dict[str, SshKey], tmp_path: Path, feed_key_file: Path
) -> None:
    """As root, permissions do not stop a write: a file where the feed folder should be does (ENOTDIR)."""
    app = make_app(ledger_repo.path, tmp_path / "data", feed_key_file)
    assert sync(app).outcome == "published"
    served = app.test_client().get("/v1/head.json").data
    feeds = tmp_path / "data" / "site" / "v1" / "feed"
    aside = tmp_path / "feeds-aside"
    feeds.rename(aside)
    feeds.write_bytes(b"not a folder")
    ledger_repo.write("ledger/instructions/second-one.yaml", instruction("second-one"))
    new = ledger_repo.commit("Second", keys["alice"])
    try:
        assert sync(app).outcome == "failed"
        status, body = health(app)
        assert status == 503 and body["problem"]
        assert app.test_client().get("/v1/head.json").data == served
    finally:
        feeds.unlink()
        aside.rename(feeds)
    assert sync(app).outcome == "published" and health(app)[1]["commit"] == new


@pytest.fixture
def throwaway_postgres(tmp_path: Path) -> Iterator[Any]:
    """A PostgreSQL server of the test's own, on its own port (never the machine's shared one)."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    if not bins:
        pytest.fail("PostgreSQL's server binaries are not installed: ./dev.sh test installs them")
    # its own folder under /tmp: the postgres user cannot enter pytest's (root's, mode 0700)
    bin_dir, folder = bins[-1], Path(tempfile.mkdtemp(prefix="opos-pg-", dir="/tmp"))
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(folder, "postgres")
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(folder / "data"), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True)  # fmt: skip

    class Server:
        port = 0

        @property
        def url(self) -> str:
            return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

        def ctl(self, *args: str) -> None:
            options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {folder}"
            subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(folder / "data"), "-l", str(folder / "log"),
                            "-w", "-o", options, *args], check=True, capture_output=True)  # fmt: skip

    server = Server()
    for attempt in range(3):  # a free port can be taken before the server binds it (a CI run met one)
        server.port = free_port()
        try:
            server.ctl("start")
            break
        except subprocess.CalledProcessError:
            if attempt == 2 or "Address already in use" not in (folder / "log").read_text(errors="replace"):
                raise
    yield server
    subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(folder / "data"), "-m", "immediate", "stop"],
                   capture_output=True)  # fmt: skip
    shutil.rmtree(folder, ignore_errors=True)


def test_the_claims_database_stopped_and_restarted(
    ledger_repo: LedgerRepo, keys: dict[str, SshKey], tmp_path: Path, feed_key_file: Path, throwaway_postgres: Any
) -> None:
    ledger_repo.write("ledger/instructions/capped-one.yaml", instruction("capped-one", window=WINDOW, target=CAPPED))
    ledger_repo.commit("A capped run", keys["alice"])
    app = make_app(ledger_repo.path, tmp_path / "data", feed_key_file, claims_database=throwaway_postgres.url)
    assert sync(app).outcome == "published"
    client = app.test_client()

    def claim(probe: str) -> Any:
        document = {"instruction": "capped-one", "probe_id": probe, "country": "IR", "network": "AS197207"}
        return client.post("/v1/claims", json=document)

    assert claim("probe-before-the-stop").json["granted"]
    throwaway_postgres.ctl("-m", "fast", "stop")
    refused = claim("probe-during-the-stop")
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "60"  # refused, never granted uncapped
    status, body = health(app)
    assert status == 503 and "claims database is unavailable" in body["problem"]
    assert client.get("/v1/head.json").status_code == 200  # the feed is still served
    throwaway_postgres.ctl("start")
    assert claim("probe-after-the-restart").json["granted"]  # a new connection, by itself
    assert claim("probe-before-the-stop").json["used"] == 2  # the slots survived
    assert health(app)[0] == 200


@pytest.mark.slow
def test_sigkill_of_the_leader_during_fifty_publishes(
    published_ledger: tuple[LedgerRepo, str], keys: dict[str, SshKey], start_service: Any, feed_key_file: Path
) -> None:
    """Every head served verifies, its feed is there and matches, and the sequence never goes back."""
    repo, url = published_ledger
    service = start_service(url, workers=3)
    service.wait_for(service.served_commit)
    public = [load_public(Path(f"{feed_key_file}.pub"))]
    stop = threading.Event()
    seen: list[int] = []
    problems: list[str] = []

    def watch() -> None:
        while not stop.is_set():
            try:
                head = http("GET", service.url + "/v1/head.json", timeout=5)
                verified = verify_envelope(head.body, public).document
                feed = http("GET", f"{service.url}/v1/feed/{verified.commit}.json", timeout=5)
                if feed.status != 200 or hashlib.sha256(feed.body).hexdigest() != verified.feed_sha256:  # type: ignore[union-attr]
                    problems.append(f"head {verified.commit} names a feed that is not served as it says")
                seen.append(verified.sequence)
            except Exception as err:  # a worker killed mid-answer: a failed request, never a wrong one
                if "verify" in repr(err) or "Envelope" in type(err).__name__:
                    problems.append(repr(err))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    killed = 0
    try:
        for number in range(50):
            repo.write(f"ledger/instructions/many-{number}.yaml", instruction(f"many-{number}"))
            repo.commit(f"Many {number}", keys["alice"])
            repo.git("push", "-q", "origin", "main")
            service.webhook("s3cret")
            if number % 10 == 5:
                lock = Path(service.env["OPOS_DATA_DIR"]) / "sync.lock"
                inode = f":{lock.stat().st_ino} "
                for line in Path("/proc/locks").read_text().splitlines():
                    if inode in line:
                        os.kill(int(line.split()[4]), signal.SIGKILL)
                        killed += 1
            time.sleep(0.1)
        final = repo.head()
        service.wait_for(lambda: service.served_commit() == final, seconds=90, what="the last push")
        # the watcher samples every 20 ms: let it see the last head before it stops, or it may stop just before
        service.wait_for(lambda: seen and seen[-1] == 50, seconds=10, what="the watcher to see the last head")
    finally:
        stop.set()
        watcher.join()
    assert killed >= 3 and not problems
    assert seen == sorted(seen) and seen[-1] == 50  # never went back; every push was published in the end


def test_a_ref_lock_left_by_a_fetch_killed_mid_write_does_not_wedge_the_clone(
    ledger_repo: LedgerRepo, keys: dict[str, SshKey], tmp_path: Path
) -> None:
    """A leader SIGKILLed while it wrote refs/heads/main.lock left every later sync failing with FileLocked."""
    clone = tmp_path / "clone.git"
    assert fetch_branch(clone, str(ledger_repo.path), "main") == ledger_repo.head()
    (clone / "refs" / "heads" / "main.lock").write_text("0" * 40 + "\n")  # what the killed fetch left
    ledger_repo.write("ledger/instructions/after-the-kill.yaml", instruction("after-the-kill"))
    new = ledger_repo.commit("After the kill", keys["alice"])
    assert fetch_branch(clone, str(ledger_repo.path), "main") == new
    assert not (clone / "refs" / "heads" / "main.lock").exists()
