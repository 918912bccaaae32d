"""Which commits are trusted, for a repository on disk: the verifier, its cache and the parsed-file memo."""

from __future__ import annotations

from dataclasses import dataclass, field

from opos.errors import HistoryRejected, RepositoryError
from opos.instructions import rules
from opos.model import CommitHash
from opos.trust import checkedfile
from opos.trust.approval import Approvals, LedgerReview
from opos.trust.gitrepo import FileCache, GitLedger
from opos.trust.history import Accepted, Failure, Report, Verifier, descends_from
from opos.trust.statedir import scope_of


@dataclass
class Verification:
    """The verified history of one ledger (a `GitLedger` the caller opened and closes) from its trust root."""

    ledger: GitLedger
    verifier: Verifier
    trust_root: CommitHash
    scope: str  # names the trust root and ledger directory in the state directory's file names
    checked: rules.CheckMemo = field(default_factory=rules.new_check_memo)
    saved: checkedfile.SavedVerdicts | None = None  # the journal `checked` was loaded from, if any

    @classmethod
    def open(
        cls, ledger: GitLedger, revision: CommitHash, trust_root: str | None, checked: rules.CheckMemo | None = None
    ) -> Verification:
        """Verify from the pinned (or default) trust root; `checked` carries parsed files over from earlier runs."""
        if trust_root:
            try:
                root = ledger.resolve(trust_root)
            except RepositoryError as err:
                raise RepositoryError(f"the trust root {trust_root} is not in {ledger.path}: wrong repository, or "
                                      "history rewritten") from err  # fmt: skip
        else:
            root = ledger.default_trust_root(revision)
        scope = scope_of(root, ledger.ledger_prefix)
        cache = FileCache(ledger.state.verdicts_file(scope))
        saved = None
        memo = checked
        if memo is None:  # a new process: start from the verdicts the last one saved
            memo = rules.new_check_memo()
            saved = checkedfile.SavedVerdicts(ledger.state)
            saved.load(memo)
        return cls(ledger, Verifier(ledger, root, cache, LedgerReview(ledger, memo)), root, scope, memo, saved)

    def save_checked(self) -> None:
        """Keep the verdicts on instruction files for the next process (see checkedfile)."""
        if self.saved is None:
            self.saved = checkedfile.SavedVerdicts(self.ledger.state)
        self.saved.save(self.checked)

    def accepted(self, commit: CommitHash) -> bool:
        """Whether the commit may be followed: good signatures, and every step of its chain has its signers."""
        entry = self.verifier.cache.get(commit)
        return entry is not None and entry.reviewed

    def check(self, revision: CommitHash, since: str | None = None) -> Report:
        """Verify history up to `revision`; with `since`, also that it descends from that commit."""
        report = self.verifier.verify(revision)
        if since is not None:
            previous = self.ledger.resolve(since)
            if not descends_from(self.ledger, revision, previous):
                reason = (f"history rewritten: it does not descend from the previously accepted commit {previous}; "
                          f"reset the branch to {previous} (`git reset --hard {previous[:12]}`, then force-push it: "
                          "the one force-push that is safe) and re-apply the change with signed commits")  # fmt: skip
                report = Report(revision, [*report.failures, Failure(revision, reason)], None)
        return report

    def approvals(self, base: CommitHash, head: CommitHash) -> Approvals:
        """Who has signed what landing `head` on `base` with a merge commit would bring, and who must yet.

        The branch's own commits need only good signatures: the count is the merge's to meet.
        """
        base_info, head_info = self.ledger.commit(base), self.ledger.commit(head)
        if self.ledger.ledger_tree(base_info) == self.ledger.ledger_tree(head_info):
            return Approvals(0, "", ())
        needed, why = self.verifier.review.needed(base_info, head_info)
        failures = [
            f for f in self.verifier.verify(head).failures + self.verifier.verify(base).failures if not f.review
        ]
        if failures or not (self.accepted_signatures(base) and self.accepted_signatures(head)):
            reason = failures[0] if failures else f"{head} does not verify"
            return Approvals(needed, why, (), f"They cannot be counted until the history verifies: {reason}")
        problem = ""
        if not descends_from(self.ledger, head, base):
            problem = (f"The branch does not contain {base[:12]}: a merge of it would hold a ledger nobody signed; "
                       "merge or rebase it onto the base first, then approve it again.")  # fmt: skip
        return Approvals(needed, why, self.verifier.approvals(base, head), problem)

    def accepted_signatures(self, commit: CommitHash) -> bool:
        """Whether the commit's signatures and its ancestors' are good (a branch's commits need no more)."""
        return self.verifier.cache.get(commit) is not None

    def last_accepted(self, revision: CommitHash) -> CommitHash | None:
        """The newest accepted commit on `revision`'s first-parent chain: where to reset a branch to."""
        commit: CommitHash | None = revision
        while commit is not None:
            if self.accepted(commit):
                return commit
            parents = self.ledger.commit(commit).parents
            commit = parents[0] if parents else None
        return None

    def require(self, revision: CommitHash, since: str | None = None) -> Accepted:
        """The verdict on `revision`, which must be accepted. Raises HistoryRejected."""
        report = self.check(revision, since)
        if not report.ok or report.accepted is None:
            raise HistoryRejected([(f.commit, f.reason) for f in report.failures])
        return report.accepted
