"""Signed history against the real git: every kind of bad signature, merges, signer changes, rewrites."""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

import pytest

from conftest import LedgerRepo, SshKey, instruction, opos
from opos.trust.gitrepo import GitLedger
from opos.trust.history import Verifier

HASH_LINE = re.compile(r"^[0-9a-f]{40} \S")


def failures(repo: LedgerRepo, *extra: str) -> dict[str, str]:
    result = opos("verify", "--repo", repo.path, *extra)
    lines = result.out.splitlines()
    assert all(HASH_LINE.match(line) for line in lines), result.out
    assert result.code == (1 if lines else 0), (result.code, result.out, result.err)
    assert "Traceback" not in result.err
    return {line[:40]: line[41:] for line in lines}


def test_signed_linear_history_verifies(ledger_repo: LedgerRepo, keys: dict[str, SshKey]) -> None:
    ledger_repo.write("ledger/instructions/second-one.yaml", instruction("second-one"))
    ledger_repo.commit("Add second", keys["alice"])
    assert failures(ledger_repo) == {}
    assert "sequence 1" in opos("verify", "--repo", ledger_repo.path).err


def test_unsigned_commit_is_reported(ledger_repo: LedgerRepo, keys: dict[str, SshKey]) -> None:
    ledger_repo.write("ledger/instructions/second-one.yaml", instruction("second-one"))
    bad = ledger_repo.commit("Unsigned", None)
    ledger_repo.write("ledger/instructions/third-one.yaml", instruction("third-one"))
    ledger_repo.commit("Signed on top", keys["alice"])
    found = failures(ledger_repo)
    assert list(found) == [bad]
    assert found[bad].startswith("unsigned")


def test_unknown_key_is_reported(ledger_repo: LedgerRepo, keys: dict[str, SshKey]) -> None:
    ledger_repo.write("ledger/instructions/second-one.yaml", instruction("second-one"))
    bad = ledger_repo.commit("By mallory", keys["mallory"])
    assert failures(ledger_repo)[bad].startswith("unknown key")
    assert not ledger_repo.git_verifies(bad, f"{bad}~1")


def test_tampered_commit_has_a_bad_signature(ledger_repo: LedgerRepo, keys: dict[str, SshKey]) -> None:
    ledger_repo.write("ledger/instructions/second-one.yaml", instruction("second-one"))
    good = ledger_repo.commit("Honest message", keys["alice"])
    raw = ledger_repo.git("cat-file", "commit", good) + "\n"
    forged_path = ledger_repo.path.parent / "forged"
    forged_path.write_text(raw.replace("Honest message", "Forged message"))
    forged = ledger_repo.git("hash-object", "-t", "commit", "-w", str(forged_path))
    ledger_repo.git("update-ref", "refs/heads/main", forged)
    assert failures(ledger_repo)[forged].startswith("bad signature")
    assert not ledger_repo.git_verifies(forged, f"{forged}~1")


def test_signer_outside_validity_at_commit_time(ledger_repo: LedgerRepo, keys: dict[str, SshKey]) -> None:
    alice = keys["alice"].public_text
    ledger_repo.signers([f'alice@ooni.example valid-before="20261201" {alice}'])
    ledger_repo.commit("Alice until December", keys["alice"], "2026-11-02T10:00:00Z")
    ledger_repo.write("ledger/instructions/second-one.yaml", instruction("second-one"))
    late = ledger_repo.commit("Too late", keys["alice"], "2026-12-02T10:00:00Z")
    found = failures(ledger_repo)
    assert list(found) == [late] and found[late].startswith("signer not valid at that time")
    assert not ledger_repo.git_verifies(late, f"{late}~1")


