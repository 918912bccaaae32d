"""Playing the scenarios against a client command, and the report.

The client is any command that speaks the protocol of docs/conformance.md (`init`, then `poll` with a
fixed `--now`); it runs as a subprocess, so a port in any language is tested the same way. A
scenario passes when every poll's plan says what the scenario expects.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import fnmatch
import json
import subprocess  # nosec B404: the client command is the operator's own, run without a shell
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opos.conformance.mirror import ScriptedMirror
from opos.conformance.scenarios import NOW, Scenario, Step, all_scenarios, build
from opos.conformance.world import World
from opos.model import format_time

POLL_SECONDS = 120.0  # a client that takes longer than this for one poll fails the scenario


@dataclass(frozen=True)
class Result:
    name: str
    protects: str
    outcome: str  # pass, fail, xfail (failed as declared), xpass (declared, but passed)
    detail: str
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"scenario": self.name, "protects": self.protects, "result": self.outcome, "detail": self.detail,
                "seconds": round(self.seconds, 2)}  # fmt: skip


def selected(only: str | None) -> list[str]:
    """The scenarios whose name matches one of `only`'s comma-separated patterns (trust/*,keys/fork); all without."""
    names = sorted(all_scenarios())
    if only is None:
        return names
    patterns = [p.strip() for p in only.split(",") if p.strip()]
    return [n for n in names if any(fnmatch.fnmatch(n, p) or p == n for p in patterns)]


def run(
    client: Sequence[str], work: Path, only: str | None = None, xfail: frozenset[str] = frozenset(), jobs: int = 2
) -> list[Result]:
    """Every selected scenario, `jobs` at a time (each has its own state, mirrors and ports), in name order."""

    def one(name: str) -> Result:
        began = time.monotonic()
        scenario = build(name)
        problem = play(scenario, client, work / name.replace("/", "-"))
        declared = name in xfail
        outcome = ("xfail" if declared else "fail") if problem else ("xpass" if declared else "pass")
        return Result(name, scenario.protects, outcome, problem or "", time.monotonic() - began)

    with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
        return list(pool.map(one, selected(only)))


def play(scenario: Scenario, client: Sequence[str], state: Path) -> str | None:
    """None when every poll said what was expected; else what went wrong, for the report."""
    world = World(scenario.name, NOW)
    keys = state.parent / f"{state.name}-keys"
    keys.mkdir(parents=True, exist_ok=True)
    done = _client([*client, "init", "--state", str(state), *_anchors(scenario.anchors, world, keys)])
    if isinstance(done, str):
        return f"init: {done}"
    mirrors = [ScriptedMirror() for _ in range(max(len(step.mirrors) for step in scenario.steps))]
    claims = ScriptedMirror()
    try:
        for number, step in enumerate(scenario.steps, start=1):
            began = time.monotonic()
            plan_or_problem = _poll(client, state, step, mirrors, claims)
            if isinstance(plan_or_problem, str):
                return f"poll {number}: {plan_or_problem}"
            took = time.monotonic() - began
            if step.within is not None and took > step.within:
                return (
                    f"poll {number}: took {took:.0f} s; a client's deadline per exchange ends it within {step.within:g}"
                )
            differences = compare(step.expect, plan_or_problem)
            if differences:
                return f"poll {number}: " + "; ".join(differences)
    finally:
        for mirror in [*mirrors, claims]:
            mirror.stop()
    return None


def _anchors(anchors: dict[str, Any], world: World, folder: Path) -> list[str]:
    flags = []
    for setting, flag in (("root_keys", "--root-key"), ("keys", "--key"), ("auditors", "--auditor")):
        for name in anchors.get(setting, []):
            path = folder / f"{name}.pub"
            path.write_text(world.public_line(name) + "\n", encoding="utf-8")
            flags += [flag, str(path)]
    if anchors.get("auditors_required") is not None:
        flags += ["--auditors-required", str(anchors["auditors_required"])]
    return flags


