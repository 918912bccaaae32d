"""The files OPOS keeps beside a ledger repository, in `.git/opos/`: every name is spelled here.

    trust-root                   the single root commit, remembered so a long history is walked once
    verified-<scope>.tsv         accepted commits (history.Accepted), appended as they are verified
    revisions-<scope>.json       the last rendered commit's answer to "which commit last changed each file"
    log-<scope>.sqlite3          the event log's index
    checked-<rules>.jsonl        verdicts on instruction files by blob id, for one version of the rules

A scope names the trust root and the ledger directory that the verdicts hold for, so one clone
can serve several ledgers or trust roots without mixing them up.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from opos.model import CommitHash


def scope_of(trust_root: CommitHash, ledger_prefix: str) -> str:
    return hashlib.sha256(f"{trust_root}\n{ledger_prefix}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class StateDir:
    path: Path

    def __post_init__(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    @property
    def trust_root_file(self) -> Path:
        return self.path / "trust-root"

    def verdicts_file(self, scope: str) -> Path:
        return self.path / f"verified-{scope}.tsv"

    def revisions_file(self, scope: str) -> Path:
        return self.path / f"revisions-{scope}.json"

    def landings_file(self, scope: str) -> Path:
        return self.path / f"landings-{scope}.json"

    def checked_file(self, rules_fingerprint: str) -> Path:
        return self.path / f"checked-{rules_fingerprint}.jsonl"

    def log_index_file(self, scope: str) -> Path:
        return self.path / f"log-{scope}.sqlite3"
