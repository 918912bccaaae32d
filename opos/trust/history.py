"""Which commits of the ledger are trusted: signer rules applied to a commit graph, verdicts cached.

The rules (issue: signed history):
- a trust-root commit is pinned out of band; every commit from it to the checked revision that
  changes anything under the ledger directory carries a good SSH signature (namespace `git`) by a
  key on a line of `<ledger>/allowed_signers` that is valid at the commit's committer time;
- a commit is judged against allowed_signers as it stands in its first parent's tree (the trust
  root against its own), so changing the signers takes a signature by someone already allowed;
- a merge without a valid signature passes only if its ledger is its first parent's (it changes
  nothing), or is another parent's *and* that parent contains the first (the merge button on an
  up-to-date branch): it lands nothing that was not signed on top of what it lands on;
- the two-person rule (issue: two-person rule): when the review in force (policy.yaml's, as of the
  first parent) asks more than one signer for a first-parent step P → C, the distinct people whose
  valid signatures (against allowed_signers as of P) are on commits of the step (reachable from C,
  not from P) that contain P and whose ledger tree is C's must be that many: each signature covers
  exactly what lands, on top of exactly what it lands on;
- a person is a key and a principal: signatures that share a key, or a principal, are one person;
- no backdating: a counted signature's commit is not older than its first parent (nor than P) by
  more than SKEW, so a key past its `valid-before` cannot sign by setting the clock back.

What is followed is a first-parent chain that only grows: `Verifier.on_chain` says whether a
commit accepted before is on a new one's chain (the caller remembers which; see verification).

The graph comes from a `CommitSource` (dulwich in `gitrepo`; dictionaries in tests/test_history_rules.py);
this module does no I/O of its own.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import replace

from opos.errors import SignatureInvalid, SignerNotValid, SignerUnknown
from opos.model import CommitHash, Signer
from opos.signing import sshsig
from opos.trust.ancestry import brought_in, containing
from opos.trust.verdicts import (
    Accepted,
    CommitInfo,
    CommitSource,
    Failure,
    MemoryCache,
    OneSigner,
    Report,
    ReviewRule,
    VerifiedCache,
)

PARALLEL_FROM = 256  # new commits from which their signatures are checked on two threads
# signatures per task: a thread pool ignores map's chunksize, and a future per signature cost a third of the
# checking (reading the history while checking was slower still: the two compete for the GIL)
SIGNATURE_BATCH = 256
SKEW = 600  # seconds a signed commit may seem older than its parent: clocks differ, backdating does not pass
_SignatureTask = tuple[CommitHash, bytes, bytes, list[sshsig.AllowedSigner], dt.datetime]


class Verifier:
    """Applies the signer rules from a pinned trust root, with verdicts cached by commit hash."""

    def __init__(
        self,
        source: CommitSource,
        trust_root: CommitHash,
        cache: VerifiedCache | None = None,
        review: ReviewRule | None = None,
    ) -> None:
        self.source = source
        self.trust_root = trust_root
        self.cache: VerifiedCache = cache if cache is not None else MemoryCache()
        self.review: ReviewRule = review if review is not None else OneSigner()
        self._generations: dict[CommitHash, int] = {}
        self._signers: dict[bytes, list[sshsig.AllowedSigner]] = {}
        self._checked: dict[CommitHash, Signer | SignatureInvalid] = {}  # signatures checked ahead, this verify

    def verify(self, revision: CommitHash) -> Report:
        """Verify every commit between the trust root and `revision` that is not yet cached."""
        known = self.cache.get(revision)
        if known is not None:
            return self._followable(Report(revision, [], known))
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
        return self._followable(Report(revision, failures, done.get(revision) if not failures else None))

    def _followable(self, report: Report) -> Report:
        """The report, with the steps of the revision's first-parent chain that lack signers as failures."""
        accepted = report.accepted
        if accepted is None or accepted.reviewed:
            return report
        failures = []
        entry: Accepted | None = accepted
        while entry is not None and not entry.reviewed:
            info = self.source.commit(entry.commit)
            first = self.source.commit(info.parents[0])
            if not entry.meets_review:
                why = self.review.needed(first, info)[1]
                failures.append(Failure(entry.commit, _too_few(entry.needed, entry.approvers, why), review=True))
            entry = self.cache.get(first.id)
        return Report(report.revision, [*report.failures, *reversed(failures)], None)

    def _check_signatures(self, new: list[CommitInfo]) -> dict[CommitHash, Signer | SignatureInvalid]:
        """Every signature that judging `new` will look at, checked on two threads ahead of the judging (the
        cryptography releases the GIL while it verifies); the repository is read here, on this thread only."""
        tasks: list[_SignatureTask] = []
        for info in new:
            if info.signature is None or (not info.parents and info.id != self.trust_root):
                continue
            signers_from = info if info.id == self.trust_root else self.source.commit(info.parents[0])
            if info.id != self.trust_root and self.source.ledger_tree(info) == self.source.ledger_tree(signers_from):
                continue  # it changes nothing in the ledger: its signature is not looked at
            tasks.append(self._task(info, info.signature, signers_from))
        batches = [tasks[at : at + SIGNATURE_BATCH] for at in range(0, len(tasks), SIGNATURE_BATCH)]
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            checked = [one for done in pool.map(lambda b: list(map(_check_signature, b)), batches) for one in done]
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
            return self._judge_root(info)
        if not info.parents:
            return None, None  # reported when it was found
        parents = [self._lookup(p, done) for p in info.parents]
        first, first_accepted = self.source.commit(info.parents[0]), parents[0]
        sequence = first_accepted.sequence + 1 if first_accepted is not None else -1
        ledger = self.source.ledger_tree(info)
        changed = ledger != self.source.ledger_tree(first)
        failure, signer, approvers = (
            self._signatures(info, first, ledger, sequence, done) if changed else (None, None, ())
        )
        if failure is not None or any(p is None for p in parents):
            return failure, None
        generation = 1 + max(self._generation(p, done) for p in info.parents)
        self._generations[info.id] = generation
        needed = self.review.needed(first, info)[0] if changed else 1
        step = Accepted(info.id, sequence, signer, approvers, generation, needed)
        reviewed = step.meets_review and first_accepted is not None and first_accepted.reviewed
        return None, replace(step, reviewed=reviewed)

    def _judge_root(self, info: CommitInfo) -> tuple[Failure | None, Accepted | None]:
        """The pinned trust root: its own signers admit it; it needs no review."""
        if info.parents:
            changed = self.source.ledger_tree(info) != self.source.ledger_tree(self.source.commit(info.parents[0]))
        else:
            changed = self.source.ledger_tree(info) is not None
        if not changed:
            return None, Accepted(info.id, 0, None, generation=0)
        refused, pinned = self._signed(info, info, 0)
        if pinned is None or pinned.signer is None:
            return refused, pinned
        return None, Accepted(info.id, 0, pinned.signer, (pinned.signer.person,), 0)  # pinned: not reviewed

    def _signatures(
        self, info: CommitInfo, first: CommitInfo, ledger: str | None, sequence: int,
        done: dict[CommitHash, Accepted | None],
    ) -> tuple[Failure | None, Signer | None, tuple[str, ...]]:  # fmt: skip
        """Who signed a step that changes the ledger: its own signer, and the people whose signatures on commits
        it brings in (that contain `first` and hold its ledger) approve it; or why it is refused."""
        failure, accepted = self._signed(info, first, sequence)
        signer = accepted.signer if accepted else None
        brought: list[CommitInfo] = []
        holders: set[CommitHash] = set()  # commits brought in that contain `first`
        if len(info.parents) > 1:
            generation = lambda commit: self._generation(commit, done)  # noqa: E731
            brought = brought_in(self.source, self.trust_root, first.id, list(info.parents[1:]), generation)
            holders = containing(first.id, brought)
            if signer is None:
                failure = self._unsigned_merge(info, ledger, first, holders, failure)
        if failure is not None:
            return failure, None, ()
        approvers = self._approvers(ledger, first, brought, holders, signer)
        if not approvers:  # an unsigned merge: the branch's own signatures must cover what it lands, on `first`
            return Failure(info.id, f"merge of a branch none of whose signed commits contains {first.id[:12]} (its "
                           "first parent) with this ledger: what it lands was signed on an older base, if at all; "
                           "update the branch (`git merge -S` or `git rebase -S` onto the base), have it approved "
                           "again, then merge it"), None, ()  # fmt: skip
        return None, signer, approvers

    def _unsigned_merge(
        self, info: CommitInfo, ledger: str | None, first: CommitInfo, containing: set[CommitHash],
        failure: Failure | None,
    ) -> Failure | None:  # fmt: skip
        """Why a merge without a valid signature that changes its first parent's ledger is refused, if it is.

        It passes when its ledger is another parent's and that parent contains the first: an
        up-to-date branch, merged as it was signed. A branch that forked earlier would undo, unsigned,
        whatever landed on the first parent since (or bring back an old ledger).
        """
        others = [p for p in info.parents[1:] if self.source.ledger_tree(self.source.commit(p)) == ledger]
        if any(p in containing for p in others):
            return None
        if others:
            return Failure(info.id, f"merge of a branch that does not contain {first.id[:12]} (its first parent): "
                           "unsigned, its ledger is the branch's, so it would undo, with no signature, what landed "
                           "since the branch forked; update the branch (`git merge -S` or `git rebase -S` onto the "
                           "base), have it approved again, then merge it")  # fmt: skip
        if info.signature is None:
            return Failure(info.id, "merge that adds content: unsigned, and its ledger matches no parent's: sign it "
                           "(`git commit --amend -S`) or merge an up-to-date branch")  # fmt: skip
        return failure

    def approvals(self, base: CommitHash, head: CommitHash) -> tuple[str, ...]:
        """Who has approved `head` so far, as a merge of it into `base` would count them (both verified)."""
        tip, first = self.source.commit(head), self.source.commit(base)
        brought = brought_in(self.source, self.trust_root, base, [head], lambda c: self._generation(c, {}))
        return self._approvers(self.source.ledger_tree(tip), first, brought, containing(base, brought), None)

    def _approvers(
        self,
        ledger: str | None,
        first: CommitInfo,
        brought: list[CommitInfo],
        containing: set[CommitHash],
        signer: Signer | None,
    ) -> tuple[str, ...]:
        """The distinct people whose valid signatures, as of `first`, are on commits a merge brings in that
        contain `first` and have this ledger tree, none backdated; `signer` (the step's own) counts too."""
        signers = [signer] if signer is not None else []
        for other in brought:
            if other.signature is None or other.id not in containing or self.source.ledger_tree(other) != ledger:
                continue
            if self._backdated(other, first) is not None:
                continue
            verified = _check_signature(self._task(other, other.signature, first))
            if isinstance(verified, Signer):
                signers.append(verified)
        return distinct_people(signers)

    def _backdated(self, info: CommitInfo, base: CommitInfo) -> str | None:
        """Why the commit's time cannot be true, if it cannot: older than its first parent or than `base`."""
        for earlier in {base.id: base, info.parents[0]: self.source.commit(info.parents[0])}.values():
            if info.committed < earlier.committed - SKEW:
                when = dt.datetime.fromtimestamp(info.committed, dt.UTC)
                return (f"backdated: committed at {when:%Y-%m-%dT%H:%M:%SZ}, before {earlier.id[:12]} on which it "
                        "builds; a signature counts at the time it was made: commit again (`git commit --amend "
                        "-S --reset-author` sets the time to now)")  # fmt: skip
        return None

    def on_chain(self, revision: CommitHash, ancestor: CommitHash) -> bool:
        """Whether `ancestor` is `revision` or on its first-parent chain: what follows it builds on it.

        Verdicts in the cache carry sequences (first-parent positions), so once the walk meets one it
        takes exactly as many steps as the two sequences differ. An ancestor not yet verified is verified
        first (its callers need that anyway): without its sequence the walk would go to the root.
        """
        target = self.cache.get(ancestor) if self.cache.get(ancestor) or self.verify(ancestor) else None
        steps: int | None = None
        commit = revision
        while True:
            if commit == ancestor:
                return True
            if steps is None and target is not None:
                here = self.cache.get(commit)
                steps = here.sequence - target.sequence if here is not None else None
            if steps is not None:
                if steps <= 0:
                    return False
                steps -= 1
            parents = self.source.commit(commit).parents
            if not parents or commit == self.trust_root:
                return False
            commit = parents[0]

    def _generation(self, commit: CommitHash, done: dict[CommitHash, Accepted | None]) -> int:
        """The commit's generation: recorded with its verdict, else worked out once (a cache from before)."""
        stack = [commit]
        while stack:
            current = stack[-1]
            if current in self._generations:
                stack.pop()
                continue
            entry = self._lookup(current, done)
            if entry is not None and entry.generation is not None:
                self._generations[current] = entry.generation
                stack.pop()
                continue
            parents = () if current == self.trust_root else self.source.commit(current).parents
            missing = [p for p in parents if p not in self._generations]
            if missing:
                stack.extend(missing)
                continue
            self._generations[current] = 1 + max((self._generations[p] for p in parents), default=-1)
            stack.pop()
        return self._generations[commit]

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
        if isinstance(verified, SignerUnknown):
            if self._adds_its_own_signer(info):
                return Failure(info.id, f"unknown key: {verified} as of {signers_from.id[:12]}: a new signer must be "
                                        "added in a commit signed by an existing one"), None  # fmt: skip
            return Failure(info.id, f"unknown key: {verified}"), None
        if isinstance(verified, SignerNotValid):
            return Failure(info.id, f"signer not valid at that time: {verified}"), None
        if isinstance(verified, SignatureInvalid):
            return Failure(info.id, f"bad signature: {verified}"), None
        backdated = self._backdated(info, signers_from) if info.id != self.trust_root else None
        if backdated is not None:
            return Failure(info.id, backdated), None
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


