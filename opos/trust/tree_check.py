"""What `opos check` finds in a working tree's ledger: the instruction files and policy.yaml (the rules),
allowed_signers (lines ssh-keygen would skip, a review nobody can meet, one key under two principals), the key
documents' chain, and windows that have ended. Reads the working tree; judges with the pure rules."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path

from opos.errors import Problem
from opos.instructions import review, rules
from opos.instructions.worktree import read_key_files, read_ledger_dir
from opos.model import Instruction, Signer, format_time
from opos.signing import keydoc, sshsig
from opos.trust import checkedfile
from opos.trust.history import distinct_people
from opos.trust.statedir import StateDir


def collect_problems(repo: Path, folder: Path, shown: str) -> tuple[list[Problem], dict[str, Instruction]]:
    """Every problem of the ledger directory `folder` of the working tree `repo` (shown in messages as `shown`),
    and its valid instructions by id. Verdicts on files are kept in the repository's .git/opos."""
    memo = rules.new_check_memo()
    saved = checkedfile.SavedVerdicts(StateDir(repo / ".git" / "opos")) if (repo / ".git").is_dir() else None
    if saved is not None:
        saved.load(memo)
    result = rules.check_ledger(read_ledger_dir(folder, shown), memo)
    if saved is not None:
        saved.save(memo)
    signers_path = folder / "allowed_signers"
    if signers_path.is_symlink():
        pass  # reported with every other link; never followed
    elif signers_path.is_file():
        signers, problems = sshsig.parse_allowed_signers(signers_path.read_bytes(), f"{shown}allowed_signers")
        result.problems.extend(problems)
        for signer in signers:
            if not signer.allows_namespace("git"):
                message = (f'namespaces="{signer.namespaces}" does not include git: {signer.principals} could not '
                           'sign commits; write namespaces="git"')  # fmt: skip
                result.problems.append(Problem(f"{shown}allowed_signers", signer.line, "", message))
        if not signers and not problems:
            result.problems.append(
                Problem(f"{shown}allowed_signers", None, "", "no signer is allowed: nobody could sign a change")
            )
        result.problems.extend(_unmeetable_review(folder, shown, signers))
    else:
        message = "missing: list the staff keys that may sign (principal ssh-ed25519 AAAA…)"
        result.problems.append(Problem(f"{shown}allowed_signers", None, "", message))
    result.problems.extend(keydoc.folder_chain(read_key_files(folder), shown)[1])
    return result.problems, result.instructions


def _unmeetable_review(folder: Path, shown: str, signers: list[sshsig.AllowedSigner]) -> list[Problem]:
    """A review that asks more signers than there are people to sign would freeze the ledger for good."""
    policy_path = folder / "policy.yaml"
    if not policy_path.is_file() or policy_path.is_symlink():
        return []
    data = policy_path.read_bytes()
    asked = review.review_of(data).largest
    people = distinct_people(_as_signers(line for line in signers if line.allows_namespace("git")))
    if asked <= len(people):
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    line = next((number for number, text in enumerate(lines, 1) if text.startswith("review:")), None)
    message = (f"the review asks up to {asked} signers, but allowed_signers names {len(people)} people "
               f"({', '.join(people)}): no such change could ever land; add staff first or ask fewer")  # fmt: skip
    return [Problem(f"{shown}policy.yaml", line, "review", message)]


def _as_signers(lines: Iterable[sshsig.AllowedSigner]) -> list[Signer]:
    return [Signer(line.principals, sshsig.fingerprint(line.key_blob)) for line in lines]


def shared_keys(folder: Path, shown: str) -> list[str]:
    """Keys listed under more than one principal: they count as one person for the review, which may surprise."""
    path = folder / "allowed_signers"
    if not path.is_file() or path.is_symlink():
        return []
    by_key: dict[bytes, list[sshsig.AllowedSigner]] = {}
    for line in sshsig.parse_allowed_signers(path.read_bytes())[0]:
        by_key.setdefault(line.key_blob, []).append(line)
    found = []
    for lines in by_key.values():
        names = list(dict.fromkeys(p for line in lines for p in line.principals.split(",")))
        if len(names) > 1:
            found.append(f"{shown}allowed_signers:{lines[0].line}: one key ({sshsig.fingerprint(lines[0].key_blob)}) "
                         f"is listed under {' and '.join(names)}: it counts as one person for the review (right for "
                         "a hand-over; two people must each have a key of their own)")  # fmt: skip
    return found


def ended_windows(instructions: dict[str, Instruction], shown: str) -> list[str]:
    """Valid instructions whose window has ended: not wrong, but they will never apply again."""
    now = dt.datetime.now(dt.UTC)
    return [
        f"{shown}instructions/{ident}.yaml: window.end: the window has already ended ({format_time(i.window.end)})"
        for ident, i in sorted(instructions.items())
        if i.window.end <= now
    ]
