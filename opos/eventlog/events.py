"""The event log: the ledger's history as added / changed / removed / expired events. Pure.

The log follows the first-parent chain of the followed branch, which is what the feeds saw: at
each step, the instruction files that differ from the previous step are events of that commit
and its sequence. A change that came in through a merge is credited to the commit that made it
on the merged branch (its `revision`, as `git log -1 -- <file>` says), whose signer signed it.
Windows that ended are `expired` events at their end time, derived when the log is read.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from opos.eventlog.governance import POLICY, SIGNERS, GovernanceChange, field_changes, ledger_changes
from opos.instructions import rules
from opos.model import CommitHash, format_time
from opos.trust.revisions import last_revisions
from opos.trust.verdicts import CommitInfo


class LedgerSource(Protocol):
    def commit(self, commit_id: CommitHash) -> CommitInfo: ...

    def instructions_tree(self, commit: CommitInfo) -> str | None: ...

    def instruction_entries(self, commit: CommitInfo) -> Mapping[str, str]: ...

    def changed_instructions(self, commit: CommitInfo, parent: CommitInfo | None) -> set[str]: ...

    def instruction_entry(self, commit: CommitInfo, name: str) -> str | None:
        """The file's `mode:blob id` at a commit, or None when there is no such entry."""
        ...

    def instruction_blob(self, blob_id: str) -> bytes:
        """A file's contents by blob id; raises BlobTooLarge past the ledger's file limit."""
        ...

    def policy_file(self, commit: CommitInfo) -> bytes | None: ...

    def allowed_signers(self, commit: CommitInfo) -> bytes | None: ...

    def keys_tree(self, commit: CommitInfo) -> str | None: ...

    def key_files(self, commit: CommitInfo) -> Mapping[str, bytes | None]: ...

    @property
    def ledger_prefix(self) -> str: ...


Action = Literal[
    "added", "changed", "removed", "expired", "invalid", "signer-added", "signer-removed", "policy-changed",
    "keys-rotated",
]  # fmt: skip


@dataclass(frozen=True)
class Event:
    action: Action
    instruction: str
    commit: str  # the commit of the followed branch where the change appeared
    sequence: int
    time: str  # when: the commit's time, or the window's end for expired
    signer: str | None
    key: str | None
    message: str  # the first line of the revision's commit message
    revision: str  # the commit that made the change
    after: dict[str, Any] | None  # the normalised instruction after the change
    before: dict[str, Any] | None
    problem: str | None = None  # for `invalid`: why the file at this commit is not a valid instruction
    approvers: Sequence[str] = ()  # the other staff whose signatures landed it (policy.yaml's review)

    @property
    def attribution(self) -> str:
        """'signed by alice@…, approved by bob@… and carol@…', or 'unsigned'."""
        signed = f"signed by {self.signer}" if self.signer else "unsigned"
        return f"{signed}, approved by {join_and(self.approvers)}" if self.approvers else signed

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "instruction": self.instruction,
            "commit": self.commit,
            "sequence": self.sequence,
            "time": self.time,
            "signer": self.signer,
            "key": self.key,
            "message": self.message,
            "revision": self.revision,
            "after": self.after,
            "before": self.before,
            "problem": self.problem,
            "approvers": list(self.approvers),
        }

    @property
    def about_instruction(self) -> bool:
        """False for the events about who may sign, the policy and the key documents."""
        return not self.action.startswith(("signer-", "policy-", "keys-"))

    @property
    def summary(self) -> str:
        """One line for people, for the events that are not about an instruction."""
        if self.action == "signer-added" and self.after:
            return f"{self.after['principal']} may sign changes ({self.after['key']})"
        if self.action == "signer-removed" and self.before:
            return f"{self.before['principal']} may no longer sign changes ({self.before['key']})"
        if self.action == "policy-changed":
            return "the ledger's limits changed: " + ", ".join(f for f, _, _ in field_changes(self.before, self.after))
        if self.action == "keys-rotated" and self.after:
            changed = ", ".join(
                f for f, _, _ in field_changes(self.before, self.after) if f not in ("version", "expires")
            )
            return f"key document version {self.after.get('version')}" + (f": {changed} changed" if changed else "")
        return str(self.subject.get("title", ""))

    @property
    def subject(self) -> dict[str, Any]:
        """The instruction the event is about: as it stands after, or as it stood before.

        An `invalid` file with no valid version before it is shown as a stub that says so.
        """
        subject = (self.after or self.before) if self.about_instruction else None
        if subject is None:
            title = "(not a valid instruction)" if self.about_instruction else self.summary
            return {
                "id": self.instruction, "kind": "", "title": title, "reason": self.problem or "",
                "test": "none", "inputs": [], "every": None,
                "target": {"countries": [], "networks": [], "platforms": [], "max_probes": None,
                           "max_probes_per": "target", "sample": None},
                "window": {"start": self.time, "end": self.time},
            }  # fmt: skip
        return subject


