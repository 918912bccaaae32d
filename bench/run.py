"""Every performance figure of OPOS, each beside its reference in the same run; writes docs/performance.md.

    ./dev.sh bench                 installs wrk and nginx from Debian's packages if missing, then runs this
    .venv/bin/python bench/run.py [--quick] [--repeat 3] [--out docs/performance.md]

It builds its own ledgers with real SSH-signed commits, starts what it measures (gunicorn with
the shipped configuration, nginx, `git daemon`, probes) on 127.0.0.1 only, and stops it all by
itself. Figures are medians over repeated runs, with min and max. The test suite never asserts
a duration: this is where speed is measured. --quick uses small ledgers, to check that the
benchmark itself works (tests/test_bench.py runs it so).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import hmac
import http.client
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))

import ledgers
import report
from measure import BenchFailed, Figure, repeat, run_child, timed

from opos.eventlog.logindex import LogIndex, LogQuery, select
from opos.probe.poll import ClientConfig, poll
from opos.probe.trusted import TrustAnchors
from opos.publish.site import published_commit
from opos.signing import keys
from opos.signing.documents import forget_verified
from opos.transport import Mirror
from opos.trust.gitrepo import GitLedger
from opos.trust.verification import Verification
from servers import GitDaemon, free_port, terminate, wait_for_port

PYTHON = sys.executable
OPOS = [PYTHON, "-m", "opos"]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SECRET = "bench-secret"
DOC = ROOT / "docs" / "performance.md"


@dataclass(frozen=True)
class Sizes:
    wide: int  # instructions in one commit: render and check
    commits: int  # the long history
    history_instructions: int
    service_instructions: int
    pushes: int
    probe_pushes: int
    syncs: int  # leader memory
    claims: int
    claim_clients: int
    wrk_seconds: int


FULL = Sizes(10_000, 10_000, 1_000, 1_000, 30, 5, 1_000, 10_000, 32, 10)
QUICK = Sizes(300, 300, 50, 100, 5, 1, 20, 400, 8, 2)


def git(*args: str | Path) -> str:
    return subprocess.run(["git", *map(str, args)], check=True, capture_output=True, text=True).stdout


def fresh_clone(source: Path, into: Path) -> Path:
    """A clone as a new host gets one: over the git protocol's pack (not hard links), no .git/opos."""
    shutil.rmtree(into, ignore_errors=True)
    git("clone", "-q", "--no-local", source, into)
    return into


# --- the machine itself, so that runs on different days can be compared ---


def machine_speed(times: int) -> list[float]:
    """A fixed amount of plain Python work: when it takes longer, every figure of the run is slower too."""

    def loop() -> float:
        started = time.perf_counter()
        total = 0
        for number in range(5_000_000):
            total += number * number % 7
        return time.perf_counter() - started

    return repeat(max(times, 3), loop)


def machine_row(first: list[float], last: list[float]) -> Figure:
    """Measured when the run starts and when it ends: this shared machine's speed moves within one run too."""
    note = f"start {statistics.median(first):.3f} s, end {statistics.median(last):.3f} s"
    return Figure("machine speed", "a fixed Python loop (5,000,000 multiplications and remainders), at the start "
                  "and at the end of the run; compare it between runs before comparing their figures", "s",
                  first + last, note=note)  # fmt: skip


# --- the command line: render, check, verify ---


