"""The values of the signed history: commits as the rules see them, where they come from, and verdicts.

A `CommitSource` gives commits (dulwich in `gitrepo`, dictionaries in the tests); a `Verifier`
(history) judges them into `Accepted` or `Failure`, kept in a `VerifiedCache` between runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from opos.model import CommitHash, Signer


@dataclass(frozen=True)
class CommitInfo:
    id: CommitHash
    parents: tuple[CommitHash, ...]
    tree: str
    committed: int  # committer time, seconds since the epoch
    signature: bytes | None  # the armoured signature of the gpgsig header
    payload: bytes  # the commit as git hands it to ssh-keygen: without its signature headers
    message: str


class CommitSource(Protocol):
    def commit(self, commit_id: CommitHash) -> CommitInfo: ...

    def ledger_tree(self, commit: CommitInfo) -> str | None:
        """The id of the ledger directory's tree in this commit, or None when it has none."""

    def allowed_signers(self, commit: CommitInfo) -> bytes | None:
        """`<ledger>/allowed_signers` in this commit's tree, or None."""


@dataclass(frozen=True)
class Accepted:
    """A commit whose signatures, and all its ancestors' down to the trust root, are good.

    Whether it may be followed also takes `reviewed`: a commit of a branch that is merged later
    need not have every signer itself (its merge does), a commit that a branch points to does.
    """

    commit: CommitHash
    sequence: int  # first-parent steps from the trust root
    signer: Signer | None  # None when no signature was needed (the ledger did not change)
    approvers: tuple[str, ...] = ()  # the distinct staff whose signatures cover the step, sorted (signer included)
    generation: int | None = None  # 1 + its parents' largest (the trust root: 0); None when not recorded
    needed: int = 1  # the signers the review in force asks of the step from its first parent
    reviewed: bool = True  # every step of its first-parent chain, from the trust root, has the signers it needs

    @property
    def meets_review(self) -> bool:
        """Whether this step alone has the signers it needs."""
        return len(self.approvers) >= self.needed or self.needed <= 1


@dataclass(frozen=True)
class Failure:
    commit: CommitHash
    reason: str
    review: bool = False  # too few signers for a step of the followed chain (its signatures are good)
    rewritten: bool = False  # the commit accepted before is not on its first-parent chain

    def __str__(self) -> str:
        return f"{self.commit} {self.reason}"


class ReviewRule(Protocol):
    def needed(self, parent: CommitInfo, commit: CommitInfo) -> tuple[int, str]:
        """How many distinct staff must sign the step from `parent` (the first parent) to `commit`, and why."""


class OneSigner:
    """The rule without a review section: one valid signature admits a change."""

    def needed(self, parent: CommitInfo, commit: CommitInfo) -> tuple[int, str]:
        return 1, ""


class VerifiedCache(Protocol):
    """Commits already accepted, kept between runs so a long history is verified once."""

    def get(self, commit: CommitHash) -> Accepted | None: ...

    def add(self, accepted: Iterable[Accepted]) -> None: ...


class MemoryCache:
    def __init__(self) -> None:
        self.entries: dict[CommitHash, Accepted] = {}

    def get(self, commit: CommitHash) -> Accepted | None:
        return self.entries.get(commit)

    def add(self, accepted: Iterable[Accepted]) -> None:
        for entry in accepted:
            self.entries[entry.commit] = entry


@dataclass(frozen=True)
class Report:
    revision: CommitHash
    failures: list[Failure]
    accepted: Accepted | None  # the revision, when it and its whole history passed

    @property
    def ok(self) -> bool:
        return not self.failures and self.accepted is not None
