"""Each instruction's revision equals what `git log -1 -- <file>` says, on random histories with merges."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from conftest import LedgerRepo
from opos.model import CommitHash
from opos.trust.gitrepo import GitLedger
from opos.trust.revisions import last_revisions

NAMES = [f"item-{n}.yaml" for n in range(6)]


def random_history(repo: LedgerRepo, seed: int, steps: int) -> None:
    chooser = random.Random(seed)
    repo.write("ledger/instructions/item-0.yaml", "v0\n")
    repo.commit("root", None, "2026-11-01T00:00:00Z")
    branches = ["main"]
    for step in range(steps):
        date = f"2026-11-01T{step // 60:02}:{step % 60:02}:00Z"
        action = chooser.random()
        branch = chooser.choice(branches)
        repo.git("checkout", "-q", branch)
        if action < 0.15 and len(branches) < 4:
            new = f"b{step}"
            repo.git("checkout", "-q", "-b", new)
            branches.append(new)
        elif action < 0.35 and len(branches) > 1:
            other = chooser.choice([b for b in branches if b != branch])
            strategy = chooser.choice([["-X", "theirs"], ["-X", "ours"], ["-s", "ours"]])
            env = {"GIT_COMMITTER_DATE": date, "GIT_AUTHOR_DATE": date}
            repo.git(
                "-c",
                "commit.gpgsign=false",
                "merge",
                "-q",
                "--no-ff",
                "--no-commit",
                *strategy,
                other,
                env=env,
                check=False,
            )
            if chooser.random() < 0.3:  # an "evil" merge that also edits a file
                repo.write(f"ledger/instructions/{chooser.choice(NAMES)}", f"merge {step}\n")
            repo.commit(f"merge {other} into {branch}", None, date)
        else:
            name = chooser.choice(NAMES)
            path = repo.path / "ledger" / "instructions" / name
            if path.exists() and chooser.random() < 0.2:
                repo.remove(f"ledger/instructions/{name}")
            else:
                repo.write(f"ledger/instructions/{name}", f"{name} {step} {chooser.random()}\n")
            repo.commit(f"step {step}", None, date)
    repo.git("checkout", "-q", "main")


def git_answers(repo: LedgerRepo, rev: str) -> dict[str, str]:
    present = repo.git("ls-tree", "--name-only", f"{rev}:ledger/instructions").split()
    return {n: repo.git("log", "-1", "--format=%H", rev, "--", f"ledger/instructions/{n}") for n in present}


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_revisions_match_git_log(tmp_path: Path, seed: int) -> None:
    repo = LedgerRepo(tmp_path / "repo")
    random_history(repo, seed, 60)
    ledger = GitLedger(repo.path)
    for branch in repo.git("for-each-ref", "--format=%(refname:short)", "refs/heads").split():
        expected = git_answers(repo, branch)
        revision = ledger.resolve(branch)
        assert last_revisions(ledger, revision, expected) == expected, branch


def test_known_answers_are_reused(tmp_path: Path) -> None:
    repo = LedgerRepo(tmp_path / "repo")
    random_history(repo, 7, 30)
    ledger = GitLedger(repo.path)
    earlier = ledger.resolve("main")
    names = git_answers(repo, "main")
    known = {earlier: last_revisions(ledger, earlier, names)}
    repo.write("ledger/instructions/item-5.yaml", "newest\n")
    newest = CommitHash(repo.commit("newest", None))
    expected = git_answers(repo, "main")
    read: list[str] = []
    original = ledger.commit

    def counting(commit_id: CommitHash):  # type: ignore[no-untyped-def]
        read.append(commit_id)
        return original(commit_id)

    ledger.commit = counting  # type: ignore[method-assign]
    assert last_revisions(ledger, newest, expected, known) == expected
    assert set(read) <= {newest, earlier}
