"""Whether a commit of a ledger on disk may be followed: the one decision every entry point asks.

`Verification.verdict(revision, since)` is the only place that says a commit may be followed from
the commit accepted before it (`since`: a site's published head, the service's, an auditor's last
cosigned commit, `opos verify --since`). It takes, in order:

1. the signed history (`history.Verifier`): every change signed as of its first parent, merges
   that land only signed work on top of what they land on, no backdating, and every step of the
   revision's first-parent chain signed by as many people as policy.yaml's review asks;
2. the first-parent rule: `since` is on the revision's first-parent chain, so what probes follow
   only grows and its sequence never goes back (anything else is history rewritten);
3. the key documents (`keyhistory`): at every step a committed version stays, and a new one follows;
4. the instruction rules: every file of the ledger at the revision is a valid instruction.

`opos verify`, `opos render`, `opos audit`, the service's sync and the auditor all call it (through
`require`, which raises), and nothing else decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from opos.errors import HistoryRejected, LedgerInvalid, OposError, Problem, RepositoryError
from opos.instructions import rules
from opos.model import CommitHash
from opos.trust import checkedfile, keyhistory
from opos.trust.ancestry import descends_from
from opos.trust.approval import Approvals, LedgerReview
from opos.trust.gitrepo import FileCache, GitLedger
from opos.trust.history import Verifier
from opos.trust.statedir import scope_of
from opos.trust.verdicts import Accepted, Failure


@dataclass(frozen=True)
class Verdict:
    """Whether `revision` may be followed; when it may, its verified step and its valid instructions."""

    revision: CommitHash
    failures: list[Failure]  # history: signatures, review, first-parent rule, key documents
    accepted: Accepted | None  # the revision's verdict when it may be followed
    problems: list[Problem] = field(default_factory=list)  # instruction files that are not valid at the revision
    checked: rules.CheckResult | None = None  # the revision's valid instructions, when there are no problems

    @property
    def ok(self) -> bool:
        return not self.failures and not self.problems and self.accepted is not None

    @property
    def rewritten(self) -> bool:
        """Whether it fails because the commit accepted before is not on its first-parent chain."""
        return any(f.rewritten for f in self.failures)

    def lines(self) -> list[str]:
        """One line per refusal: `<commit> <reason>`, then `path:line: field: message` per invalid file."""
        return [str(f) for f in self.failures] + [f"{self.revision} {p}" for p in self.problems]


@dataclass(frozen=True)
class Followable:
    """A commit that may be followed: its verified step and its instructions, all valid."""

    accepted: Accepted
    checked: rules.CheckResult

    @property
    def sequence(self) -> int:
        return self.accepted.sequence


@dataclass
class Verification:
    """The verified history of one ledger (a `GitLedger` the caller opened and closes) from its trust root."""

    ledger: GitLedger
    verifier: Verifier
    trust_root: CommitHash
    scope: str  # names the trust root and ledger directory in the state directory's file names
    checked: rules.CheckMemo = field(default_factory=rules.new_check_memo)
    saved: checkedfile.SavedVerdicts | None = None  # the journal `checked` was loaded from, if any
    _verdicts: dict[tuple[CommitHash, CommitHash | None, bool], Verdict] = field(default_factory=dict)

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
        if memo is None:  # a new process: start from the verdicts the last one saved, read when first needed
            saved = checkedfile.SavedVerdicts(ledger.state)
            memo = checkedfile.SavedMemo(saved)
        return cls(ledger, Verifier(ledger, root, cache, LedgerReview(ledger, memo)), root, scope, memo, saved)

    def save_checked(self) -> None:
        """Keep the verdicts on instruction files for the next process (see checkedfile)."""
        if self.saved is None:
            self.saved = checkedfile.SavedVerdicts(self.ledger.state)
        self.saved.save(self.checked)

    def verdict(self, revision: CommitHash, since: CommitHash | None = None, proposal: bool = False) -> Verdict:
        """Whether `revision` may be followed from `since`, the commit accepted before it (None: from the trust
        root alone). With `proposal` (a pull request's branch), steps short of their review count do not
        count against it: the merge that lands it must have them."""
        key = (revision, since, proposal)
        if key not in self._verdicts:
            self._verdicts[key] = self._decide(revision, since, proposal)
        return self._verdicts[key]

    def _decide(self, revision: CommitHash, since: CommitHash | None, proposal: bool) -> Verdict:
        report = self.verifier.verify(revision)
        failures = [f for f in report.failures if not (proposal and f.review)]
        accepted = report.accepted
        if proposal and not failures:
            accepted = self.verifier.cache.get(revision)
        if since is not None and not self._builds_on(revision, since):
            failures.append(Failure(revision, _rewritten(since), rewritten=True))
        if failures or accepted is None:
            return Verdict(revision, failures, None)
        broken = keyhistory.failures(self.ledger, self.trust_root, self.scope, revision)
        if broken:
            return Verdict(revision, [Failure(CommitHash(c), r) for c, r in broken], None)
        checked = rules.check_ledger(self.ledger.ledger_files(self.ledger.commit(revision)), self.checked)
        if checked.problems:
            return Verdict(revision, [], None, list(checked.problems))
        return Verdict(revision, [], accepted, [], checked)

    def _builds_on(self, revision: CommitHash, since: CommitHash) -> bool:
        try:
            self.ledger.commit(since)
        except RepositoryError:
            return False  # the commit accepted before is gone from this repository: rewritten
        return self.verifier.on_chain(revision, since)

    def require(self, revision: CommitHash, since: CommitHash | None = None) -> Followable:
        """`revision`, which must be followable from `since`. Raises HistoryRejected, or LedgerInvalid when
        only its instruction files are not valid."""
        verdict = self.verdict(revision, since)
        if verdict.problems:
            raise LedgerInvalid(verdict.problems)
        if verdict.accepted is None or verdict.checked is None:
            raise HistoryRejected([(f.commit, f.reason) for f in verdict.failures])
        return Followable(verdict.accepted, verdict.checked)

    def recovery(self, verdict: Verdict, last: CommitHash | None, branch: str, proposal: bool = False) -> str:
        """What to do about a refused verdict, for the situation: a proposal is fixed on its branch (resetting would
        throw its work away); a followed branch goes back to `last`. A refused unsigned non-merge on top of signed
        work is named as what it most likely is: a squash or rebase merge made by the hosting site."""
        squashed = [f.commit[:12] for f in verdict.failures if self._looks_squashed(f.commit)]
        cause = (f" {', '.join(squashed)}: an unsigned commit on top of signed work, most likely a squash or rebase "
                 "merge made by the hosting site: merge pull requests with a merge commit (allow merge commits "
                 "only)." if squashed else "")  # fmt: skip
        if proposal:
            fixed = ("This is a proposal: fix its commits on the branch (`git commit --amend -S` for the last one, "
                     "`git rebase -S <base>` for several) and push it again; nothing needs resetting.")  # fmt: skip
            return fixed + cause
        if last is None:
            return cause.strip()
        return (f"The last accepted commit is {last}. To recover: reset {branch} to it (git reset --hard "
                f"{last[:12]}; the one force-push that is safe is back to it), then re-apply the change with signed "
                f"commits.{cause}")  # fmt: skip

    def _looks_squashed(self, commit: CommitHash) -> bool:
        try:
            info = self.ledger.commit(commit)
            return info.signature is None and len(info.parents) == 1 and (
                self.ledger.commit(info.parents[0]).signature is not None)  # fmt: skip
        except OposError:
            return False

    def last_accepted(self, revision: CommitHash, since: CommitHash | None = None) -> CommitHash | None:
        """The newest commit of `revision`'s first-parent chain that may be followed (from `since`): where to
        reset a branch to. Never a refused commit; `since` itself when nothing newer may be."""
        floor = self.verifier.cache.get(since) if since is not None else None
        commit: CommitHash | None = revision
        while commit is not None:
            if commit == since:
                return since
            entry = self.verifier.cache.get(commit)
            if floor is not None and entry is not None and entry.sequence <= floor.sequence:
                return since  # past where the commit accepted before stands: the branch left it
            if entry is not None and entry.reviewed and self.verdict(commit, since).ok:
                return commit
            parents = self.ledger.commit(commit).parents
            commit = parents[0] if parents and commit != self.trust_root else None
        return since

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
            problem = (f"The branch does not contain {base[:12]}: a merge of it would hold a ledger nobody signed "
                       "and is refused; merge or rebase it onto the base first, then approve it again.")  # fmt: skip
        return Approvals(needed, why, self.verifier.approvals(base, head), problem)

    def accepted_signatures(self, commit: CommitHash) -> bool:
        """Whether the commit's signatures and its ancestors' are good (a branch's commits need no more)."""
        return self.verifier.cache.get(commit) is not None


def _rewritten(since: CommitHash) -> str:
    return (f"history rewritten: the previously accepted commit {since} is not on its first-parent chain (what "
            f"probes follow only grows); reset the branch to {since[:12]} (`git reset --hard {since[:12]}`, then "
            "force-push it: the one force-push that is safe) and re-apply the change with signed commits")  # fmt: skip
