"""What a change does to the ledger's governance: who may sign, the policy (its review rules among them), and the
key documents (feed keys, auditors, root keys). Pure.

The same comparison serves the event log (each first-parent step against its parent: signer-added,
signer-removed, policy-changed, keys-rotated) and the impact preview of a change (`opos diff`,
`opos approve`: the head against the base), so that what a reviewer approves is what the log will say.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from opos.errors import UntrustedDataError
from opos.instructions import review, rules
from opos.model import format_time
from opos.signing import keydoc, sshsig
from opos.trust.verdicts import CommitInfo

GovernanceAction = Literal["signer-added", "signer-removed", "policy-changed", "keys-rotated"]
SIGNERS, POLICY, KEYS = "allowed_signers", "policy", "keys"  # the `instruction` of the events about those files


class GovernanceFiles(Protocol):
    def policy_file(self, commit: CommitInfo) -> bytes | None: ...

    def allowed_signers(self, commit: CommitInfo) -> bytes | None: ...

    def keys_tree(self, commit: CommitInfo) -> str | None: ...

    def key_files(self, commit: CommitInfo) -> Mapping[str, bytes | None]: ...


@dataclass(frozen=True)
class GovernanceChange:
    action: GovernanceAction
    about: str  # SIGNERS, POLICY or KEYS
    after: dict[str, Any] | None
    before: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "after": self.after, "before": self.before}


def field_changes(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> list[tuple[str, Any, Any]]:
    """(field, old, new) for every field that differs, target.* and window.* spelled out."""

    def flat(instruction: Mapping[str, Any] | None) -> dict[str, Any]:
        if instruction is None:
            return {}
        result: dict[str, Any] = {}
        for name, value in instruction.items():
            if isinstance(value, dict):
                result.update({f"{name}.{key}": inner for key, inner in value.items()})
            else:
                result[name] = value
        return result

    old, new = flat(before), flat(after)
    return [
        (name, old.get(name), new.get(name)) for name in sorted(set(old) | set(new)) if old.get(name) != new.get(name)
    ]


def signer_lines(data: bytes | None) -> dict[tuple[str, str], dict[str, Any]]:
    signers, _ = sshsig.parse_allowed_signers(data or b"")
    lines: dict[tuple[str, str], dict[str, Any]] = {}
    for line in signers:
        key = sshsig.fingerprint(line.key_blob)
        lines[(line.principals, key)] = {
            "principal": line.principals,
            "key": key,
            "namespaces": line.namespaces,
            "valid_after": format_time(line.valid_after) if line.valid_after else None,
            "valid_before": format_time(line.valid_before) if line.valid_before else None,
        }
    return lines


def key_versions(files: Mapping[str, bytes | None]) -> dict[int, dict[str, Any]]:
    """version → what the key document says, for people: its keys by id (the chain is checked elsewhere)."""
    versions: dict[int, dict[str, Any]] = {}
    for name, data in files.items():
        if not name.removesuffix(".json").isdigit() or data is None:
            continue
        try:
            document = keydoc.read(data)[1]
        except UntrustedDataError:
            continue  # not a key document: opos check and publishing say so
        versions[document.version] = {
            "version": document.version, "expires": format_time(document.expires),
            "root_keys": sorted(k.keyid for k in document.root_keys), "root_threshold": document.root_threshold,
            "feed_keys": sorted(k.keyid for k in document.feed_keys),
            "auditors": sorted(k.keyid for k in document.auditors), "auditors_required": document.auditors_required,
        }  # fmt: skip
    return versions


def policy_fields(data: bytes | None) -> dict[str, Any]:
    policy, _ = rules.load_policy(data, "policy.yaml")
    return {
        "min_every": policy.min_every,
        "max_window": policy.max_window,
        "max_inputs": policy.max_inputs,
        "tests": sorted(policy.tests) if policy.tests is not None else None,
        "review": review.review_of(data).to_json(),
    }


def ledger_changes(source: GovernanceFiles, info: CommitInfo, parent: CommitInfo | None) -> list[GovernanceChange]:
    """Who may sign, the policy and the key documents at `info`, compared with `parent` (None: a trust root)."""
    changes: list[GovernanceChange] = []
    now_signers = source.allowed_signers(info)
    was_signers = source.allowed_signers(parent) if parent else None
    if now_signers != was_signers:
        now, was = signer_lines(now_signers), signer_lines(was_signers)
        changes.extend(GovernanceChange("signer-added", SIGNERS, now[k], None) for k in sorted(set(now) - set(was)))
        changes.extend(GovernanceChange("signer-removed", SIGNERS, None, was[k]) for k in sorted(set(was) - set(now)))
    if parent is None or source.keys_tree(info) != source.keys_tree(parent):
        now_keys = key_versions(source.key_files(info))
        was_keys = key_versions(source.key_files(parent) if parent else {})
        for version in sorted(set(now_keys) - set(was_keys)):
            before = now_keys.get(version - 1) or was_keys.get(version - 1)
            changes.append(GovernanceChange("keys-rotated", KEYS, now_keys[version], before))
    now_policy = source.policy_file(info)
    was_policy = source.policy_file(parent) if parent else None
    if parent is not None and now_policy != was_policy:
        after, before = policy_fields(now_policy), policy_fields(was_policy)
        if after != before:
            changes.append(GovernanceChange("policy-changed", POLICY, after, before))
    return changes


def review_in_words(rules_json: Mapping[str, Any]) -> str:
    """`{"signers": 2, "rules": [{"countries": ["IR"], "signers": 3}]}` → "2 signers everywhere, 3 for IR"."""
    count = int(rules_json.get("signers", 1))
    words = [f"{count} signer{'s' if count != 1 else ''} everywhere"]
    for rule in rules_json.get("rules", []):
        words.append(f"{rule['signers']} for {', '.join(rule['countries'])}")
    return ", ".join(words)


def lowers_review(before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    """Whether any country needs fewer signers after than before (or the count everywhere is lower)."""

    def needed(rules_json: Mapping[str, Any], country: str | None) -> int:
        counts = [int(rules_json.get("signers", 1))]
        counts += [int(r["signers"]) for r in rules_json.get("rules", []) if country in r["countries"]]
        return max(counts)

    countries = {c for side in (before, after) for r in side.get("rules", []) for c in r["countries"]}
    return any(needed(after, country) < needed(before, country) for country in [None, *sorted(countries)])


def warnings(changes: Sequence[GovernanceChange]) -> list[str]:
    """The lines that head a preview: what a reviewer must not miss (the review rule first, then signers, keys)."""
    said = []
    order = {"policy-changed": 0, "signer-added": 1, "keys-rotated": 2, "signer-removed": 3}
    for change in sorted(changes, key=lambda c: order[c.action]):
        if change.action == "policy-changed" and change.before and change.after:
            old, new = change.before["review"], change.after["review"]
            if lowers_review(old, new):
                said.append(f"WARNING: this change LOWERS THE REVIEW: {review_in_words(old)} → {review_in_words(new)}")
        elif change.action == "signer-added" and change.after:
            said.append(f"WARNING: this change ADDS A SIGNER: {change.after['principal']} ({change.after['key']})")
        elif change.action == "keys-rotated" and change.after:
            said.append(f"WARNING: this change CHANGES THE KEYS: key document version {change.after['version']}")
    return said


def _shown(value: Any) -> str:
    """A key document's field: a list of key ids, or a number."""
    if isinstance(value, list):
        return ", ".join(str(keyid) for keyid in value) if value else "none"
    return str(value)


