"""Judging many instruction files at once on every core: the first check or render of a large ledger.

Judging a file (YAML, schema, meaning) is pure and independent of every other file, so a ledger of
10,000 files is an embarrassingly parallel job. The command line turns it on (`use_cores`); the
verdicts are the same as judging one file after another, in the same order. It forks, so it is
used only from a process with a single thread (the services never turn it on, and a process that
has started threads since judges in its own thread).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from opos.errors import BlobTooLarge, Problem
from opos.model import Instruction, Policy

if TYPE_CHECKING:
    from opos.instructions.rules import CheckMemo, LedgerFiles

Verdict = tuple[Instruction | None, list[Problem]]
JudgeOne = Callable[[bytes, str, Policy], Verdict]
WORTH_IT = 1000  # fewer files are judged in this process: starting another costs more than it saves

_cores = 1
_task: tuple[list[str], LedgerFiles, Policy, JudgeOne] | None = None  # what forked processes judge a share of


def use_cores(count: int | None = None) -> None:
    """Judge large batches on `count` processes (default: every core this process may use)."""
    global _cores
    _cores = max(1, count if count is not None else len(os.sched_getaffinity(0)))


def prejudge(files: LedgerFiles, policy: Policy, memo: CheckMemo, judge: JudgeOne) -> None:
    """Put the verdict of every instruction file `memo` lacks into it, read and judged on every core (when that
    pays: a large first check)."""
    if _cores < 2 or len(files.instructions) < WORTH_IT or threading.active_count() > 1:
        return
    names = []
    for name in files.instructions:
        blob_id = files.ids.get(name)
        if name.endswith(".yaml") and not (blob_id and memo.get((policy, _path(files, name), blob_id)) is not None):
            names.append(name)
    if len(names) < WORTH_IT:
        return
    for name, verdict, data in _judge_all(names, files, policy, judge):
        memo.put((policy, _path(files, name), files.ids.get(name) or data or b""), verdict)


def _path(files: LedgerFiles, name: str) -> str:
    return f"{files.root}instructions/{name}"


@runtime_checkable
class ReadsMany(Protocol):
    """Files that are faster read together (a commit's, from git packs) than one by one."""

    def read_many(self, names: Iterable[str]) -> dict[str, bytes]: ...


# a file's name, its verdict, and its contents when it has no blob id (they are then the memo's key)
Judged = tuple[str, Verdict, bytes | None]


def _judge_all(names: list[str], files: LedgerFiles, policy: Policy, judge: JudgeOne) -> list[Judged]:
    """The verdicts of the files `names`: this process reads and judges the first share, forked ones the others."""
    global _task
    share = -(-len(names) // _cores)
    bounds = [(start, min(start + share, len(names))) for start in range(0, len(names), share)]
    _task = (names, files, policy, judge)  # set before the fork: each process finds it in its copy of memory
    try:
        context = multiprocessing.get_context("fork")
        with concurrent.futures.ProcessPoolExecutor(len(bounds) - 1, mp_context=context) as pool:
            others = [pool.submit(_judge_share, start, end) for start, end in bounds[1:]]
            judged = _judge_share(*bounds[0])
            for other in others:
                judged += other.result()
        return judged
    finally:
        _task = None


def _judge_share(start: int, end: int) -> list[Judged]:
    if _task is None:  # set by _judge_all before the fork
        raise RuntimeError("no judging task in this process")
    names, files, policy, judge = _task
    mine = names[start:end]
    read = files.instructions.read_many(mine) if isinstance(files.instructions, ReadsMany) else {}
    judged: list[Judged] = []
    for name in mine:
        try:
            data = read[name] if name in read else files.instructions[name]
        except BlobTooLarge:
            continue  # judged (refused) where it is met, from its header
        judged.append((name, judge(data, _path(files, name), policy), None if files.ids.get(name) else data))
    return judged