def cli_rows(work: Path, sizes: Sizes, times: int, feed_key: Path) -> list[Figure]:
    print(f"building {sizes.wide} instructions in one signed commit", flush=True)
    wide = ledgers.wide(work / "wide", sizes.wide)
    git("-C", wide.path, "checkout", "-q", "-f", "main")
    site = work / "wide-site"

    def first_render() -> float:
        clone = fresh_clone(wide.path, work / "wide-clone")
        shutil.rmtree(site, ignore_errors=True)
        return run_child([*OPOS, "render", "--repo", clone, "--key", feed_key, "--out", site])[0]

    first = repeat(times, first_render)
    payload = json.loads(base64.b64decode(json.loads((site / "v1" / "feed.json").read_bytes())["payload"]))
    dumps = repeat(times, lambda: timed(lambda: json.dumps(payload, sort_keys=True, separators=(",", ":"))))
    clone = work / "wide-clone"
    render_again = [*OPOS, "render", "--repo", clone, "--key", feed_key, "--out", site]
    unchanged = repeat(times, lambda: run_child(render_again)[0])  # as a scheduled run does: the head renewed
    changed = ledgers.BenchLedger(clone, wide.staff, wide.instructions, wide.window, wide.head, wide.when)

    def rerender() -> float:
        changed.change()
        return run_child([*OPOS, "render", "--repo", clone, "--key", feed_key, "--out", site])[0]

    again = repeat(times, rerender)
    profile_first_render(work, wide.path, feed_key)

    def check(cold: bool) -> float:
        if cold:
            shutil.rmtree(wide.path / ".git" / "opos", ignore_errors=True)
        return run_child([*OPOS, "check", "--repo", wide.path])[0]

    check_cold = repeat(times, lambda: check(True))
    check_warm = repeat(times, lambda: check(False))
    return [
        Figure("first render", f"{sizes.wide:,} instructions in one signed commit, fresh clone, no caches", "s",
               first, 1.5, reference="`json.dumps` of the same feed", reference_samples=dumps),
        Figure("render of a warm clone, nothing changed", "the same commit into the same site again (a scheduled "
               "run): the head renewed", "s", unchanged, 0.4),
        Figure("re-render after one change (CLI)", "same clone, one file changed and committed", "s", again, 0.4),
        Figure("`opos check`, first", f"{sizes.wide:,} files in the work tree, nothing saved", "s", check_cold, 1.2),
        Figure("`opos check`, again", "the same files, verdicts saved by the first run", "s", check_warm, 1.2),
    ]  # fmt: skip


PROFILE: list[str] = []


def profile_first_render(work: Path, source: Path, feed_key: Path) -> None:
    """One more first render under cProfile: its 25 most expensive calls, for the report."""
    clone = fresh_clone(source, work / "profile-clone")
    stats = work / "render.prof"
    site = work / "profile-site"
    run_child([PYTHON, "-m", "cProfile", "-o", stats, "-m", "opos", "render", "--repo", clone, "--key", feed_key,
               "--out", site])  # fmt: skip
    _, _, out = run_child([PYTHON, "-c", "import pstats, sys; pstats.Stats(sys.argv[1], stream=sys.stdout)"
                           ".strip_dirs().sort_stats('cumulative').print_stats(25)", stats])  # fmt: skip
    lines = out.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().startswith("ncalls")), 0)
    PROFILE.append("\n".join(line.rstrip() for line in lines[start:] if line.strip()))


def verify_rows(work: Path, sizes: Sizes, times: int, history: ledgers.BenchLedger) -> list[Figure]:
    def cold_verify() -> float:
        clone = fresh_clone(history.path, work / "history-clone")
        return run_child([*OPOS, "verify", "--repo", clone])[0]

    verify = repeat(times, cold_verify)
    clone = work / "history-clone"
    signers = work / "allowed_signers"
    signers.write_bytes((clone / "ledger" / "allowed_signers").read_bytes())
    git("-C", clone, "config", "gpg.ssh.allowedSignersFile", signers)
    sample = min(500, sizes.commits)

    def reference() -> float:
        seconds = timed(lambda: git("-C", clone, "log", f"-{sample}", "--show-signature", "--format=%H"))
        return seconds * sizes.commits / sample

    references = repeat(times, reference)
    return [
        Figure("cold verify", f"{sizes.commits:,} signed commits, fresh clone", "s", verify, 1.0,
               reference=f"`git log --show-signature` (one ssh-keygen per commit; {sample} timed, scaled)",
               reference_samples=references),
    ]  # fmt: skip


def first_sync(remote: str, data: Path, feed_key: Path, peaks: list[float]) -> float:
    _, peak, out = run_child([PYTHON, HERE / "service_child.py", "first-sync", remote, data, feed_key])
    result = json.loads(out)
    if result["outcome"] != "published":
        raise BenchFailed(f"the first sync was {result['outcome']}: {result['detail']}")
    peaks.append(peak / 2**20)
    return float(result["seconds"])


