"""Walks of the commit graph that the signer rules need: what a merge brings in, which of it contains its
base, and plain ancestry. Pure: commits come from a `CommitSource`."""

from __future__ import annotations

import heapq
from collections.abc import Callable

from opos.model import CommitHash
from opos.trust.verdicts import CommitInfo, CommitSource


def brought_in(
    source: CommitSource, trust_root: CommitHash, first: CommitHash, others: list[CommitHash],
    generation: Callable[[CommitHash], int],
) -> list[CommitInfo]:  # fmt: skip
    """The commits a merge brings in: reachable from its other parents, not from its first.

    Painted down in order of generation (so a commit's marks are final when it is taken) until
    only commits the first parent reaches are left: the walk covers the merged branch and the
    first parent's commits since it forked, never the whole history.
    """
    first_side, other_side = 1, 2
    marks: dict[CommitHash, int] = {}
    queue: list[tuple[int, CommitHash]] = []
    open_other: set[CommitHash] = set()  # queued commits that only the other side reaches so far

    def mark(commit: CommitHash, side: int) -> None:
        was = marks.get(commit, 0)
        if was | side == was:
            return
        marks[commit] = was | side
        if was == 0:
            heapq.heappush(queue, (-generation(commit), commit))
        if marks[commit] == other_side:
            open_other.add(commit)
        else:
            open_other.discard(commit)

    mark(first, first_side)
    for parent in others:
        mark(parent, other_side)
    found: list[CommitInfo] = []
    while open_other:
        _, commit = heapq.heappop(queue)
        side = marks[commit]
        open_other.discard(commit)
        current = source.commit(commit)
        if side == other_side:
            found.append(current)
        if commit != trust_root:
            for parent in current.parents:
                mark(parent, side)
    return found


def containing(base: CommitHash, brought: list[CommitInfo]) -> set[CommitHash]:
    """Those of the commits a merge brings in (as `_brought_in` finds them) that contain `base`.

    `brought` comes newest generation first, so reversed it has parents before children; a parent
    that is not brought in is reachable from `base`, so it contains `base` only by being it.
    """
    found: set[CommitHash] = set()
    for info in reversed(brought):
        if any(parent == base or parent in found for parent in info.parents):
            found.add(info.id)
    return found


def descends_from(source: CommitSource, revision: CommitHash, ancestor: CommitHash) -> bool:
    """Whether `ancestor` is `revision` or one of its ancestors."""
    seen: set[CommitHash] = set()
    stack = [revision]
    while stack:
        commit = stack.pop()
        if commit == ancestor:
            return True
        if commit in seen:
            continue
        seen.add(commit)
        stack.extend(source.commit(commit).parents)
    return False


def first_parent_steps(source: CommitSource, revision: CommitHash, ancestor: CommitHash, most: int = 100_000) -> int:
    """How many first-parent steps `revision` is past `ancestor` (0 when it is `ancestor` or not on its chain)."""
    steps, current = 0, revision
    while current != ancestor and steps < most:
        parents = source.commit(current).parents
        if not parents:
            return 0
        current, steps = parents[0], steps + 1
    return steps if current == ancestor else 0
