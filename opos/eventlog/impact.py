"""The impact preview a reviewer needs: what a change to the ledger does, and what to look at twice. Pure."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opos.eventlog.governance import field_changes
from opos.instructions.oonirun import not_bridged
from opos.model import Instruction, format_duration, format_time, parse_time
from opos.text import for_markdown, for_terminal

LARGE_TARGET_COUNTRIES = 10
SHORT_INTERVAL = 3600


@dataclass
class Change:
    action: str  # added, changed, removed
    instruction: dict[str, Any]  # after the change (before it, for removed)
    before: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what is worth knowing, not a risk (the OONI Run bridge)

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "id": self.instruction["id"],
            "instruction": self.instruction,
            "before": self.before,
            "changes": [
                {"field": f, "before": b, "after": a} for f, b, a in field_changes(self.before, self.instruction)
            ]
            if self.action == "changed"
            else [],
            "warnings": self.warnings,
            "notes": self.notes,
        }


def _shared(mine: list[str], theirs: list[str], everything: str) -> list[str] | None:
    """What two lists of a target have in common: None when nothing (an empty list, or ["*"], takes everything)."""
    if not mine or mine == ["*"]:
        return theirs or [everything]
    if not theirs or theirs == ["*"]:
        return mine
    common = [item for item in mine if item in theirs]
    return common or None


def _overlap(one: Mapping[str, Any], other: Mapping[str, Any]) -> str | None:
    """How two instructions' targets and windows intersect, in words; None when they do not."""
    a, b = one["target"], other["target"]
    countries = _shared(a["countries"], b["countries"], "every country")
    networks = _shared(a["networks"], b["networks"], "every network")
    platforms = _shared(a["platforms"], b["platforms"], "every platform")
    start = max(parse_time(one["window"]["start"]), parse_time(other["window"]["start"]))
    end = min(parse_time(one["window"]["end"]), parse_time(other["window"]["end"]))
    if countries is None or networks is None or platforms is None or start >= end:
        return None
    where = ", ".join(countries) + (f" ({', '.join(networks)})" if networks != ["every network"] else "")
    return f"{where}, from {format_time(start)} to {format_time(end)}"


def warnings_for(
    instruction: Mapping[str, Any], others: Mapping[str, Mapping[str, Any]], now: dt.datetime
) -> list[str]:
    target = instruction["target"]
    found = []
    unbounded = not target["networks"] and target["max_probes"] is None and target["sample"] is None
    if unbounded and (target["countries"] == ["*"] or len(target["countries"]) > LARGE_TARGET_COUNTRIES):
        where = "every country" if target["countries"] == ["*"] else f"{len(target['countries'])} countries"
        found.append(f"a very large target: every probe in {where}, with no network, cap or sample")
    if instruction["every"] is not None and instruction["every"] < SHORT_INTERVAL:
        found.append(f"a very short interval: every {format_duration(instruction['every'])}")
    if parse_time(instruction["window"]["end"]) <= now:
        found.append(f"the window has already ended ({instruction['window']['end']}): it will never apply")
    elif parse_time(instruction["window"]["start"]) < now:
        found.append(f"the window starts in the past ({instruction['window']['start']}): it applies as soon as merged")
    for ident, other in sorted(others.items()):
        if ident == instruction["id"] or other["test"] != instruction["test"]:
            continue
        shared = _overlap(instruction, other)
        if shared:
            found.append(f"overlaps {ident}: the same test ({instruction['test']}) for {shared}")
    return found


def compare(
    base: Mapping[str, dict[str, Any]], head: Mapping[str, dict[str, Any]], now: dt.datetime, oonirun: bool = False
) -> list[Change]:
    """Instructions at the base and the head (id -> normalised instruction) → the changes, with warnings; with
    `oonirun` (policy.yaml's, the bridge is on), a note on each added or changed one that does not cross it."""
    changes = []
    for ident in sorted(set(base) | set(head)):
        old, new = base.get(ident), head.get(ident)
        if old == new:
            continue
        if new is None:
            if old is not None:
                changes.append(Change("removed", old))
            continue
        change = Change("added" if old is None else "changed", new, old)
        change.warnings = warnings_for(new, head, now)
        reason = not_bridged(Instruction.from_json(new)) if oonirun else None
        change.notes = [f"not sent to OONI Run probes ({reason})"] if reason else []
        changes.append(change)
    return changes


def _summary(instruction: Mapping[str, Any]) -> list[tuple[str, str]]:
    target = instruction["target"]
    cap = "none"
    if target["max_probes"] is not None:
        cap = f"at most {target['max_probes']} probes" + (
            f" per {target['max_probes_per']}" if target["max_probes_per"] != "target" else ""
        )
    rows = [
        (
            "test",
            instruction["test"] + (f", every {format_duration(instruction['every'])}" if instruction["every"] else ""),
        ),
        ("countries", ", ".join(target["countries"])),
        ("networks", ", ".join(target["networks"]) or "all"),
        ("platforms", ", ".join(target["platforms"]) or "all"),
        ("cap", cap),
        ("sample", str(target["sample"]) if target["sample"] is not None else "all matching probes"),
        ("window", f"{instruction['window']['start']} to {instruction['window']['end']}"),
    ]
    if instruction["inputs"]:
        shown = ", ".join(instruction["inputs"][:10]) + (" …" if len(instruction["inputs"]) > 10 else "")
        rows.append((f"inputs ({len(instruction['inputs'])})", shown))
    return rows


def as_text(changes: list[Change]) -> str:
    if not changes:
        return "No instruction changes."
    lines = []
    for change in changes:
        lines.append(for_terminal(f"{change.action.upper()} {change.instruction['id']}: {change.instruction['title']}"))
        lines.extend(for_terminal(f"  {name}: {value}") for name, value in _summary(change.instruction))
        for name, old, new in field_changes(change.before, change.instruction) if change.action == "changed" else []:
            lines.append(for_terminal(f"  changed {name}: {_show(old)} -> {_show(new)}"))
        lines.extend(f"  WARNING: {w}" for w in change.warnings)
        lines.extend(f"  NOTE: {note}" for note in change.notes)
    return "\n".join(lines)


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _cell(text: str) -> str:
    return for_markdown(text)


def as_markdown(changes: list[Change]) -> str:
    if not changes:
        return "### OPOS impact preview\n\nNo instruction changes."
    total_warnings = sum(len(c.warnings) for c in changes)
    lines = [f"### OPOS impact preview: {len(changes)} instruction(s) changed, {total_warnings} warning(s)", ""]
    for change in changes:
        lines.append(
            f"#### {change.action}: `{change.instruction['id']}` — {for_markdown(change.instruction['title'])}"
        )
        lines.append("")
        lines.append("| | |")
        lines.append("|---|---|")
        lines.extend(f"| {name} | {_cell(value)} |" for name, value in _summary(change.instruction))
        if change.action == "changed":
            for name, old, new in field_changes(change.before, change.instruction):
                lines.append(f"| changed `{name}` | {_cell(_show(old))} → {_cell(_show(new))} |")
        lines.append("")
        lines.extend(f"> **Warning:** {w}" for w in change.warnings)
        lines.extend(f"> **Note:** {note}" for note in change.notes)
        if change.warnings or change.notes:
            lines.append("")
    return "\n".join(lines)