def history_rows(work: Path, sizes: Sizes, times: int, history: ledgers.BenchLedger, feed_key: Path) -> list[Figure]:
    seconds, peaks = [], []
    served = work / "history-daemon"
    served.mkdir(exist_ok=True)
    git("clone", "-q", "--bare", history.path, served / "ledger.git")
    daemon = GitDaemon(served)  # a new instance fetches over the network, from C git, as in production
    try:
        for attempt in range(times):
            data = work / f"first-sync-{attempt}"
            seconds.append(first_sync(daemon.url("ledger.git"), data, feed_key, peaks))
            if attempt < times - 1:
                shutil.rmtree(data)
    finally:
        daemon.stop()
    setting = (
        f"first sync of a new instance, fetching over `git daemon`: {sizes.commits:,} commits × "
        f"{sizes.history_instructions:,} instructions"
    )
    figures = [
        Figure("long history: time", setting, "s", seconds, 5.0),
        Figure("long history: peak memory", setting, "MB", peaks, 300),
    ]
    # the log query, on the index that first sync built
    data = work / f"first-sync-{times - 1}"
    head = published_commit(data / "site")
    if head is None:
        raise BenchFailed("the first sync published nothing")
    with GitLedger(data / "ledger.git") as ledger:
        verification = Verification.open(ledger, head, None)
        index = LogIndex.for_verification(verification)
        index.update(verification, head)
        events = index.events()
        now = dt.datetime.now(dt.UTC)
        query = LogQuery(country="IR", network=f"AS{1000 + sizes.history_instructions // 2}", limit=50)
        first = timed(lambda: select(events, now, query))
        warm = repeat(max(times, 20), lambda: timed(lambda: select(events, now, query)))
    figures.append(
        Figure("log query", f"{sizes.commits:,} commits, country + network filter, one page of 50", "ms",
               [s * 1000 for s in warm], 20, note=f"the first query after a new commit also parses the history: "
               f"{first * 1000:.0f} ms")
    )  # fmt: skip
    return figures


def leader_rows(work: Path, sizes: Sizes, feed_key: Path) -> list[Figure]:
    bench = ledgers.wide(work / "leader-ledger", sizes.service_instructions)
    described = work / "leader-ledger.json"
    described.write_text(json.dumps({
        "path": str(bench.path), "key": bench.staff.private_bytes_raw().hex(), "instructions": bench.instructions,
        "window": list(bench.window), "head": bench.head, "when": bench.when, "step": bench.step,
    }))  # fmt: skip
    _, _, out = run_child([PYTHON, HERE / "service_child.py", "leader", bench.path, work / "leader-data", feed_key,
                           described, str(sizes.syncs)])  # fmt: skip
    result = json.loads(out)
    if result["bad"]:
        raise BenchFailed(f"syncs that did not publish: {result['bad']}")
    mib = [result["after_first"] / 2**20, *(s / 2**20 for s in result["samples"])]
    return [
        Figure("leader memory", f"after the first sync of {sizes.service_instructions:,} instructions, then every "
               f"{max(sizes.syncs // 5, 1)} of {sizes.syncs:,} more syncs (each a new commit)", "MB", mib, 150,
               note=f"after the first sync {mib[0]:.0f} MB; after the last {mib[-1]:.0f} MB"),
    ]  # fmt: skip


# --- the service under gunicorn ---