def _signer(line: Mapping[str, Any]) -> str:
    options = [f"{name.replace('_', '-')}={line[name]}" for name in ("namespaces", "valid_after", "valid_before")
               if line.get(name)]  # fmt: skip
    return f"{line['principal']} {line['key']}" + (f" ({', '.join(options)})" if options else "")


def _policy_value(name: str, value: Any) -> str:
    if name == "review" and isinstance(value, dict):
        return review_in_words(value)
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "none"
    return "unset" if value is None else str(value)


def describe(change: GovernanceChange) -> list[str]:
    """The change for people: a line, then a line for each field before → after."""
    if change.action == "signer-added" and change.after:
        return [f"+ may sign: {_signer(change.after)}"]
    if change.action == "signer-removed" and change.before:
        return [f"- may no longer sign: {_signer(change.before)}"]
    before, after = change.before or {}, change.after or {}
    if change.action == "policy-changed":
        fields = [(name, before.get(name), after.get(name)) for name in after if before.get(name) != after.get(name)]
        return ["policy.yaml:"] + [
            f"    {name}: {_policy_value(name, old)} → {_policy_value(name, new)}" for name, old, new in fields
        ]
    lines = [f"key document version {after.get('version')} (expires {after.get('expires')}):"]
    for name in ("feed_keys", "auditors", "auditors_required", "root_keys", "root_threshold"):
        new, old = after.get(name), before.get(name)
        if before and old == new:
            continue
        lines.append(f"    {name}: {_shown(old) if before else '(first version)'} → {_shown(new)}")
    return lines


def as_text(changes: Sequence[GovernanceChange]) -> str:
    """Warnings first, then every change; empty when nothing of the governance changes."""
    if not changes:
        return ""
    lines = [*warnings(changes), "", "Governance changes (who may sign, policy.yaml, key documents):"]
    for change in changes:
        lines.extend(f"  {line}" for line in describe(change))
    return "\n".join(lines).lstrip("\n")


def as_markdown(changes: Sequence[GovernanceChange]) -> str:
    if not changes:
        return ""
    lines = [f"> **{line}**" for line in warnings(changes)]
    lines += ["", "**Governance changes** (who may sign, `policy.yaml`, key documents):", ""]
    for change in changes:
        described = describe(change)
        lines.append(f"- {described[0]}")
        lines.extend(f"  - {line.strip()}" for line in described[1:])
    return "\n".join(lines).lstrip("\n")


def to_json(changes: Sequence[GovernanceChange]) -> dict[str, Any]:
    """The `signers`, `policy` and `keys` sections of `opos diff --format json`."""
    return {
        "signers": {
            "added": [c.after for c in changes if c.action == "signer-added"],
            "removed": [c.before for c in changes if c.action == "signer-removed"],
        },
        "policy": next(({"before": c.before, "after": c.after} for c in changes if c.action == "policy-changed"), None),
        "keys": [{"before": c.before, "after": c.after} for c in changes if c.action == "keys-rotated"],
        "warnings": warnings(changes),
    }
