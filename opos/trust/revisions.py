"""The commit that last changed each instruction file, as `git log -1 -- <file>` reports it, in one walk.

git's default history simplification, for one path: a commit that is TREESAME to a parent for that
path is not shown, and for a merge only the first such parent is followed; the first commit that
is shown is the answer. So each path follows a single chain until a commit differs from all its
parents; this walks all paths' chains at once, comparing the instructions trees of a commit and
its parents (cheap when the subtree ids are equal), newest commit first as git's queue does.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from typing import Protocol

from opos.model import CommitHash
from opos.trust.verdicts import CommitInfo


class InstructionSource(Protocol):
    def commit(self, commit_id: CommitHash) -> CommitInfo: ...

    def instructions_tree(self, commit: CommitInfo) -> str | None: ...

    def instruction_entries(self, commit: CommitInfo) -> Mapping[str, str]:
        """File name → an id that changes whenever the file's contents or mode change."""

    def changed_instructions(self, commit: CommitInfo, parent: CommitInfo | None) -> set[str]:
        """The names whose entry differs between the two commits (added, removed or changed)."""


def last_revisions(
    source: InstructionSource,
    revision: CommitHash,
    names: Iterable[str],
    known: Mapping[CommitHash, Mapping[str, CommitHash]] | None = None,
) -> dict[str, CommitHash]:
    """For each file name under instructions/ at `revision`, the commit that last changed it.

    `known` holds answers already computed at other commits (for example the last rendered one):
    a chain that reaches such a commit takes the answer from there instead of walking on.
    """
    known = known or {}
    result: dict[str, CommitHash] = {}
    pending: dict[CommitHash, set[str]] = {revision: set(names)}
    queue: list[tuple[int, CommitHash]] = [(-source.commit(revision).committed, revision)]
    while queue:
        _, commit_id = heapq.heappop(queue)
        waiting = pending.pop(commit_id, None)
        if not waiting:
            continue
        if commit_id in known:
            answers = known[commit_id]
            for name in [n for n in waiting if n in answers]:
                result[name] = answers[name]
                waiting.discard(name)
            if not waiting:
                continue
        info = source.commit(commit_id)
        if not info.parents:
            result.update(dict.fromkeys(waiting, commit_id))
            continue
        routes = _routes(source, info, waiting, result)
        for parent_id, routed in routes.items():
            if parent_id not in pending:
                pending[parent_id] = set()
                heapq.heappush(queue, (-source.commit(parent_id).committed, parent_id))
            pending[parent_id] |= routed
    return result


def _routes(
    source: InstructionSource, info: CommitInfo, waiting: set[str], result: dict[str, CommitHash]
) -> dict[CommitHash, set[str]]:
    """Which parent to follow for each file still waiting; a file that none of them holds as it is here was
    changed by this commit (recorded in `result`)."""
    parents = [source.commit(p) for p in info.parents]
    mine_tree = source.instructions_tree(info)
    routes: dict[CommitHash, set[str]] = {}
    same_tree = [p for p in parents if source.instructions_tree(p) == mine_tree]
    if same_tree:
        routes[same_tree[0].id] = waiting  # TREESAME for every file: follow the first such parent
    elif len(parents) == 1:  # most steps: what changed is a set difference, whatever the ledger's size
        changed = waiting & source.changed_instructions(info, parents[0])
        result.update(dict.fromkeys(changed, info.id))
        if waiting - changed:
            routes[parents[0].id] = waiting - changed
    else:
        mine = source.instruction_entries(info)
        theirs = [source.instruction_entries(p) for p in parents]
        for name in waiting:
            for parent, entries in zip(parents, theirs, strict=True):
                if entries.get(name) == mine.get(name):
                    routes.setdefault(parent.id, set()).add(name)
                    break
            else:
                result[name] = info.id
    return routes


def landing_steps(
    source: InstructionSource,
    revision: CommitHash,
    names: Iterable[str],
    trust_root: CommitHash,
    known: Mapping[CommitHash, Mapping[str, CommitHash]] | None = None,
) -> dict[str, CommitHash]:
    """For each file name, the step of `revision`'s first-parent chain where its current contents landed.

    That step's signers approved it (a merge lands a branch's commits at once). Walks first parents
    from `revision` until every name is placed, taking `known` answers (from a commit rendered
    before) where the walk reaches one; what has not changed since the trust root landed there.
    """
    known = known or {}
    pending = set(names)
    result: dict[str, CommitHash] = {}
    commit = revision
    while pending:
        if commit in known:
            answers = {name: known[commit][name] for name in pending if name in known[commit]}
            result.update(answers)
            pending -= set(answers)
            if not pending:
                break
        info = source.commit(commit)
        if commit == trust_root or not info.parents:
            result.update(dict.fromkeys(pending, commit))
            break
        parent = source.commit(info.parents[0])
        changed = pending & source.changed_instructions(info, parent)
        result.update(dict.fromkeys(changed, commit))
        pending -= changed
        commit = parent.id
    return result
