"""The benchmark's data: ledgers with real SSHSIG-signed commits, built in-process so that building is fast.

Every commit carries an ordinary SSHSIG signature over the commit, exactly what `git commit -S`
makes with an Ed25519 key (tests/test_sshsig.py checks the two agree), so `git log
--show-signature` and OPOS verify them like any staff commit.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from opos.model import CommitHash, format_time
from opos.signing import keys, sshsig
from opos.trust.gitrepo import GitLedger, init_repository, write_commit

IDENTITY = "Bench <bench@ooni.example>"
PRINCIPAL = "bench@ooni.example"


def window_now() -> tuple[str, str]:
    """A window that holds now and for a month: every instruction applies while the benchmark runs."""
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return format_time(today - dt.timedelta(days=1)), format_time(today + dt.timedelta(days=30))


def instruction(number: int, version: int, window: tuple[str, str]) -> bytes:
    return (
        f"id: item-{number:05}\nkind: run\ntitle: Item {number} v{version}\nreason: Benchmark.\n"
        f"test: web_connectivity\ninputs:\n  - https://example{number}.org/v{version}\n"
        f"target:\n  countries: [IR]\n  networks: [AS{1000 + number}]\n"
        f"window:\n  start: {window[0]}\n  end: {window[1]}\n"
    ).encode()


def capped(ident: str, cap: int, window: tuple[str, str]) -> bytes:
    return (
        f"id: {ident}\nkind: run\ntitle: Capped\nreason: Benchmark of claims.\ntest: web_connectivity\n"
        f"inputs:\n  - https://example.org/\ntarget:\n  countries: [IR]\n  networks: [AS1]\n  max_probes: {cap}\n"
        f"window:\n  start: {window[0]}\n  end: {window[1]}\n"
    ).encode()


@dataclass
class BenchLedger:
    """A ledger repository and the staff key that signs its commits; `change` adds one signed commit."""

    path: Path
    staff: ed25519.Ed25519PrivateKey
    instructions: int
    window: tuple[str, str]
    head: CommitHash
    when: int
    step: int = 0

    def change(self, ledger: GitLedger | None = None) -> CommitHash:
        """Commit a new version of one instruction file (one file changed, as a typical pull request)."""
        self.step += 1
        number = self.step % self.instructions
        files = {f"ledger/instructions/item-{number:05}.yaml": instruction(number, self.step, self.window)}
        own = ledger is None
        ledger = ledger or GitLedger(self.path)
        try:
            self.head = write_commit(
                ledger, files, f"Change {self.step}\n", IDENTITY, self.when + self.step,
                (self.head,), self.sign,
            )  # fmt: skip
        finally:
            if own:
                ledger.close()
        return self.head

    def sign(self, payload: bytes) -> bytes:
        return sshsig.sign_ed25519(self.staff, payload)


def _start(path: Path, extra: dict[str, bytes], when: int) -> BenchLedger:
    staff = ed25519.Ed25519PrivateKey.generate()
    line = f"{PRINCIPAL} {keys.public_line(staff.public_key()).strip()}\n".encode()
    files = {"ledger/allowed_signers": line, "ledger/policy.yaml": b"max_inputs: 1000\n", **extra}
    window = window_now()
    with init_repository(path) as ledger:
        head = write_commit(ledger, files, "Trust root\n", IDENTITY, when, sign=lambda p: sshsig.sign_ed25519(staff, p))
    return BenchLedger(path, staff, 0, window, head, when)


def wide(path: Path, instructions: int, capped_id: str | None = None, cap: int = 0) -> BenchLedger:
    """`instructions` instruction files in one signed commit (plus `capped_id`, capped at `cap`, if given).

    Claims are kept by instruction id, whatever the ledger: a new id per run starts from no claims.
    """
    when = int(dt.datetime.now(dt.UTC).timestamp()) - 86400
    window = window_now()
    files = {f"ledger/instructions/item-{n:05}.yaml": instruction(n, 0, window) for n in range(instructions)}
    if capped_id is not None:
        files[f"ledger/instructions/{capped_id}.yaml"] = capped(capped_id, cap, window)
    bench = _start(path, files, when)
    bench.instructions = instructions
    return bench


def long(path: Path, commits: int, instructions: int) -> BenchLedger:
    """A history of `commits` signed commits, each adding or changing one of `instructions` files."""
    when = int(dt.datetime.now(dt.UTC).timestamp()) - commits - 86400
    bench = _start(path, {}, when)
    bench.instructions = instructions
    with GitLedger(path) as ledger:
        for _ in range(commits - 1):
            bench.change(ledger)
    return bench
