"""The signer rules on an in-memory commit graph: history.Verifier with no git, no disk, real Ed25519 signatures.

The same rules are checked against real repositories, `git commit -S` and `git verify-commit` in
test_history.py; here each case is a few microseconds, so the rules themselves can be read off
the tests.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import replace

from cryptography.hazmat.primitives.asymmetric import ed25519

from opos.model import CommitHash
from opos.signing import keys, sshsig
from opos.trust.history import Verifier
from opos.trust.verdicts import CommitInfo, MemoryCache

WHEN = int(dt.datetime(2026, 11, 1, tzinfo=dt.UTC).timestamp())
ALICE = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([1]) * 32)  # fixed, so that hypothesis replays
BOB = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([2]) * 32)


def signer_line(principal: str, key: ed25519.Ed25519PrivateKey) -> str:
    return f"{principal} {keys.public_line(key.public_key()).strip()}\n"


class MemoryLedger:
    """A `CommitSource` held in dictionaries: each commit's ledger is a mapping of file name to contents."""

    def __init__(self) -> None:
        self.commits: dict[CommitHash, CommitInfo] = {}
        self.ledgers: dict[str, dict[str, bytes]] = {}
        self.signed_by: dict[CommitHash, ed25519.Ed25519PrivateKey] = {}

    def add(
        self,
        ledger: dict[str, bytes] | None,
        parents: tuple[CommitHash, ...] = (),
        key: ed25519.Ed25519PrivateKey | None = None,
    ) -> CommitHash:
        tree = hashlib.sha1(repr(sorted((ledger or {}).items())).encode()).hexdigest() if ledger is not None else "-"
        if ledger is not None:
            self.ledgers[tree] = ledger
        when = WHEN + len(self.commits)
        header = f"tree {tree}\n" + "".join(f"parent {p}\n" for p in parents)
        payload = f"{header}committer Staff <staff@example> {when} +0000\n\nstep {len(self.commits)}\n".encode()
        signature = sshsig.sign_ed25519(key, payload) if key else None
        commit = CommitHash(hashlib.sha1(payload + (signature or b"")).hexdigest())
        self.commits[commit] = CommitInfo(commit, parents, tree, when, signature, payload, "")
        if key is not None:
            self.signed_by[commit] = key
        return commit

    def commit(self, commit_id: CommitHash) -> CommitInfo:
        return self.commits[commit_id]

    def ledger_tree(self, commit: CommitInfo) -> str | None:
        return commit.tree if commit.tree in self.ledgers else None

    def allowed_signers(self, commit: CommitInfo) -> bytes | None:
        return self.ledgers.get(commit.tree, {}).get("allowed_signers")


def started() -> tuple[MemoryLedger, CommitHash, dict[str, bytes]]:
    source = MemoryLedger()
    files = {"allowed_signers": signer_line("alice", ALICE).encode()}
    return source, source.add(files, key=ALICE), files


def test_a_signed_chain_is_accepted_with_its_sequence() -> None:
    source, root, files = started()
    one = source.add({**files, "a.yaml": b"1"}, (root,), ALICE)
    two = source.add({**files, "a.yaml": b"2"}, (one,), ALICE)
    report = Verifier(source, root).verify(two)
    assert report.ok and report.accepted is not None
    assert report.accepted.sequence == 2 and report.accepted.signer is not None
    assert report.accepted.signer.principal == "alice"


def test_an_unsigned_change_is_refused_and_an_unsigned_commit_that_changes_nothing_is_not() -> None:
    source, root, files = started()
    same = source.add(files, (root,))
    assert Verifier(source, root).verify(same).ok
    changed = source.add({**files, "a.yaml": b"1"}, (same,))
    report = Verifier(source, root).verify(changed)
    assert not report.ok and [f.commit for f in report.failures] == [changed]
    assert "unsigned" in report.failures[0].reason