def test_signer_valid_after_is_checked_against_commit_time(ledger_repo: LedgerRepo, keys: dict[str, SshKey]) -> None:
    alice, bob = keys["alice"].public_text, keys["bob"].public_text
    ledger_repo.signers([f"alice@ooni.example {alice}", f'bob@ooni.example valid-after="20261110" {bob}'])
    ledger_repo.commit("Bob from the 10th", keys["alice"], "2026-11-02T10:00:00Z")
    ledger_repo.write("ledger/instructions/second-one.yaml", instruction("second-one"))
    early = ledger_repo.commit("Too early", keys["bob"], "2026-11-05T10:00:00Z")
    assert failures(ledger_repo)[early].startswith("signer not valid at that time")
    ledger_repo.git("reset", "-q", "--hard", "HEAD~1")
    ledger_repo.write("ledger/instructions/second-one.yaml", instruction("second-one"))
    ledger_repo.commit("In time", keys["bob"], "2026-11-11T10:00:00Z")
    assert failures(ledger_repo) == {}


def test_namespace_restriction_is_honoured(ledger_repo: LedgerRepo, keys: dict[str, SshKey]) -> None:
    alice, bob = keys["alice"].public_text, keys["bob"].public_text
    ledger_repo.signers([f"alice@ooni.example {alice}", f'bob@ooni.example namespaces="file" {bob}'])
    ledger_repo.commit("Bob may only sign files", keys["alice"])
    ledger_repo.write("ledger/instructions/second-one.yaml", instruction("second-one"))
    bad = ledger_repo.commit("Bob signs a commit", keys["bob"])
    assert bad in failures(ledger_repo)
    assert not ledger_repo.git_verifies(bad, f"{bad}~1")


@pytest.mark.parametrize("name", ["carol", "dave"])
def test_ecdsa_and_rsa_signers(ledger_repo: LedgerRepo, keys: dict[str, SshKey], name: str) -> None:
    alice, other = keys["alice"].public_text, keys[name].public_text
    ledger_repo.signers([f"alice@ooni.example {alice}", f"{name}@ooni.example {other}"])
    ledger_repo.commit(f"Allow {name}", keys["alice"])
    ledger_repo.write("ledger/instructions/second-one.yaml", instruction("second-one"))
    commit = ledger_repo.commit(f"By {name}", keys[name])
    assert failures(ledger_repo) == {}
    assert ledger_repo.git_verifies(commit, f"{commit}~1")


def test_a_signer_cannot_add_themselves(ledger_repo: LedgerRepo, keys: dict[str, SshKey]) -> None:
    alice, bob = keys["alice"].public_text, keys["bob"].public_text
    ledger_repo.signers([f"alice@ooni.example {alice}", f"bob@ooni.example {bob}"])
    self_added = ledger_repo.commit("Bob adds himself", keys["bob"])
    assert failures(ledger_repo)[self_added].startswith("unknown key")


def test_removing_a_signer_revokes_them(ledger_repo: LedgerRepo, keys: dict[str, SshKey]) -> None:
    alice, bob = keys["alice"].public_text, keys["bob"].public_text
    ledger_repo.signers([f"alice@ooni.example {alice}", f"bob@ooni.example {bob}"])
    ledger_repo.commit("Allow bob", keys["alice"])
    ledger_repo.write("ledger/instructions/second-one.yaml", instruction("second-one"))
    ledger_repo.commit("Bob adds one", keys["bob"])
    ledger_repo.signers([f"alice@ooni.example {alice}"])
    ledger_repo.commit("Bob leaves", keys["alice"])
    assert failures(ledger_repo) == {}
    ledger_repo.write("ledger/instructions/third-one.yaml", instruction("third-one"))
    after = ledger_repo.commit("Bob after leaving", keys["bob"])
    assert list(failures(ledger_repo)) == [after]


def test_commits_outside_the_ledger_need_no_signature(ledger_repo: LedgerRepo, keys: dict[str, SshKey]) -> None:
    ledger_repo.write("README.md", "About this repository\n")
    ledger_repo.commit("Docs only", None)
    assert failures(ledger_repo) == {}


def _branch_with_instruction(repo: LedgerRepo, key: SshKey, ident: str) -> str:
    repo.git("checkout", "-q", "-b", f"add-{ident}", "main")
    repo.write(f"ledger/instructions/{ident}.yaml", instruction(ident))
    commit = repo.commit(f"Add {ident}", key)
    repo.git("checkout", "-q", "main")
    return commit


