"""Which commits of the ledger are trusted: signer rules applied to a commit graph, verdicts cached.

The rules (issue: signed history):
- a trust-root commit is pinned out of band; every commit from it to the checked revision that
  changes anything under the ledger directory carries a good SSH signature (namespace `git`) by a
  key on a line of `<ledger>/allowed_signers` that is valid at the commit's committer time;
- a commit is judged against allowed_signers as it stands in its first parent's tree (the trust
  root against its own), so changing the signers takes a signature by someone already allowed;
- a merge without such a signature passes only if its ledger is identical to one parent's (what a
  merge button produces for an up-to-date branch): it adds nothing nobody signed.

The graph comes from a `CommitSource` (dulwich in `gitrepo`; dictionaries in tests/test_history_rules.py);
this module does no I/O of its own.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from opos.errors import SignatureInvalid
from opos.model import CommitHash, Signer
from opos.trust import sshsig

PARALLEL_FROM = 256  # new commits from which their signatures are checked on two threads
_SignatureTask = tuple[CommitHash, bytes, bytes, list[sshsig.AllowedSigner], dt.datetime]


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
    """A commit that is verified together with all its ancestors down to the trust root."""

    commit: CommitHash
    sequence: int  # first-parent steps from the trust root
    signer: Signer | None  # None when no signature was needed (the ledger did not change)


@dataclass(frozen=True)
class Failure:
    commit: CommitHash
    reason: str

    def __str__(self) -> str:
        return f"{self.commit} {self.reason}"


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


class Verifier:
    """Applies the signer rules from a pinned trust root, with verdicts cached by commit hash."""

    def __init__(self, source: CommitSource, trust_root: CommitHash, cache: VerifiedCache | None = None) -> None:
        self.source = source
        self.trust_root = trust_root
        self.cache: VerifiedCache = cache if cache is not None else MemoryCache()
        self._signers: dict[bytes, list[sshsig.AllowedSigner]] = {}
        self._checked: dict[CommitHash, Signer | SignatureInvalid] = {}  # signatures checked ahead, this verify

    def verify(self, revision: CommitHash) -> Report:
        """Verify every commit between the trust root and `revision` that is not yet cached."""
        known = self.cache.get(revision)
        if known is not None:
            return Report(revision, [], known)
        failures: list[Failure] = []
        done: dict[CommitHash, Accepted | None] = {}  # None: this commit or an ancestor failed
        new = list(self._new_commits(revision, failures))
        self._checked = self._check_signatures(new) if len(new) >= PARALLEL_FROM else {}
        for info in new:
            failure, accepted = self._judge(info, done)
            if failure is not None:
                failures.append(failure)
            done[info.id] = accepted
        self.cache.add(entry for entry in done.values() if entry is not None)
        return Report(revision, failures, done.get(revision) if not failures else None)

    def _check_signatures(self, new: list[CommitInfo]) -> dict[CommitHash, Signer | SignatureInvalid]:
        """Every signature that judging `new` will look at, checked on two threads ahead of the judging.

        The cryptography releases the GIL while it verifies, so a long history is checked in about
        half the time; the repository is read here, on this thread only.
        """
        tasks: list[_SignatureTask] = []
        for info in new:
            if info.signature is None or (not info.parents and info.id != self.trust_root):
                continue
            signers_from = info if info.id == self.trust_root else self.source.commit(info.parents[0])
            if info.id != self.trust_root and self.source.ledger_tree(info) == self.source.ledger_tree(signers_from):
                continue  # it changes nothing in the ledger: its signature is not looked at
            tasks.append(self._task(info, info.signature, signers_from))
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            checked = pool.map(_check_signature, tasks, chunksize=64)
            return {task[0]: result for task, result in zip(tasks, checked, strict=True)}

    def _task(self, info: CommitInfo, signature: bytes, signers_from: CommitInfo) -> _SignatureTask:
        """What checking the commit's signature needs: the signers are those of `signers_from`."""
        moment = dt.datetime.fromtimestamp(info.committed, dt.UTC)
        return info.id, signature, info.payload, self._allowed_signers(signers_from), moment

    def _lookup(self, commit: CommitHash, done: dict[CommitHash, Accepted | None]) -> Accepted | None:
        return done[commit] if commit in done else self.cache.get(commit)

    def _new_commits(self, revision: CommitHash, failures: list[Failure]) -> Iterator[CommitInfo]:
        """Uncached commits reachable from `revision`, parents before children (iterative DFS)."""
        emitted: set[CommitHash] = set()
        stack: list[tuple[CommitInfo, bool]] = [(self.source.commit(revision), False)]
        while stack:
            info, expanded = stack.pop()
            if info.id in emitted:
                continue
            if expanded:
                emitted.add(info.id)
                yield info
                continue
            stack.append((info, True))
            if info.id == self.trust_root:
                continue
            if not info.parents:
                failures.append(
                    Failure(
                        info.id,
                        "does not descend from the trust root (a root commit other than it): "
                        "wrong repository, wrong --trust-root, or history rewritten",
                    )
                )
                continue
            for parent in reversed(info.parents):
                if parent not in emitted and self.cache.get(parent) is None:
                    stack.append((self.source.commit(parent), False))

    def _judge(
        self, info: CommitInfo, done: dict[CommitHash, Accepted | None]
    ) -> tuple[Failure | None, Accepted | None]:
        if info.id == self.trust_root:
            if info.parents:
                changed = self.source.ledger_tree(info) != self.source.ledger_tree(self.source.commit(info.parents[0]))
            else:
                changed = self.source.ledger_tree(info) is not None
            if not changed:
                return None, Accepted(info.id, 0, None)
            return self._signed(info, info, 0)
        if not info.parents:
            return None, None  # reported when it was found
        parents = [self._lookup(p, done) for p in info.parents]
        first = self.source.commit(info.parents[0])
        first_accepted = parents[0]
        sequence = first_accepted.sequence + 1 if first_accepted is not None else -1
        ledger = self.source.ledger_tree(info)
        parent_ledgers = [self.source.ledger_tree(self.source.commit(p)) for p in info.parents]
        failure: Failure | None = None
        signer: Signer | None = None
        if ledger != parent_ledgers[0]:
            is_merge = len(info.parents) > 1
            if is_merge and info.signature is None:
                failure = Failure(info.id, "merge that adds content: unsigned, and its ledger matches no parent's")
            else:
                failure, accepted = self._signed(info, first, sequence)
                signer = accepted.signer if accepted else None
            if failure is not None and is_merge and ledger in parent_ledgers:
                failure = None  # it adds nothing that a verified parent does not already hold
        if failure is not None or any(p is None for p in parents):
            return failure, None
        return None, Accepted(info.id, sequence, signer)

    def _signed(
        self, info: CommitInfo, signers_from: CommitInfo, sequence: int
    ) -> tuple[Failure | None, Accepted | None]:
        if info.signature is None:
            message = (
                "unsigned: it changes the ledger, so it must be signed: `git commit --amend -S` (or "
                "`git rebase -S` for several commits) before it is merged"
            )
            return Failure(info.id, message), None
        verified = self._checked.get(info.id) or _check_signature(self._task(info, info.signature, signers_from))
        if isinstance(verified, sshsig.SignerUnknown):
            if self._adds_its_own_signer(info):
                return Failure(info.id, f"unknown key: {verified} as of {signers_from.id[:12]}: a new signer must be "
                                        "added in a commit signed by an existing one"), None  # fmt: skip
            return Failure(info.id, f"unknown key: {verified}"), None
        if isinstance(verified, sshsig.SignerNotValid):
            return Failure(info.id, f"signer not valid at that time: {verified}"), None
        if isinstance(verified, SignatureInvalid):
            return Failure(info.id, f"bad signature: {verified}"), None
        return None, Accepted(info.id, sequence, verified)

    def _adds_its_own_signer(self, info: CommitInfo) -> bool:
        """Whether the commit's signing key is one that this very commit lists in allowed_signers."""
        try:
            key = sshsig.parse_armored(info.signature or b"").public_key
        except SignatureInvalid:
            return False
        return any(line.key_blob == key for line in self._allowed_signers(info))

    def _allowed_signers(self, commit: CommitInfo) -> list[sshsig.AllowedSigner]:
        data = self.source.allowed_signers(commit) or b""
        if data not in self._signers:
            self._signers[data] = sshsig.parse_allowed_signers(data)[0]
        return self._signers[data]


def _check_signature(task: _SignatureTask) -> Signer | SignatureInvalid:
    """The signer, or why the signature fails (returned, so that a thread pool hands it back)."""
    _, signature, payload, signers, moment = task
    try:
        return sshsig.verify(signature, payload, signers, moment)
    except SignatureInvalid as err:
        return err


def descends_from(source: CommitSource, revision: CommitHash, ancestor: CommitHash) -> bool:
    """Whether `ancestor` is `revision` or one of its ancestors."""
    seen: set[CommitHash] = set()
    stack = [revision]
    while stack:
        commit = stack.pop()
        if commit == ancestor:
            return True
        if commit in seen:
            continue
        seen.add(commit)
        stack.extend(source.commit(commit).parents)
    return False