SignerOf = Callable[[CommitHash], tuple[str | None, str | None]]


def join_and(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def approvers_besides(approvers: Sequence[str], signer: str | None) -> tuple[str, ...]:
    """The step's approvers other than the person who signed the change (a principal names its person first)."""
    person = signer.split(",")[0] if signer else None
    return tuple(name for name in approvers if name != person)


_FILE_MODES = ("100644", "100755")


def _instructions(
    source: LedgerSource, commit: CommitInfo, names: Iterable[str], memo: rules.CheckMemo | None
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Normalised instructions for the named files at a commit, and for the files that are not valid, why.

    `memo` holds the verdicts the renderer already reached, by blob id: no file is judged twice.
    """
    names = [n for n in names if n.endswith(".yaml")]
    if not names:
        return {}, {}
    policy = rules.policy_of(source.policy_file(commit))
    result, problems = {}, {}
    for name in names:
        path = f"{source.ledger_prefix}instructions/{name}"
        mode, _, blob_id = (source.instruction_entry(commit, name) or "").partition(":")
        if mode not in _FILE_MODES:
            problems[name] = f"{path}: not a file OPOS can read (a link or a folder)"
            continue
        read = functools.partial(source.instruction_blob, blob_id)
        instruction, found = rules.check_known(memo, policy, path, blob_id, read)
        if instruction is not None:
            result[name] = instruction.to_json()
        else:
            problems[name] = str(found[0]) if found else f"{path}: not valid"
    return result, problems


def step_events(
    source: LedgerSource,
    parent: CommitHash | None,
    commit: CommitHash,
    sequence: int,
    signer_of: SignerOf,
    memo: rules.CheckMemo | None = None,
    approvers: Sequence[str] = (),
) -> list[Event]:
    """The events of one first-parent step, from `parent` (None for the trust root) to `commit`.

    `memo` is the verdicts reached so far (see rules.check_known), shared with the renderer;
    `approvers` the distinct staff whose signatures landed the step (history.Accepted.approvers).
    """
    info = source.commit(commit)
    parent_info = source.commit(parent) if parent else None
    events = _ledger_events(source, info, parent_info, sequence, signer_of)
    if parent_info is None or source.instructions_tree(parent_info) != source.instructions_tree(info):
        events += _instruction_events(source, info, parent_info, sequence, signer_of, memo)
    if not approvers:
        return events
    with_approvers = []
    for event in events:  # most steps have no approver besides the signer: those events stay as they are
        others = approvers_besides(approvers, event.signer)
        with_approvers.append(replace(event, approvers=others) if others else event)
    return with_approvers


def _ledger_events(
    source: LedgerSource, info: CommitInfo, parent: CommitInfo | None, sequence: int, signer_of: SignerOf
) -> list[Event]:
    """Who may sign, the policy and the key documents: signer-added, signer-removed, policy-changed, keys-rotated.

    Each is credited as an instruction change is: through a merge, to the commit on the merged branch
    that made it (its author); whoever approved or merged it is an approver (step_events).
    """
    time = format_time(dt.datetime.fromtimestamp(info.committed, dt.UTC))
    events = []
    for change in ledger_changes(source, info, parent):
        made = _made_by(source, info, _state(source, change)) if len(info.parents) > 1 else info.id
        signer, key = signer_of(made)
        first = source.commit(made).message.strip().splitlines()
        message = first[0] if first else ""
        events.append(Event(change.action, change.about, info.id, sequence, time, signer, key, message, made,
                            change.after, change.before))  # fmt: skip
    return events


def _state(source: LedgerSource, change: GovernanceChange) -> Callable[[CommitInfo], object]:
    """What of a commit's files the change is about: the file whose state the merge brought in."""
    if change.about == SIGNERS:
        return source.allowed_signers
    if change.about == POLICY:
        return source.policy_file
    name = f"{(change.after or {}).get('version')}.json"
    return lambda commit: source.key_files(commit).get(name)


def _made_by(source: LedgerSource, merge: CommitInfo, state: Callable[[CommitInfo], object]) -> CommitHash:
    """The commit on a merged branch that gave the merge its `state` (walking the branch's first parents back to
    the first commit that has it), else the merge itself."""
    wanted = state(merge)
    for side in merge.parents[1:]:
        current = source.commit(side)
        if state(current) != wanted:
            continue
        for _ in range(10_000):
            if not current.parents:
                return current.id
            previous = source.commit(current.parents[0])
            if state(previous) != wanted:
                return current.id
            current = previous
    return merge.id


def _instruction_events(
    source: LedgerSource,
    info: CommitInfo,
    parent_info: CommitInfo | None,
    sequence: int,
    signer_of: SignerOf,
    memo: rules.CheckMemo | None,
) -> list[Event]:
    commit = info.id
    touched = sorted(source.changed_instructions(info, parent_info))
    mine = {name for name in touched if source.instruction_entry(info, name) is not None}
    theirs = {name for name in touched if parent_info and source.instruction_entry(parent_info, name) is not None}
    after, broken = _instructions(source, info, [n for n in touched if n in mine], memo)
    before = _instructions(source, parent_info, [n for n in touched if n in theirs], memo)[0] if parent_info else {}
    present = [n for n in touched if n in after]
    revisions = last_revisions(source, commit, present) if len(info.parents) > 1 else dict.fromkeys(present, commit)
    time = format_time(dt.datetime.fromtimestamp(info.committed, dt.UTC))
    events = []
    for name in touched:
        new, old = after.get(name), before.get(name)
        if name in broken:  # a file that no longer (or never did) pass the rules: said, never skipped
            signer, key = signer_of(commit)
            first = info.message.strip().splitlines()
            ident = name.removesuffix(".yaml")
            events.append(Event("invalid", ident, commit, sequence, time, signer, key, first[0] if first else "",
                                commit, None, old, broken[name]))  # fmt: skip
            continue
        if new is None and old is None:
            continue
        action: Action = "added" if old is None else "removed" if new is None else "changed"
        if action == "changed" and new == old:
            continue  # only formatting or comments changed: the instruction did not
        revision = revisions.get(name, commit) if new is not None else _remover(source, info, name)
        signer, key = signer_of(CommitHash(revision))
        message = source.commit(CommitHash(revision)).message.strip().splitlines()
        ident = str((new or old or {})["id"])
        events.append(
            Event(action, ident, commit, sequence, time, signer, key, message[0] if message else "", revision, new, old)
        )
    return events


def _remover(source: LedgerSource, merge: CommitInfo, name: str) -> str:
    """The commit on a merged branch that deleted `name` (walking its first parents), else the merge."""
    for side in merge.parents[1:]:
        current = source.commit(side)
        for _ in range(10_000):
            if name in source.instruction_entries(current):
                break
            if not current.parents:
                break
            previous = source.commit(current.parents[0])
            if name in source.instruction_entries(previous):
                return current.id
            current = previous
    return merge.id


def expirations(events: Iterable[Event]) -> list[tuple[Event, Event]]:
    """Every `expired` event there can be, with the event of the version that expires.

    One at the end of every window that ends while its version is current (not replaced before);
    it has happened once that end is past. The answer for one instruction depends on its own events
    only, so a caller may work it out instruction by instruction.
    """
    versions = sorted(
        (e for e in events if e.action not in ("expired", "invalid") and e.about_instruction), key=lambda e: e.time
    )
    superseded: dict[int, str] = {}  # index of a version -> the time the next event replaced it
    last: dict[str, int] = {}
    for index, event in enumerate(versions):
        if event.instruction in last:
            superseded[last[event.instruction]] = event.time
        last[event.instruction] = index
    result = []
    for index, event in enumerate(versions):
        if event.after is None:
            continue
        end = str(event.after["window"]["end"])  # canonical times compare as strings
        if index in superseded and superseded[index] <= end:
            continue
        result.append((event, replace(event, action="expired", time=end, after=None, before=event.after)))
    return result