def test_a_new_signer_cannot_let_itself_in() -> None:
    source, root, _ = started()
    both = {"allowed_signers": (signer_line("alice", ALICE) + signer_line("bob", BOB)).encode()}
    by_bob = source.add(both, (root,), BOB)
    report = Verifier(source, root).verify(by_bob)
    assert not report.ok and "unknown key" in report.failures[0].reason
    by_alice = source.add(both, (root,), ALICE)
    then_bob = source.add({**both, "b.yaml": b"1"}, (by_alice,), BOB)
    assert Verifier(source, root).verify(then_bob).ok


def test_an_unsigned_merge_passes_only_when_it_adds_nothing() -> None:
    source, root, files = started()
    branch = source.add({**files, "a.yaml": b"1"}, (root,), ALICE)
    button = source.add({**files, "a.yaml": b"1"}, (root, branch))  # the merge button on an up-to-date branch
    assert Verifier(source, root).verify(button).ok
    sneaky = source.add({**files, "a.yaml": b"1", "b.yaml": b"2"}, (root, branch))
    report = Verifier(source, root).verify(sneaky)
    assert not report.ok and "merge that adds content" in report.failures[0].reason


def test_history_that_does_not_reach_the_trust_root_is_refused() -> None:
    source, root, files = started()
    stranger = source.add(files, key=ALICE)  # another root commit
    child = source.add({**files, "a.yaml": b"1"}, (stranger,), ALICE)
    report = Verifier(source, root).verify(child)
    assert not report.ok and "does not descend from the trust root" in report.failures[0].reason


class TwoSigners:
    def needed(self, parent: CommitInfo, commit: CommitInfo) -> tuple[int, str]:
        return 2, ""


def test_old_approvals_cannot_be_replayed_to_bring_back_an_earlier_ledger() -> None:
    """A merge whose ledger equals a branch tip that an earlier merge landed: those signatures are spent."""
    source = MemoryLedger()
    files = {"allowed_signers": (signer_line("alice", ALICE) + signer_line("bob", BOB)).encode()}
    root = source.add(files, key=ALICE)
    old = {**files, "a.yaml": b"1"}
    authored = source.add(old, (root,), ALICE)
    approved = source.add(old, (authored,), BOB)
    landed = source.add(old, (root, approved))  # the merge button: unsigned, the branch's ledger
    newer = {**files, "a.yaml": b"2"}
    later_author = source.add(newer, (landed,), ALICE)
    later_review = source.add(newer, (later_author,), BOB)
    current = source.add(newer, (landed, later_review))
    verifier = Verifier(source, root, review=TwoSigners())
    report = verifier.verify(current)
    assert report.ok and report.accepted is not None
    assert report.accepted.approvers == ("alice", "bob")
    replay = source.add(old, (current, approved))  # back to "1", by the old approvals
    report = verifier.verify(replay)
    assert not report.ok and report.failures[0].reason.startswith("merge of a branch that does not contain")
    signed_replay = source.add(old, (current, approved), ALICE)  # alice alone signs the merge: bob's is spent
    report = verifier.verify(signed_replay)
    assert not report.ok and report.failures[0].reason.startswith("needs 2 signers, has 1 (alice)")
    assert verifier.approvals(current, approved) == ()


def test_approvals_are_counted_from_a_cache_written_before_generations() -> None:
    files = {"allowed_signers": (signer_line("alice", ALICE) + signer_line("bob", BOB)).encode()}
    source = MemoryLedger()
    root = source.add(files, key=ALICE)
    first = Verifier(source, root)
    base = source.add({**files, "a.yaml": b"1"}, (root,), ALICE)
    assert first.verify(base).ok
    old_cache = MemoryCache()  # verdicts as an older OPOS recorded them: no generation, no approvers
    assert isinstance(first.cache, MemoryCache)
    old_cache.add(replace(entry, generation=None, approvers=()) for entry in first.cache.entries.values())
    authored = source.add({**files, "a.yaml": b"2"}, (base,), ALICE)
    approved = source.add({**files, "a.yaml": b"2"}, (authored,), BOB)
    merge = source.add({**files, "a.yaml": b"2"}, (base, approved))
    report = Verifier(source, root, old_cache, TwoSigners()).verify(merge)
    assert report.ok and report.accepted is not None and report.accepted.approvers == ("alice", "bob")
    assert report.accepted.generation == 4  # root 0, base 1, authored 2, approved 3
