"""Verdicts on instruction files, kept beside the repository so that a new process parses only what changed.

A verdict depends on the file (its git blob id), its path, the ledger's policy and the rules
themselves; the file's name carries a fingerprint of the rules (schemas and the code that judges),
so an upgrade of OPOS starts afresh instead of trusting what an older version decided.

The file is a journal, one verdict per line: a run appends only the verdicts it reached itself
(one line after a typical change, not the whole ledger again), and it is written afresh, compact,
once it holds twice what the memo keeps. It is a cache, not a record: a line that cannot be read
(a run cut short while appending) is skipped, and that file is judged again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from opos.atomic import write_atomically
from opos.errors import Problem
from opos.instructions import resources, rules
from opos.limits import CHECK_MEMO_SIZE
from opos.lru import LRU
from opos.model import Instruction, Policy
from opos.trust.statedir import StateDir

Key = tuple[Policy, str, bytes | str]


class SavedVerdicts:
    """The journal of one state directory, and which of the memo's verdicts it already holds."""

    def __init__(self, state: StateDir) -> None:
        self.path = state.checked_file(resources.rules_fingerprint())
        self._saved: set[Key] = set()
        self._lines = 0

    def load(self, memo: rules.CheckMemo) -> None:
        """Add the saved verdicts to `memo` (none when the file is missing or unreadable)."""
        try:
            data = self.path.read_bytes()
        except OSError:
            return
        lines = data.splitlines()
        try:  # one parse for the whole journal; line by line only when a line is damaged
            records = json.loads(b"[" + b",".join(lines) + b"]")
        except ValueError:
            records = [_record(line) for line in lines]
        self._lines = len(lines)
        policies: dict[str, Policy] = {}
        for record in records:
            try:
                policy_json, path, blob_id, instruction, problems = record
                policy = policies.get(json.dumps(policy_json))
                if policy is None:
                    policy = policies[json.dumps(policy_json)] = _policy(policy_json)
                verdict = (
                    Instruction.from_json(instruction) if instruction is not None else None,
                    [Problem(*problem) for problem in problems],
                )
                key: Key = (policy, str(path), str(blob_id))
            except (ValueError, KeyError, TypeError, IndexError):
                continue
            memo.put(key, verdict)
            self._saved.add(key)

    def save(self, memo: rules.CheckMemo) -> None:
        """Append the verdicts of `memo` known by blob id that the journal does not hold yet."""
        if isinstance(memo, SavedMemo) and memo.unread:
            return  # nothing was judged: nothing to add
        new = [(key, verdict) for key, verdict in memo.items() if isinstance(key[2], str) and key not in self._saved]
        if not new:
            return
        for old in self.path.parent.glob("checked-*"):
            if old != self.path:
                old.unlink(missing_ok=True)  # made by other versions of the rules: never read again
        if self._lines + len(new) > 2 * memo.size:
            everything = [(key, verdict) for key, verdict in memo.items() if isinstance(key[2], str)]
            write_atomically(self.path, b"".join(_line(key, verdict) for key, verdict in everything))
            self._saved, self._lines = {key for key, _ in everything}, len(everything)
            return
        with self.path.open("a+b") as journal:
            end = journal.seek(0, os.SEEK_END)
            if end and (journal.seek(end - 1), journal.read(1))[1] != b"\n":
                journal.write(b"\n")  # a run cut short mid-line: that line is lost, not the next one
            journal.write(b"".join(_line(key, verdict) for key, verdict in new))
            journal.flush()
            os.fsync(journal.fileno())
        self._saved.update(key for key, _ in new)
        self._lines += len(new)


class SavedMemo(LRU[Key, rules.Verdict]):
    """A memo that reads its journal when first used: a run that judges no file (a head renewed) reads none."""

    def __init__(self, saved: SavedVerdicts) -> None:
        super().__init__(CHECK_MEMO_SIZE)
        self._saved: SavedVerdicts | None = saved

    @property
    def unread(self) -> bool:
        return self._saved is not None

    def _load(self) -> None:
        saved, self._saved = self._saved, None
        if saved is not None:
            saved.load(self)

    def get(self, key: Key) -> rules.Verdict | None:
        self._load()
        return super().get(key)

    def put(self, key: Key, value: rules.Verdict) -> None:
        self._load()
        super().put(key, value)

    def items(self) -> Iterator[tuple[Key, rules.Verdict]]:
        self._load()
        return super().items()

    def __contains__(self, key: object) -> bool:
        self._load()
        return super().__contains__(key)

    def __len__(self) -> int:
        self._load()
        return super().__len__()


def _record(line: bytes) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return None  # skipped by load


def _line(key: Key, verdict: rules.Verdict) -> bytes:
    policy, path, blob = key
    instruction, problems = verdict
    listed = [[p.path, p.line, p.field, p.message] for p in problems]
    record = [_policy_json(policy), path, blob, instruction.to_json() if instruction else None, listed]
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _policy_json(policy: Policy) -> list[Any]:
    return [policy.min_every, policy.max_window, policy.max_inputs, sorted(policy.tests) if policy.tests else None]


def _policy(value: list[Any]) -> Policy:
    min_every, max_window, max_inputs, tests = value
    return Policy(min_every, max_window, max_inputs, frozenset(tests) if tests is not None else None)