def _too_few(needed: int, approvers: tuple[str, ...], why: str) -> str:
    because = f" ({why})" if why else ""
    return (f"needs {needed} signers, has {len(approvers)} ({', '.join(approvers) or 'no valid signature'}){because}: "
            "policy.yaml's review asks each change to be signed by that many staff; another signer approves the "
            "branch with `opos approve` and it lands with a merge commit (ledger/README.md)")  # fmt: skip


def distinct_people(signers: Iterable[Signer]) -> tuple[str, ...]:
    """How many people signed, one name each: signatures that share a key or a principal are one person.

    Keys and principals are joined transitively, so neither one key under two principals (a hand-over
    from alice@old to alice@new) nor two keys of one principal ever counts twice.
    """
    groups: list[tuple[set[str], set[str], set[str]]] = []  # (fingerprints, principals, names)
    for signer in signers:
        keys, principals, names = {str(signer.fingerprint)}, set(signer.principal.split(",")), {signer.person}
        for group in [g for g in groups if g[0] & keys or g[1] & principals]:
            groups.remove(group)
            keys, principals, names = keys | group[0], principals | group[1], names | group[2]
        groups.append((keys, principals, names))
    return tuple(sorted(min(names) for _, _, names in groups))


def _check_signature(task: _SignatureTask) -> Signer | SignatureInvalid:
    """The signer, or why the signature fails (returned, so that a thread pool hands it back)."""
    _, signature, payload, signers, moment = task
    try:
        return sshsig.verify(signature, payload, signers, moment)
    except SignatureInvalid as err:
        return err
