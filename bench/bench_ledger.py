"""Benchmark: verify and render a long ledger history, cold and after one new commit.

    .venv/bin/python bench/bench_ledger.py [--commits 10000] [--instructions 1000]

Builds a ledger with real SSHSIG-signed commits (in-process, so building is fast), packs it with
`git gc` when git is there (as a clone would be), then times each step. Targets (issue 2): a
10,000-commit ledger re-verifies in well under a second after one new commit; (issue 3) the
push-to-served path renders a 1,000-instruction ledger in well under two seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from opos.feed import keys
from opos.feed.site import publish
from opos.model import CommitHash
from opos.trust import sshsig
from opos.trust.gitrepo import GitLedger, init_repository, write_commit
from opos.trust.verification import Verification

START = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def instruction(number: int, version: int) -> bytes:
    return (
        f"id: item-{number:05}\nkind: run\ntitle: Item {number} v{version}\nreason: Benchmark.\n"
        f"test: web_connectivity\ninputs:\n  - https://example{number}.org/v{version}\n"
        f"target:\n  countries: [IR]\n  networks: [AS{1000 + number}]\n"
        "window:\n  start: 2026-12-01T00:00:00Z\n  end: 2027-01-01T00:00:00Z\n"
    ).encode()


def build(folder: Path, commits: int, instructions: int) -> tuple[GitLedger, Callable[[], CommitHash]]:
    staff = ed25519.Ed25519PrivateKey.generate()
    ledger = init_repository(folder)
    signer_line = f"bench@ooni.example {keys.public_line(staff.public_key()).strip()}\n".encode()
    when = int(START.timestamp()) - commits * 60
    head = write_commit(
        ledger,
        {"ledger/allowed_signers": signer_line, "ledger/policy.yaml": b"max_inputs: 1000\n"},
        "trust root\n", "Bench <bench@ooni.example>", when, sign=lambda p: sshsig.sign_ed25519(staff, p),
    )  # fmt: skip
    state = {"head": head, "step": 0}

    def one_more() -> CommitHash:
        state["step"] += 1
        step = int(state["step"])
        number = step % instructions
        change = {f"ledger/instructions/item-{number:05}.yaml": instruction(number, step // instructions)}
        state["head"] = write_commit(
            ledger, change, f"step {step}\n", "Bench <bench@ooni.example>", when + step * 60,
            (CommitHash(str(state["head"])),), lambda p: sshsig.sign_ed25519(staff, p),
        )  # fmt: skip
        return CommitHash(str(state["head"]))

    for _ in range(commits - 1):
        one_more()
    return ledger, one_more


def timed(label: str, action: Callable[[], object], results: list[tuple[str, float]]) -> None:
    started = time.perf_counter()
    action()
    results.append((label, time.perf_counter() - started))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commits", type=int, default=10_000)
    parser.add_argument("--instructions", type=int, default=1_000)
    parser.add_argument("--dir", type=Path, help="keep the ledger here (default: a temporary folder)")
    args = parser.parse_args()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="opos-bench-"))
    repo = folder / "repo"
    started = time.perf_counter()
    _, one_more = build(repo, args.commits, args.instructions)
    took = time.perf_counter() - started
    print(f"built {args.commits} signed commits over {args.instructions} instructions in {took:.1f} s")
    if shutil.which("git"):
        subprocess.run(["git", "-C", str(repo), "gc", "-q"], check=True)
    feed_key = ed25519.Ed25519PrivateKey.generate()
    out = folder / "site"

    def cold_verify() -> None:  # a new process: verdicts come from the on-disk cache only
        with GitLedger(repo) as ledger:
            head = ledger.resolve("HEAD")
            Verification.open(ledger, head, None).require(head)

    def cold_render() -> None:  # `opos render` in a new process
        with GitLedger(repo) as ledger:
            head = ledger.resolve("HEAD")
            publish(Verification.open(ledger, head, None), head, feed_key, out, START)

    service_ledger = GitLedger(repo)
    service = Verification.open(service_ledger, service_ledger.resolve("HEAD"), None)

    def warm_render(commit: CommitHash) -> None:  # the long-lived service after a push
        publish(service, commit, feed_key, out, START)

    results: list[tuple[str, float]] = []
    timed("verify: every commit (cold)", cold_verify, results)
    one_more()
    timed("verify: one new commit", cold_verify, results)
    timed("render: new process", cold_render, results)
    warm_render(service_ledger.resolve("HEAD"))
    newest = one_more()
    timed("render: one new commit, warm", lambda: warm_render(newest), results)
    for label, seconds in results:
        print(f"{label:32} {seconds * 1000:9.1f} ms")
    print(f"feed: {(out / 'v1' / 'feed.json').stat().st_size} bytes")
    service_ledger.close()
    if not args.dir:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