def test_unsigned_merge_of_an_up_to_date_branch_is_accepted(ledger_repo: LedgerRepo, keys: dict[str, SshKey]) -> None:
    _branch_with_instruction(ledger_repo, keys["alice"], "second-one")
    ledger_repo.git("-c", "commit.gpgsign=false", "merge", "-q", "--no-ff", "-m", "Merge button", "add-second-one")
    assert failures(ledger_repo) == {}


def test_unsigned_merge_that_adds_content_is_rejected(ledger_repo: LedgerRepo, keys: dict[str, SshKey]) -> None:
    _branch_with_instruction(ledger_repo, keys["alice"], "second-one")
    _branch_with_instruction(ledger_repo, keys["alice"], "third-one")
    ledger_repo.git(
        "-c", "commit.gpgsign=false", "merge", "-q", "--no-ff", "-m", "m1", "add-second-one", "add-third-one"
    )
    merge = ledger_repo.head()
    found = failures(ledger_repo)
    assert list(found) == [merge] and found[merge].startswith("merge that adds content")


def test_unsigned_merge_smuggling_a_change_is_rejected(ledger_repo: LedgerRepo, keys: dict[str, SshKey]) -> None:
    _branch_with_instruction(ledger_repo, keys["alice"], "second-one")
    ledger_repo.git("-c", "commit.gpgsign=false", "merge", "-q", "--no-ff", "--no-commit", "add-second-one")
    ledger_repo.write("ledger/instructions/evil-one.yaml", instruction("evil-one"))
    merge = ledger_repo.commit("Merge with a passenger", None)
    assert failures(ledger_repo)[merge].startswith("merge that adds content")


def test_signed_merge_of_diverged_branches_is_accepted(ledger_repo: LedgerRepo, keys: dict[str, SshKey]) -> None:
    _branch_with_instruction(ledger_repo, keys["alice"], "second-one")
    _branch_with_instruction(ledger_repo, keys["alice"], "third-one")
    ledger_repo.git("merge", "-q", "--no-ff", "-m", "m", "add-second-one")
    ledger_repo.git(
        "-c",
        "gpg.format=ssh",
        "-c",
        f"user.signingkey={keys['alice'].private}",
        "merge",
        "-q",
        "-S",
        "--no-ff",
        "-m",
        "Signed merge",
        "add-third-one",
    )
    assert failures(ledger_repo) == {}


def test_force_push_is_reported_as_rewritten_history(ledger_repo: LedgerRepo, keys: dict[str, SshKey]) -> None:
    ledger_repo.write("ledger/instructions/second-one.yaml", instruction("second-one"))
    accepted = ledger_repo.commit("Add second", keys["alice"])
    ledger_repo.git("reset", "-q", "--hard", "HEAD~1")
    ledger_repo.write("ledger/instructions/other-one.yaml", instruction("other-one"))
    rewritten = ledger_repo.commit("Rewritten", keys["alice"])
    found = failures(ledger_repo, "--since", accepted)
    assert found[rewritten].startswith("history rewritten")
    assert failures(ledger_repo, "--since", f"{rewritten}~1") == {}


def test_trust_root_must_be_an_ancestor(ledger_repo: LedgerRepo, keys: dict[str, SshKey], tmp_path: Path) -> None:
    other = LedgerRepo(tmp_path / "other")
    other.signers([f"mallory@evil.example {keys['mallory'].public_text}"])
    other.commit("Another root", keys["mallory"])
    ledger_repo.git("fetch", "-q", str(other.path), "main:other")
    trust_root = ledger_repo.head("main")
    ledger_repo.git("checkout", "-q", "other")
    found = failures(ledger_repo, "--trust-root", trust_root)
    assert "does not descend from the trust root" in next(iter(found.values()))
    result = opos("verify", "--repo", ledger_repo.path, "--rev", "other")
    assert result.code == 0  # with no pin, the single root of that history is its own trust root


