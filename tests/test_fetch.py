"""Fetching the ledger: C git where it is installed, dulwich otherwise, the same mirror either way.

Real repositories and a real `git daemon` on 127.0.0.1; the hostile remotes are built here.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import LedgerRepo, SshKey, add_signed, instruction, push
from opos.errors import RepositoryError
from opos.trust.gitrepo import FetchLimits, GitLedger, fetch, fetch_branch
from opos.trust.gitrepo.fetch import INCOMING
from opos.trust.verification import Verification
from servers import GitDaemon


def without_git(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a machine without `git`: the fetch is dulwich's."""
    monkeypatch.setattr(fetch, "git_binary", lambda: None)


def mirror_ref(clone: Path, ref: str) -> str | None:
    with GitLedger(clone) as ledger:
        try:
            return ledger.resolve(ref)
        except RepositoryError:
            return None


@pytest.mark.parametrize("how", ["git", "dulwich"])
def test_both_fetches_make_the_same_verifiable_mirror(
    how: str, published_ledger: tuple[LedgerRepo, str], keys: dict[str, SshKey], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    repo, url = published_ledger
    if how == "dulwich":
        without_git(monkeypatch)
    clone = tmp_path / "mirror.git"
    assert fetch_branch(clone, url, "main") == repo.head()
    assert (clone / "refs" / "opos" / "incoming" / "main").exists() == (how == "git")
    for number in range(3):  # each fetch brings only what is new, on top of what the mirror has
        add_signed(repo, keys["alice"], f"more-{number}")
        assert fetch_branch(clone, url, "main") == repo.head()
    repo.git("reset", "-q", "--hard", "HEAD~2")  # a rewrite is fetched as it is: verification refuses it
    rewritten = push(repo, "--force")
    assert fetch_branch(clone, url, "main") == rewritten
    with GitLedger(clone) as ledger:
        head = ledger.resolve("main")
        assert head == repo.head() and Verification.open(ledger, head, None).verdict(head).accepted is not None


def test_git_is_given_no_way_to_run_a_command_or_take_an_option_from_the_remote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The remote is configuration (an operator's, or anyone's for an auditor): ext:: runs commands in git."""
    marker = tmp_path / "ran"
    monkeypatch.setenv("GIT_ALLOW_PROTOCOL", "ext:fd:file")  # what we inherit does not open the door either
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", "'protocol.ext.allow'='always'")
    clone = tmp_path / "mirror.git"
    for remote in (f"ext::sh -c touch% {marker}", f"--upload-pack=touch {marker}", "fd::3", "evil::x"):
        with pytest.raises(RepositoryError):
            fetch_branch(clone, remote, "main")
        assert not marker.exists(), remote
    assert not list((clone / "objects" / "pack").iterdir())
    subprocess.run(["git", "ls-remote", f"ext::sh -c touch% {marker}"], capture_output=True, timeout=30)
    assert marker.exists()  # the attack is real: git runs it where ext:: is allowed


def test_a_git_fetch_past_the_byte_limit_is_refused_and_nothing_of_it_is_kept(
    ledger_repo: LedgerRepo, keys: dict[str, SshKey], tmp_path: Path
) -> None:
    clone = tmp_path / "mirror.git"
    ledger_repo.write("attachments/huge.bin", os.urandom(3 * 1024 * 1024).hex())  # 6 MB that does not compress
    ledger_repo.commit("Something enormous", keys["alice"])
    with pytest.raises(RepositoryError, match="OPOS_AUDITOR_FETCH_BYTES"):  # a first fetch: C git's
        fetch_branch(clone, str(ledger_repo.path), "main", FetchLimits(max_bytes=1024 * 1024))
    assert not os.listdir(clone / "objects" / "pack")  # no pack, whole or partial
    assert mirror_ref(clone, "main") is None and mirror_ref(clone, f"{INCOMING}main") is None
    assert fetch_branch(clone, str(ledger_repo.path), "main") == ledger_repo.head()  # unbounded, it comes


def test_only_a_first_fetch_is_c_gits(
    ledger_repo: LedgerRepo, keys: dict[str, SshKey], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process of git costs about 60 ms where dulwich fetches a few objects in 17: a push reaches probes sooner."""
    clone, runs = tmp_path / "mirror.git", []
    real = fetch.git_binary
    monkeypatch.setattr(fetch, "git_binary", lambda: runs.append(1) or real())
    fetch_branch(clone, str(ledger_repo.path), "main")
    ledger_repo.write("ledger/instructions/after.yaml", instruction("after"))
    after = ledger_repo.commit("After", keys["alice"])
    assert fetch_branch(clone, str(ledger_repo.path), "main") == after and runs == [1]


def test_a_silent_remote_costs_a_bounded_fetch_its_seconds_and_leaves_no_process(tmp_path: Path) -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (the kernel does), never says a word
    try:
        remote = f"git://127.0.0.1:{silent.getsockname()[1]}/ledger.git"
        started = time.monotonic()
        with pytest.raises(RepositoryError, match="within 1 s"):
            fetch_branch(tmp_path / "mirror.git", remote, "main", FetchLimits(seconds=1))
        assert time.monotonic() - started < 30  # not the fallback's wait as well
        running = subprocess.run(["pgrep", "-f", f"127.0.0.1:{silent.getsockname()[1]}"], capture_output=True)
        assert running.returncode == 1, running.stdout  # git, and whatever it started, are gone
    finally:
        silent.close()


def test_what_git_cannot_fetch_is_said_as_dulwich_says_it(ledger_repo: LedgerRepo, tmp_path: Path,
                                                          git_daemon: GitDaemon) -> None:  # fmt: skip
    """git failed: dulwich fetches, and its error names the remote or the branch (a damaged clone: test_faults)."""
    clone = tmp_path / "mirror.git"
    with pytest.raises(RepositoryError, match="has no branch 'elsewhere'"):
        fetch_branch(clone, str(ledger_repo.path), "elsewhere")
    with pytest.raises(RepositoryError, match="cannot fetch 'main'"):
        fetch_branch(clone, git_daemon.url("nothing-here.git"), "main")
    assert fetch_branch(clone, str(ledger_repo.path), "main") == ledger_repo.head()
