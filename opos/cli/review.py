"""`opos approve`: a reviewer's signature over exactly the ledger a pull request would land.

The approval is an empty commit on the branch, signed by the reviewer's own key through git (the
one place the CLI runs `git commit -S`: the key is the user's and git knows where it is). Its
ledger tree is the branch's, so it counts for the merge that lands that tree and for no other.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime as dt
import shutil
import subprocess  # nosec B404: git is run with fixed arguments, never through a shell
from pathlib import Path
from typing import TextIO

from opos.cli._common import Commands, add_command, add_repo, add_trust, open_ledger
from opos.errors import OposError, RepositoryError, SignatureInvalid, UsageError
from opos.eventlog.preview import preview_text
from opos.model import CommitHash
from opos.signing import sshsig
from opos.trust.gitrepo import GitLedger
from opos.trust.verification import Verification

DEFAULT_BASES = ("origin/main", "main", "origin/master", "master")


def register(commands: Commands) -> None:
    parser = add_command(
        commands, "approve", approve,
        help="approve the checked-out branch with a signed empty commit",
        description="Print exactly what you are about to approve (the ledger at REV, compared with BASE, and the "
        "approvals it has), then make an empty commit signed with your key (`git commit --allow-empty -S`) on the "
        "checked-out branch. It counts toward policy.yaml's review for a merge that lands exactly this ledger; "
        "push it to the pull request's branch.",
    )  # fmt: skip
    parser.add_argument(
        "rev", nargs="?", default="HEAD",
        help="the commit you reviewed (default HEAD); it must be where the checked-out branch is",
    )  # fmt: skip
    parser.add_argument(
        "--base", help=f"the branch it will be merged into (default: the first of {', '.join(DEFAULT_BASES)})"
    )
    parser.add_argument("--dry-run", action="store_true", help="print what you would approve; commit nothing")
    add_repo(parser)
    add_trust(parser)


def approve(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    with open_ledger(args) as ledger:
        head = ledger.resolve("HEAD")
        reviewed = ledger.resolve(args.rev)
        if ledger.ledger_tree(ledger.commit(reviewed)) != ledger.ledger_tree(ledger.commit(head)):
            raise UsageError(f"the checked-out branch is at {head[:12]}, whose ledger is not {args.rev}'s: you would "
                             f"approve what you did not review; `git switch` to the branch at {args.rev}, or review "
                             "what it holds now")  # fmt: skip
        base = _base(ledger, args.base)
        if base == head:
            raise UsageError(f"HEAD is {args.base or 'the base branch'} itself: check out the pull request's branch")
        verification = Verification.open(ledger, head, args.trust_root)
        status = verification.approvals(base, head)
        if status.needed == 0:
            raise UsageError(f"HEAD's ledger is the same as {base[:12]}'s: there is nothing to approve")
        _refuse_self_approval(ledger, base, status.approvers, _signing_key(args.repo))
        tree = ledger.ledger_tree(ledger.commit(head))
        shown = preview_text(ledger, base, head, strict=False)
        subject = next(iter(ledger.commit(head).message.strip().splitlines()), "")
        message = (f"Approve: {subject}\n\nI approve the ledger {ledger.ledger_prefix or './'} as it stands at "
                   f"{head}\n(tree {tree}), compared with {base}:\n\n{shown}\n")  # fmt: skip
        print(f"You are about to sign the ledger at {head} (tree {tree}), compared with {base}:\n", file=out)
        print(shown, file=out)
        print(f"\n{status.describe()}", file=out)
        print("\nThe empty commit on top of it, signed with your key, says:\n", file=out)
        print("    " + message.strip().replace("\n", "\n    "), file=out)
        print("\nYour signature counts for a merge that lands exactly this ledger; any later change to the branch "
              "needs approving again.", file=out)  # fmt: skip
        if args.dry_run:
            return 0
    _commit(args.repo, message)
    with open_ledger(args) as ledger:
        made = ledger.resolve("HEAD")
        _say_whether_it_counts(ledger, made, base, out, err)
    return 0


def _signing_key(repo: Path) -> bytes | None:
    """The key blob of git's user.signingkey (a key:: literal, or a .pub or private key file); None if unknown."""
    git = shutil.which("git")
    if git is None:
        return None
    named = subprocess.run([git, "config", "user.signingkey"], cwd=repo, capture_output=True,  # nosec B603
                           text=True).stdout.strip()  # fmt: skip
    if named.startswith("key::"):
        line = named.removeprefix("key::")
    else:
        path = Path(named).expanduser()
        public = path if path.suffix == ".pub" else Path(f"{path}.pub")
        try:
            line = public.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
    parts = line.split()
    try:
        return base64.b64decode(parts[1], validate=True) if len(parts) >= 2 else None
    except binascii.Error:
        return None