def _poll(
    client: Sequence[str], state: Path, step: Step, mirrors: list[ScriptedMirror], claims: ScriptedMirror
) -> dict[str, Any] | str:
    for mirror, script in zip(mirrors, step.mirrors, strict=False):
        mirror.script.files, mirror.script.behaviour = dict(script.files), dict(script.behaviour)
        mirror.script.host = script.host
    _harm_state(state, step)
    if step.claims is not None:
        claims.script.answers = {"/v1/claims": step.claims}
    probe = {"--country": "IR", "--network": "AS197207", **step.probe}
    arguments = ["poll", "--state", str(state), "--now", format_time(NOW + step.later)]
    arguments += [flag for mirror, script in zip(mirrors, step.mirrors, strict=False)
                  for flag in ("--mirror", mirror.url + (f"#host={script.host}" if script.host else ""))]  # fmt: skip
    arguments += ["--claims", claims.url] if step.claims is not None else []
    arguments += [item for pair in probe.items() for item in pair]
    if step.killed_after is not None:
        return _crash([*client, *arguments], step.killed_after)
    # a poll that must end within a deadline is given no longer: a client without the deadline fails at once
    done = _client([*client, *arguments], step.within or POLL_SECONDS)
    if isinstance(done, str):
        return done
    try:
        plan: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return f"not one JSON plan on standard output: {done.stdout[-300:]!r}"
    return plan


def _crash(command: list[str], seconds: float) -> dict[str, Any]:
    """Run the poll and kill it mid-way, as a power cut would: nothing is expected of it (an empty plan)."""
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as process:  # nosec B603
        time.sleep(seconds)
        process.kill()
    return {}


def _harm_state(state: Path, step: Step) -> None:
    """What a step does to the state directory before its poll (every file but the pinned anchors, which a port
    may keep elsewhere): garbage in each, or a directory where each was (a write fails, even as root)."""
    if not (step.damage or step.unwritable):
        return
    for path in [p for p in state.rglob("*") if p.is_file() and not p.name.endswith(".pub")]:
        if path.name == "conformance.json":
            continue
        if step.damage:
            path.write_bytes(b"\x00garbage{[" * 7)
        else:
            path.unlink()
            path.mkdir()


def _client(command: list[str], seconds: float = POLL_SECONDS) -> subprocess.CompletedProcess[str] | str:
    """The client's run, when it exited 0 within `seconds`; else what went wrong."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds)  # nosec B603
    except subprocess.TimeoutExpired:
        return f"the client did not answer within {seconds:g} s"
    except OSError as error:
        return f"the client could not be run: {error}"
    return done if done.returncode == 0 else f"exit {done.returncode}: {done.stderr.strip()[-300:]}"


def _source(value: Any) -> str:
    return "default" if value == "none" else "cache" if value == "cache" else "feed"


def compare(expect: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    """What the plan says otherwise than expected, one phrase each."""
    said = []
    runs = plan.get("runs") or []
    checks = {
        "commit": plan.get("commit"),
        "sequence": plan.get("sequence"),
        "source": _source(plan.get("source")),
        "runs": sorted(r["instruction"] for r in runs if r.get("claim") in (None, "granted")),
        "claims": {r["instruction"]: r.get("claim") for r in runs if r.get("claim") is not None},
        "skipped": sorted(s["instruction"] for s in plan.get("skipped") or []),
    }
    for name, seen in checks.items():
        if name in expect:
            wanted = sorted(expect[name]) if isinstance(expect[name], list) else expect[name]
            if seen != wanted:
                said.append(f"{name}: expected {wanted!r}, saw {seen!r}")
    if "rejected" in expect:
        reasons = " | ".join(r.get("reason", "") for r in plan.get("rejected") or [])
        if not any(word.lower() in reasons.lower() for word in expect["rejected"]):
            said.append(f"rejected: expected a reason with one of {expect['rejected']}, saw {reasons or 'none'!r}")
    return said


def table(results: Sequence[Result]) -> str:
    width = max((len(r.name) for r in results), default=10)
    lines = [f"{'scenario':{width}}  result  seconds  detail"]
    for r in results:
        lines.append(f"{r.name:{width}}  {r.outcome:6}  {r.seconds:7.1f}  {r.detail[:160]}")
    counts = {o: sum(r.outcome == o for r in results) for o in ("pass", "fail", "xfail", "xpass")}
    lines.append(", ".join(f"{n} {o}" for o, n in counts.items()) + f" of {len(results)} scenarios")
    return "\n".join(lines)


def report(results: Sequence[Result], client: Sequence[str]) -> dict[str, Any]:
    return {"client": list(client), "time": format_time(dt.datetime.now(dt.UTC)),
            "scenarios": [r.to_json() for r in results]}  # fmt: skip