def test_pinned_trust_root_in_the_middle(ledger_repo: LedgerRepo, keys: dict[str, SshKey]) -> None:
    ledger_repo.write("ledger/instructions/second-one.yaml", instruction("second-one"))
    ledger_repo.commit("Unsigned before the pin", None)
    ledger_repo.signers([f"alice@ooni.example {keys['alice'].public_text}"])
    ledger_repo.write("ledger/instructions/third-one.yaml", instruction("third-one"))
    pin = ledger_repo.commit("New trust root", keys["alice"])
    ledger_repo.write("ledger/instructions/fourth-one.yaml", instruction("fourth-one"))
    ledger_repo.commit("After the pin", keys["alice"])
    assert failures(ledger_repo, "--trust-root", pin) == {}
    assert len(failures(ledger_repo)) == 1  # from the real root, the unsigned commit counts


def test_several_roots_need_a_pin(ledger_repo: LedgerRepo, keys: dict[str, SshKey], tmp_path: Path) -> None:
    other = LedgerRepo(tmp_path / "other")
    other.write("x.txt", "x")
    other.commit("Unrelated", None)
    ledger_repo.git("fetch", "-q", str(other.path), "main:other")
    ledger_repo.git("-c", "commit.gpgsign=false", "merge", "-q", "--allow-unrelated-histories", "-m", "join", "other")
    result = opos("verify", "--repo", ledger_repo.path)
    assert result.code == 1 and "2 root commits" in result.err and "--trust-root" in result.err


def test_verification_is_incremental(ledger_repo: LedgerRepo, keys: dict[str, SshKey]) -> None:
    for index in range(5):
        ledger_repo.write(f"ledger/instructions/item-{index:03}.yaml", instruction(f"item-{index:03}"))
        ledger_repo.commit(f"Add {index}", keys["alice"])
    assert failures(ledger_repo) == {}
    ledger_repo.write("ledger/instructions/newest-one.yaml", instruction("newest-one"))
    newest = ledger_repo.commit("Newest", keys["alice"])

    class Counting(GitLedger):
        read: ClassVar[list[str]] = []

        def commit(self, commit_id):  # type: ignore[no-untyped-def]
            self.read.append(commit_id)
            return super().commit(commit_id)

    from opos.trust.verification import Verification

    source = Counting(ledger_repo.path)
    verification = Verification.open(source, newest, None)
    assert verification.verdict(newest).ok
    # the new commit, its parent (for the signers and the ledger tree) and the remembered trust root: not the rest
    assert set(Counting.read) <= {newest, ledger_repo.head("HEAD~1"), verification.trust_root}
    Counting.read.clear()
    again = Verifier(source, verification.trust_root, verification.verifier.cache)
    assert again.verify(newest).ok and Counting.read == []


def test_our_verdicts_agree_with_git_verify_commit(ledger_repo: LedgerRepo, keys: dict[str, SshKey]) -> None:
    """Every ledger-changing commit of a mixed history: our verdict equals git's, signer file from the parent."""
    alice, bob, carol = (keys[n].public_text for n in ("alice", "bob", "carol"))
    steps = [
        ("a", keys["alice"], [f"alice@ooni.example {alice}", f'bob@ooni.example valid-before="20261106" {bob}']),
        ("b", keys["bob"], None),
        ("c", keys["bob"], None),
        ("d", keys["mallory"], None),
        ("e", keys["alice"], [f"alice@ooni.example {alice}", f"carol@ooni.example {carol}"]),
        ("f", keys["carol"], None),
        ("g", None, None),
        ("h", keys["bob"], None),
    ]
    dates = iter(f"2026-11-{day:02}T12:00:00Z" for day in range(3, 20, 2))
    commits = []
    for name, key, signer_lines in steps:
        if signer_lines:
            ledger_repo.signers(signer_lines)
        ledger_repo.write(f"ledger/instructions/step-{name}.yaml", instruction(f"step-{name}"))
        commits.append(ledger_repo.commit(f"step {name}", key, next(dates)))
    found = failures(ledger_repo)
    for commit in commits:
        assert (commit not in found) == ledger_repo.git_verifies(commit, f"{commit}~1"), (commit, found.get(commit))
    assert len(found) == 4  # c (bob expired), d (mallory), g (unsigned), h (bob removed)