class Running:
    """gunicorn with the shipped configuration following a ledger through `git daemon`, and its data."""

    def __init__(
        self, work: Path, sizes: Sizes, feed_key: Path, claims_database: str | None, auditors: int = 0
    ) -> None:
        root = work / "daemon"
        root.mkdir(parents=True, exist_ok=True)
        self.capped = f"claims-{os.urandom(6).hex()}"  # claims are kept by instruction id: a new one each run
        self.bench = ledgers.wide(root / "staff", sizes.service_instructions, self.capped, sizes.claims // 2)
        git("clone", "-q", "--bare", self.bench.path, root / "ledger.git")
        git("-C", self.bench.path, "remote", "add", "origin", str(root / "ledger.git"))
        self.daemon = GitDaemon(root)
        git("-C", self.bench.path, "remote", "set-url", "origin", self.daemon.url("ledger.git"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = work / f"service-data-{self.port}"
        env = {"OPOS_REMOTE": self.daemon.url("ledger.git"), "OPOS_DATA_DIR": str(self.data),
               "OPOS_FEED_KEY": str(feed_key), "OPOS_WEBHOOK_SECRET": SECRET, "OPOS_POLL_SECONDS": "3600",
               "OPOS_CLAIMS_PER_ADDRESS": "0", "OPOS_CLAIMS_RATE": "0",  # every probe comes from 127.0.0.1
               "OPOS_OONIRUN_AUTHOR": "bench@ooni.example"}  # fmt: skip
        if claims_database:
            env["OPOS_CLAIMS_DATABASE"] = claims_database
        self.auditors = [
            Auditor(work / f"auditor-{n}", self.daemon.url("ledger.git"), feed_key) for n in range(auditors)
        ]
        if self.auditors:
            env["OPOS_AUDITORS"] = ",".join(a.url for a in self.auditors)
            env["OPOS_AUDITORS_REQUIRED"] = str(len(self.auditors))
            env["OPOS_AUDITOR_KEYS"] = ",".join(str(a.folder / "key.pub") for a in self.auditors)
        self.log = work / f"gunicorn-{self.port}.log"
        self.process = subprocess.Popen(
            [PYTHON, "-m", "gunicorn", "-c", ROOT / "webhook" / "gunicorn.conf.py", "--bind", f"127.0.0.1:{self.port}",
             "webhook:create_app()"],
            cwd=ROOT, env={**os.environ, **env}, stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for_port(self.port, 60)
        deadline = time.monotonic() + 300
        while self.served() != self.bench.head:
            if time.monotonic() > deadline:
                raise BenchFailed(f"the service did not publish; its log:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.1)

    def served(self) -> str | None:
        try:
            with urllib.request.urlopen(self.url + "/v1/head.json", timeout=5) as answer:
                return json.loads(base64.b64decode(json.loads(answer.read())["payload"]))["commit"]  # type: ignore[no-any-return]
        except OSError:
            return None

    def bridged(self) -> str | None:
        """The commit the OONI Run bridge's link is derived from (its X-OPOS-Commit)."""
        try:
            with urllib.request.urlopen(self.url + "/api/v2/oonirun/links/10000", timeout=5) as answer:
                return answer.headers.get("X-OPOS-Commit")  # type: ignore[no-any-return]
        except OSError:
            return None

    def push(self) -> str:
        commit = self.bench.change()
        git("-C", self.bench.path, "push", "-q", "origin", "main")
        return commit

    def webhook(self) -> None:
        # a push's body names its commit: the same body again is a replay, which the service ignores
        body = json.dumps({"ref": "refs/heads/main", "after": os.urandom(20).hex()}).encode()
        signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        headers = {"X-GitHub-Event": "push", "X-Hub-Signature-256": signature, "Content-Type": "application/json"}
        request = urllib.request.Request(self.url + "/hooks/github", body, headers)
        urllib.request.urlopen(request, timeout=5).read()

    def stop(self) -> None:
        terminate(self.process, 30)
        for auditor in self.auditors:
            terminate(auditor.process, 30)
        self.daemon.stop()


class Auditor:
    """An auditor under gunicorn (webhook/auditor.conf.py) following the service's ledger."""

    def __init__(self, folder: Path, remote: str, feed_key: Path) -> None:
        folder.mkdir(parents=True)
        self.folder = folder
        run_child([*OPOS, "keygen", "--out", folder / "key"])
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {"OPOS_AUDITOR_KEY": str(folder / "key"), "OPOS_AUDITOR_FEED_KEYS": f"{feed_key}.pub",
               "OPOS_AUDITOR_STATE": str(folder / "state"), "OPOS_AUDITOR_REMOTE": remote}  # fmt: skip
        self.process = subprocess.Popen(
            [PYTHON, "-m", "gunicorn", "-c", ROOT / "webhook" / "auditor.conf.py", "--bind", f"127.0.0.1:{self.port}",
             "webhook.auditor:create_app()"],
            cwd=ROOT, env={**os.environ, **env}, stdout=(folder / "gunicorn.log").open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for_port(self.port, 60)


@contextmanager
def nginx(work: Path, site: Path) -> Iterator[str]:
    """nginx serving the service's own site directory, as a static mirror would."""
    if not Path(NGINX).exists():
        raise BenchFailed("nginx is not installed: ./dev.sh bench installs it (apt-get install nginx-light)")
    folder = work / "nginx"
    folder.mkdir(exist_ok=True)
    port = free_port()
    user = "user root;" if os.getuid() == 0 else ""
    (folder / "nginx.conf").write_text(f"""
        daemon off; worker_processes 2; {user}
        pid {folder}/nginx.pid; error_log {folder}/error.log warn;
        events {{ worker_connections 1024; }}
        http {{
            access_log off; types {{ application/json json; }}
            client_body_temp_path {folder}/body; proxy_temp_path {folder}/proxy;
            fastcgi_temp_path {folder}/fastcgi; uwsgi_temp_path {folder}/uwsgi; scgi_temp_path {folder}/scgi;
            server {{ listen 127.0.0.1:{port}; root {site}; }}
        }}
    """)
    process = subprocess.Popen([NGINX, "-c", folder / "nginx.conf", "-p", folder])
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def wrk(url: str, seconds: int, etag: str | None = None) -> float:
    command = ["wrk", "-t2", "-c64", f"-d{seconds}s", url]
    if etag:
        command[1:1] = ["-H", f"If-None-Match: {etag}"]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    statuses = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if statuses:
        raise BenchFailed(f"{url}: {statuses.group(1)} answers were errors")
    return float(match.group(1)) if match else 0.0


def etag_of(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return str(answer.headers["ETag"])


def throughput_rows(service: Running, work: Path, sizes: Sizes, times: int) -> list[Figure]:
    site = service.data / "site"
    with nginx(work, site) as static:
        rows = []
        for path, conditional, target, name in (("/v1/head.json", True, 0.10, "head poll"),
                                               ("/v1/feed.json", False, 0.40, "feed download")):  # fmt: skip
            ours, theirs = [], []
            for _ in range(times):
                for base, into in ((service.url, ours), (static, theirs)):
                    into.append(wrk(base + path, sizes.wrk_seconds, etag_of(base + path) if conditional else None))
            size = (site / path.lstrip("/")).stat().st_size
            answer = "304 (If-None-Match)" if conditional else f"200 ({size // 1024} KiB)"
            setting = (f"`GET {path}` {answer}, wrk 2 threads 64 connections {sizes.wrk_seconds} s, "
                       "the shipped gunicorn configuration")  # fmt: skip
            rows.append(Figure(name, setting, "req/s", ours, target, "higher", "nginx serving the same site directory",
                               theirs, target_is_ratio=True))  # fmt: skip
    return rows


def latency_rows(service: Running, sizes: Sizes, auditors: int = 0) -> list[Figure]:
    latencies, bridged = [], []
    for _ in range(sizes.pushes):
        commit = service.push()
        started = time.perf_counter()
        service.webhook()
        gives_up = time.monotonic() + 60
        seen: dict[str, float] = {}
        while len(seen) < (1 if auditors else 2):  # the head, and the OONI Run bridge's link
            if time.monotonic() > gives_up:
                raise RuntimeError(f"push → served: {commit} was not served within 60 s")
            for what, ask in (("head", service.served), ("bridge", service.bridged))[: 1 if auditors else 2]:
                if what not in seen and ask() == commit:
                    seen[what] = time.perf_counter() - started
            time.sleep(0.02)
        latencies.append(seen["head"])
        bridged += [seen["bridge"]] if "bridge" in seen else []
        time.sleep(0.6)  # a push every few tenths of a second at most: the service's sync floor never applies
    p99 = sorted(latencies)[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    if auditors:
        return [
            Figure(f"push → served, {auditors} auditors", f"as above, each new commit cosigned by {auditors} auditors "
                   "under gunicorn (each fetches and re-renders it) before its head is published", "s", latencies, 1.0,
                   note=f"p99 {p99:.3f} s"),
        ]  # fmt: skip
    return [
        Figure("push → served", f"{sizes.pushes} signed pushes over `git daemon`, webhook, "
               f"{sizes.service_instructions:,} instructions, sampled every 20 ms", "s", latencies, 0.08,
               reference="the design's 60 s", reference_samples=[60.0], note=f"p99 {p99:.3f} s (target ≤ 0.2 s)"),
        Figure("push → served through the OONI Run bridge", "the same pushes: until `GET "
               "/api/v2/oonirun/links/10000` names the new commit (X-OPOS-Commit), sampled with the head", "s",
               bridged, 0.08, reference="push → served (the head)", reference_samples=latencies),
    ]  # fmt: skip


def probe_rows(service: Running, work: Path, sizes: Sizes, feed_key: Path) -> list[Figure]:
    interval = 5.0
    command = [*OPOS, "probe", "--mirror", service.url, "--key", f"{feed_key}.pub", "--state", work / "probe-state",
               "--country", "IR", "--network", "AS1500", "--json", "--watch", str(interval)]  # fmt: skip
    process = subprocess.Popen([str(p) for p in command], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    seen: dict[str, float] = {}

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            try:
                commit = json.loads(line).get("commit")
            except ValueError:
                continue
            if commit and commit not in seen:
                seen[commit] = time.perf_counter()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    delays = []
    try:
        deadline = time.monotonic() + 30
        while not seen and time.monotonic() < deadline:
            time.sleep(0.1)
        for _ in range(sizes.probe_pushes):
            commit = service.push()
            started = time.perf_counter()
            service.webhook()
            deadline = time.monotonic() + interval * 3
            while commit not in seen and time.monotonic() < deadline:
                time.sleep(0.01)
            if commit not in seen:
                raise BenchFailed(f"the probe did not plan from {commit} within {interval * 3} s")
            delays.append(seen[commit] - started)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=15)
    return [
        Figure("push → probe plan", f"a probe in `--watch` polling every {interval:.0f} s", "s", delays,
               interval + 0.5, reference="its interval", reference_samples=[interval]),
    ]  # fmt: skip


def client_rows(service: Running, work: Path, sizes: Sizes, times: int, feed_key: Path) -> list[Figure]:
    public = keys.load_public(Path(f"{feed_key}.pub"))

    def config(state: Path) -> ClientConfig:
        return ClientConfig([Mirror(service.url)], TrustAnchors(keys=(public,)), "IR", "AS1500", state)

    def fresh() -> float:  # a probe's first poll: nothing cached, nothing remembered
        state = work / "client-state"
        shutil.rmtree(state, ignore_errors=True)
        forget_verified()
        return timed(lambda: poll(config(state)))

    first = repeat(max(times, 10), fresh)
    steady = repeat(max(times, 10), lambda: timed(lambda: poll(config(work / "client-state"))))
    return [
        Figure("client poll, new feed", f"fetch, verify head + feed ({sizes.service_instructions:,} instructions) "
               "and plan, over HTTP from the service", "ms", [s * 1000 for s in first], 20),
        Figure("client poll, unchanged", "head answered 304, the cached feed confirmed (verified in full once "
               "per process), plan", "ms",
               [s * 1000 for s in steady], 20),
    ]  # fmt: skip


def claim_storm(service: Running, claims: int, clients: int) -> tuple[float, int, int]:
    """`claims` claims from `clients` threads with keep-alive, each for a new probe: (seconds, sent, granted)."""
    run_id = base64.b32encode(os.urandom(5)).decode().lower()
    per_client = claims // clients
    granted: list[int] = []
    errors: list[str] = []

    def client(number: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=30)
        mine = 0
        try:
            for index in range(per_client):
                body = json.dumps({"instruction": service.capped, "country": "IR", "network": "AS1",
                                   "probe_id": f"bench-{run_id}-{number:03}-{index:06}"})  # fmt: skip
                connection.request("POST", "/v1/claims", body, {"Content-Type": "application/json"})
                answer = connection.getresponse()
                data = answer.read()
                if answer.status != 200:
                    errors.append(f"{answer.status} {data[:200]!r}")
                    return
                mine += bool(json.loads(data)["granted"])
        finally:
            connection.close()
            granted.append(mine)  # list.append is atomic: no lock needed

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if errors:
        raise BenchFailed(f"claims were refused: {errors[:3]}")
    return seconds, per_client * clients, sum(granted)


def claims_rows(work: Path, sizes: Sizes, feed_key: Path, backends: list[tuple[str, str | None]]) -> list[Figure]:
    rows = []
    cap = sizes.claims // 2
    for name, database in backends:
        service = Running(work / f"claims-{name}", sizes, feed_key, database)
        try:
            seconds, sent, granted = claim_storm(service, sizes.claims, sizes.claim_clients)
        finally:
            service.stop()
        rows.append(
            Figure(f"claims ({name})", f"{sent:,} claims for one cap of {cap:,}, {sizes.claim_clients} concurrent "
                   "clients with keep-alive", "claims/s", [sent / seconds], 1000, "higher",
                   note=f"granted {granted:,} of a cap of {cap:,}: {'exact' if granted == cap else 'NOT EXACT'}")
        )  # fmt: skip
    return rows


def postgres_url() -> str | None:
    url = os.environ.get("OPOS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    try:
        import psycopg

        psycopg.connect(url, connect_timeout=3).close()
    except Exception:  # no server: the row says so
        return None
    return url


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small ledgers: check that the benchmark works")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each figure (default: 3)")
    parser.add_argument("--out", type=Path, help="where to write (default: docs/performance.md; with --quick, a "
                        "temporary file, so that a quick run never replaces the real figures)")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    os.environ.setdefault("OPOS_OONIRUN_AUTHOR", "bench@ooni.example")  # every service it starts has the bridge on
    if args.out is None:
        args.out = Path(tempfile.gettempdir()) / "opos-performance-quick.md" if args.quick else DOC
    work = Path(tempfile.mkdtemp(prefix="opos-bench-"))
    started = time.monotonic()
    figures: list[Figure] = []
    try:
        feed_key = work / "feed-key"
        run_child([*OPOS, "keygen", "--out", feed_key])
        speed_at_start = machine_speed(args.repeat)
        figures += cli_rows(work, sizes, args.repeat, feed_key)
        print(f"building {sizes.commits:,} signed commits over {sizes.history_instructions:,} instructions", flush=True)
        history = ledgers.long(work / "history", sizes.commits, sizes.history_instructions)
        git("-C", history.path, "gc", "-q")
        figures += verify_rows(work, sizes, args.repeat, history)
        figures += history_rows(work, sizes, args.repeat, history, feed_key)
        figures += leader_rows(work, sizes, feed_key)
        print("starting the service under gunicorn", flush=True)
        service = Running(work / "service", sizes, feed_key, None)
        try:
            figures += throughput_rows(service, work, sizes, args.repeat)
            figures += latency_rows(service, sizes)
            figures += probe_rows(service, work, sizes, feed_key)
            figures += client_rows(service, work, sizes, args.repeat, feed_key)
        finally:
            service.stop()
        print("starting the service with two auditors", flush=True)
        audited = Running(work / "audited", sizes, feed_key, None, auditors=2)
        try:
            figures += latency_rows(audited, sizes, auditors=2)
        finally:
            audited.stop()
        backends: list[tuple[str, str | None]] = [("SQLite", None)]
        database = postgres_url()
        if database:
            backends.append(("PostgreSQL", database))
        figures += claims_rows(work, sizes, feed_key, backends)
        figures.insert(0, machine_row(speed_at_start, machine_speed(args.repeat)))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    took = time.monotonic() - started
    text = report.markdown(figures, machine(), took, args.quick, args.repeat, "\n".join(PROFILE))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(report.table(figures))
    print(f"\nwritten to {args.out} ({took:.0f} s)")


if __name__ == "__main__":
    main()
