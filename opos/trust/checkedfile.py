"""Verdicts on instruction files, kept beside the repository so that a new process parses only what changed.

A verdict depends on the file (its git blob id), its path, the ledger's policy and the rules
themselves; the file's name carries a fingerprint of the rules (schemas and the code that judges),
so an upgrade of OPOS starts afresh instead of trusting what an older version decided. It is a
cache, not a record: anything unreadable in it is ignored and judged again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from opos.atomic import write_atomically
from opos.errors import Problem
from opos.instructions import resources, rules
from opos.model import Instruction, Policy
from opos.trust.statedir import StateDir


def _policy_json(policy: Policy) -> list[Any]:
    return [policy.min_every, policy.max_window, policy.max_inputs, sorted(policy.tests) if policy.tests else None]


def _policy(value: list[Any]) -> Policy:
    min_every, max_window, max_inputs, tests = value
    return Policy(min_every, max_window, max_inputs, frozenset(tests) if tests is not None else None)


def _path(state: StateDir) -> Path:
    return state.checked_file(resources.rules_fingerprint())


def load(state: StateDir, memo: rules.CheckMemo) -> None:
    """Add the saved verdicts to `memo` (nothing when there are none, or they cannot be read)."""
    try:
        document = json.loads(_path(state).read_bytes())
        policies = [_policy(p) for p in document["policies"]]
        verdicts = []
        for policy, path, blob_id, instruction, problems in document["verdicts"]:
            verdict = (
                Instruction.from_json(instruction) if instruction is not None else None,
                [Problem(*problem) for problem in problems],
            )
            verdicts.append(((policies[policy], str(path), str(blob_id)), verdict))
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return
    for key, verdict in verdicts:
        memo.put(key, verdict)


def save(state: StateDir, memo: rules.CheckMemo) -> None:
    """Keep the verdicts of `memo` that are known by blob id, for the next process."""
    policies: dict[Policy, int] = {}
    verdicts = []
    for (policy, file_path, blob), (instruction, problems) in memo.items():
        if not isinstance(blob, str):
            continue  # judged by contents (a working tree without git): nothing stable to name it by
        number = policies.setdefault(policy, len(policies))
        listed = [[p.path, p.line, p.field, p.message] for p in problems]
        verdicts.append([number, file_path, blob, instruction.to_json() if instruction else None, listed])
    document = {"policies": [_policy_json(p) for p in policies], "verdicts": verdicts}
    target = _path(state)
    for old in target.parent.glob("checked-*.json"):
        if old != target:
            old.unlink(missing_ok=True)  # made by other versions of the rules: never read again
    write_atomically(target, json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode())
