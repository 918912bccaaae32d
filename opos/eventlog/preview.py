"""The impact preview of a change in a repository (`opos diff`, `opos approve`, the pull request's comment): what it
does to who may sign, the policy and the keys (headed by warnings), the instructions it adds, changes or removes,
with their warnings, and where its approvals stand."""

from __future__ import annotations

import datetime as dt

from opos.errors import LedgerInvalid, OposError
from opos.eventlog import governance, impact
from opos.instructions import rules
from opos.model import CommitHash
from opos.trust.approval import Approvals
from opos.trust.gitrepo import GitLedger
from opos.trust.verification import Verification


def changes_between(ledger: GitLedger, base: CommitHash, head: CommitHash, strict: bool) -> list[impact.Change]:
    """The instructions added, changed or removed from `base` to `head`, with their warnings.

    With `strict`, a file at `head` that is not valid raises LedgerInvalid (`opos diff`).
    """
    sides = []
    for commit in (base, head):
        files = ledger.ledger_files(ledger.commit(commit))
        checked = rules.check_ledger(files)
        if strict and checked.problems and commit == head:
            raise LedgerInvalid(checked.problems)
        sides.append({ident: i.to_json() for ident, i in checked.instructions.items()})
    bridged = rules.policy_of(files.policy).oonirun  # the head's policy: the bridge as it will be
    return impact.compare(sides[0], sides[1], dt.datetime.now(dt.UTC), bridged)


def approvals_of(ledger: GitLedger, base: CommitHash, head: CommitHash, trust_root: str | None) -> Approvals:
    """Where the change's approvals stand; when the history cannot be verified, why, instead of the count."""
    try:
        return Verification.open(ledger, head, trust_root).approvals(base, head)
    except OposError as error:
        needed = 0 if ledger.ledger_tree(ledger.commit(base)) == ledger.ledger_tree(ledger.commit(head)) else 1
        return Approvals(needed, "", (), f"They cannot be counted: {error}")


def governance_between(ledger: GitLedger, base: CommitHash, head: CommitHash) -> list[governance.GovernanceChange]:
    """Signers added and removed, the policy before and after, and each new key document against its predecessor."""
    return governance.ledger_changes(ledger, ledger.commit(head), ledger.commit(base))


def preview_text(ledger: GitLedger, base: CommitHash, head: CommitHash, strict: bool) -> str:
    """The whole preview for people, as `opos diff` prints it and `opos approve` signs it."""
    ruled = governance.as_text(governance_between(ledger, base, head))
    changes = impact.as_text(changes_between(ledger, base, head, strict))
    return f"{ruled}\n\n{changes}" if ruled else changes
