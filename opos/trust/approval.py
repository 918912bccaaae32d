"""How many staff must sign a step of a ledger repository: policy.yaml's review applied to what the step changes.

The count comes from the policy in the step's first parent, so that lowering it takes the count
in force. A change to allowed_signers, policy.yaml or the key documents takes the largest count; a change of an
instruction takes the largest rule its old or new target matches; a file that is not a valid
instruction (so nobody can say whom it reaches) is counted as matching every rule.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from opos.instructions import review, rules
from opos.trust.gitrepo import GitLedger
from opos.trust.verdicts import CommitInfo

_FILE_MODES = ("100644", "100755")


class LedgerReview:
    """The `history.ReviewRule` of a ledger on disk; `memo` is the verification's parsed-file memo."""

    def __init__(self, ledger: GitLedger, memo: rules.CheckMemo) -> None:
        self.ledger = ledger
        self.memo = memo

    def needed(self, parent: CommitInfo, commit: CommitInfo) -> tuple[int, str]:
        policy = self.ledger.policy_file(parent)
        in_force = review.review_of(policy)
        if in_force.largest == 1:
            return 1, ""
        if self.ledger.allowed_signers(parent) != self.ledger.allowed_signers(commit):
            return in_force.largest, "it changes allowed_signers"
        if policy != self.ledger.policy_file(commit):
            return in_force.largest, "it changes policy.yaml"
        if self.ledger.keys_tree(parent) != self.ledger.keys_tree(commit):
            return in_force.largest, "it changes the key documents"
        needed, why = in_force.signers, ""
        for name in sorted(self.ledger.changed_instructions(commit, parent)):
            if not name.endswith(".yaml"):
                continue
            for side in (parent, commit):
                count, reason = self._for_file(in_force, side, name)
                if count > needed:
                    needed, why = count, f"instructions/{name}: {reason}"
        return needed, why

    def _for_file(self, in_force: review.Review, commit: CommitInfo, name: str) -> tuple[int, str]:
        entry = self.ledger.instruction_entry(commit, name)
        if entry is None:
            return 0, ""
        mode, _, blob_id = entry.partition(":")
        instruction = None
        if mode in _FILE_MODES:
            policy = rules.policy_of(self.ledger.policy_file(commit))
            path = f"{self.ledger.ledger_prefix}instructions/{name}"
            read = functools.partial(self.ledger.instruction_blob, blob_id)
            instruction, _ = rules.check_known(self.memo, policy, path, blob_id, read)
        if instruction is None:
            return in_force.largest, f"not a valid instruction at {commit.id[:12]}, so whom it reaches is not known"
        return in_force.for_target(instruction.target)


@dataclass(frozen=True)
class Approvals:
    """Where a proposed change stands: the signers landing it would need, and who has signed it so far."""

    needed: int
    why: str  # what asks for more than the default, if anything
    approvers: tuple[str, ...]
    problem: str = ""  # why they cannot be counted (the branch's history does not verify), or a caveat

    @property
    def missing(self) -> int:
        return max(0, self.needed - len(self.approvers))

    def to_json(self) -> dict[str, Any]:
        return {"needed": self.needed, "why": self.why or None, "approvers": list(self.approvers),
                "missing": self.missing, "problem": self.problem or None}  # fmt: skip

    def describe(self) -> str:
        """One paragraph for people: how many, who, and what to do next."""
        if self.needed == 0:
            return "Approvals: none needed (the change leaves the ledger as it is)."
        who = ", ".join(self.approvers) or "nobody yet"
        text = f"Approvals: {len(self.approvers)} of {self.needed} needed ({who})"
        if self.why:
            text += f"; {self.needed} because {self.why}"
        if self.missing:
            more = "another signer" if self.missing == 1 else f"{self.missing} more signers"
            text += f". Needs {more}: each checks out the branch and runs `opos approve`"
        text += "."
        return f"{text} {self.problem}" if self.problem else text