def _refuse_self_approval(ledger: GitLedger, base: CommitHash, approvers: tuple[str, ...], key: bytes | None) -> None:
    """An approval by someone who signed the change already adds nothing: refuse it, and say who could approve."""
    if key is None:
        return
    signers = sshsig.parse_allowed_signers(ledger.allowed_signers(ledger.commit(base)) or b"")[0]
    mine = {p for line in signers if line.key_blob == key for p in line.principals.split(",")}
    if not mine & set(approvers):
        return
    others = sorted({line.principals.split(",")[0] for line in signers if line.key_blob != key} - set(approvers))
    raise OposError(f"you ({', '.join(sorted(mine))}) signed this change already: your approval would not count, "
                    "since an approval must come from another person. Nothing was committed. Ask "
                    f"{', '.join(others) or 'another signer'} to run `opos approve` on this branch")  # fmt: skip


def _base(ledger: GitLedger, named: str | None) -> CommitHash:
    if named:
        return ledger.resolve(named)
    for name in DEFAULT_BASES:
        try:
            return ledger.resolve(name)
        except RepositoryError:
            continue
    raise UsageError(f"no base branch found ({', '.join(DEFAULT_BASES)}): name it with --base")


def _commit(repo: Path, message: str) -> None:
    git = shutil.which("git")
    if git is None:
        raise OposError("git is not installed: `opos approve` signs through git (apt-get install git)")
    staged = subprocess.run([git, "diff", "--cached", "--quiet"], cwd=repo, capture_output=True)  # nosec B603
    if staged.returncode != 0:
        raise UsageError("changes are staged: an approval must be an empty commit; `git stash` or `git restore "
                         "--staged .` them first")  # fmt: skip
    made = subprocess.run(  # nosec B603: fixed arguments
        [git, "commit", "--allow-empty", "-S", "-q", "-F", "-"], cwd=repo, input=message, text=True,
        capture_output=True,
    )  # fmt: skip
    if made.returncode != 0:
        hint = "sign with your SSH key: `git config gpg.format ssh`, `git config user.signingkey ~/.ssh/id_ed25519.pub`"
        raise OposError(f"git could not make the signed commit: {made.stderr.strip()}\n{hint}")


def _say_whether_it_counts(ledger: GitLedger, made: CommitHash, base: CommitHash, out: TextIO, err: TextIO) -> None:
    info = ledger.commit(made)
    signers = sshsig.parse_allowed_signers(ledger.allowed_signers(ledger.commit(base)) or b"")[0]
    try:
        signer = sshsig.verify(
            info.signature or b"", info.payload, signers, dt.datetime.fromtimestamp(info.committed, dt.UTC)
        )
    except SignatureInvalid as reason:
        print(f"warning: {made[:12]} will not count as an approval: {reason} (allowed_signers as of {base[:12]})",
              file=err)  # fmt: skip
        return
    print(f"\nApproved as {signer.person} in {made}. Push it to the pull request's branch (`git push`).", file=out)
