"""`opos probe`: the client as a command, and the reference output for other implementations."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from opos.cli._common import Commands, add_command, auditors_required
from opos.errors import UsageError, YamlProblem
from opos.instructions import resources
from opos.instructions.yamlfile import load
from opos.model import format_duration, format_time, parse_duration, parse_network, parse_platform, parse_timestamp
from opos.probe import ClientConfig, Limits, Mirror, TrustAnchors, plan, poll
from opos.probe.state import ProbeState
from opos.signing import keydoc, keys
from opos.text import for_terminal


def _default_state() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "opos-probe"


def register(commands: Commands) -> None:
    probe = add_command(
        commands, "probe", run,
        help="poll the feed as a probe would and print its plan",
        description="Ask the mirrors (in a random order) for the signed head and feed, verify them with the pinned "
        "key(s), keep the state in --state, and print the plan for this probe: the runs to make and the schedule to "
        "keep. Without a usable mirror it plans from the cached feed; without a cache, from the default schedule. "
        "Exit 0 whenever it produced a plan.",
    )  # fmt: skip
    probe.add_argument(
        "--mirror", action="append", required=True, dest="mirrors", metavar="URL",
        help="a mirror's base URL (repeat); URL#host=NAME sends Host: NAME (a fronted domain)",
    )  # fmt: skip
    _trust_flags(probe)
    probe.add_argument("--country", required=True, help="this probe's country code, like IR")
    probe.add_argument("--network", required=True, help="this probe's network, like AS197207")
    probe.add_argument("--platform", help="android, ios, linux, macos or windows")
    probe.add_argument(
        "--claims", action="append", default=[], metavar="URL",
        help="a claims service's base URL, for capped instructions (repeat; tried in a random order); "
        "URL#host=NAME sends Host: NAME as for mirrors",
    )  # fmt: skip
    probe.add_argument("--probe-id", help="the probe's id (default: generated once, kept in --state)")
    probe.add_argument(
        "--state", type=Path, default=_default_state(), help="the state directory (default: %(default)s)"
    )
    probe.add_argument("--defaults", type=Path, metavar="FILE", help="YAML: test -> interval, the default schedule")
    probe.add_argument("--json", action="store_true", help="print the plan as JSON (schemas/plan.schema.json)")
    probe.add_argument("--watch", type=float, metavar="SECONDS", help="keep polling; print each change when noticed")
    probe.add_argument("--head-limit", type=int, default=64 * 1024, help="largest head in bytes (default: 65536)")
    probe.add_argument("--feed-limit", type=int, default=16 * 1024 * 1024, help="largest feed in bytes (16 MiB)")
    probe.add_argument("--connect-timeout", type=float, default=10.0, help="seconds to connect (default: 10)")
    probe.add_argument("--timeout", type=float, default=30.0, help="seconds for a whole answer (default: 30)")
    probe.add_argument("--clock-skew", type=float, default=300.0, help="seconds of clock error allowed (default: 300)")
    probe.add_argument(
        "--max-delay", type=int, default=900, help="largest start delay of a run, seconds (default: 900)"
    )
    probe.add_argument(
        "--now", metavar="RFC3339",
        help="poll as if it were this moment (expiry, windows, key documents): reproducible runs, as the "
        "conformance kit makes them; not with --watch",
    )  # fmt: skip


def _urls(flag: str, texts: list[str], err: TextIO) -> list[Mirror]:
    """Parsed --mirror or --claims URLs; a warning for plain http to anything but this machine."""
    try:
        parsed = [Mirror.parse(text) for text in texts]
    except ValueError as error:
        raise UsageError(f"{flag}: {error}") from None
    for mirror in parsed:
        parts = urlsplit(mirror.url)
        if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            print(f"opos probe: warning: {flag} {mirror.url} is plain http: anyone on the path sees what this "
                  "probe asks (signatures still protect what it accepts); use https", file=err)  # fmt: skip
    return parsed


def _trust_flags(probe: argparse.ArgumentParser) -> None:
    """What the probe pins: feed keys, or root keys; auditors and how many must cosign."""
    probe.add_argument(
        "--key", action="append", default=[], dest="keys", type=Path, metavar="PUBFILE",
        help="a pinned feed public key (repeat, for rotation); or, better, --root-key",
    )  # fmt: skip
    probe.add_argument(
        "--root-key", action="append", default=[], dest="root_keys", type=Path, metavar="PUBFILE",
        help="a pinned root public key (repeat): the feed keys and auditors then come from the ledger's key "
        "documents (v1/keys.json), whose first version's root keys must be exactly these",
    )  # fmt: skip
    probe.add_argument(
        "--auditor", action="append", default=[], dest="auditors", type=Path, metavar="PUBFILE",
        help="an auditor's public key (repeat): with --auditors-required, a head counts only when that many of them "
        "cosigned its commit (v1/cosignatures/<commit>.json)",
    )  # fmt: skip
    probe.add_argument(
        "--auditors-required", type=int, default=None, metavar="K",
        help="how many distinct --auditor keys must cosign (default: all of them when any is given)",
    )  # fmt: skip


def config_from(args: argparse.Namespace, err: TextIO) -> ClientConfig:
    mirrors = _urls("--mirror", args.mirrors, err)
    try:
        country = resources.parse_known_country(args.country)
        network = parse_network(args.network)
        platform = parse_platform(args.platform) if args.platform else None
    except ValueError as error:
        raise UsageError(f"--country/--network/--platform: {error}") from None
    if args.probe_id and not re.fullmatch(r"[A-Za-z0-9_-]{16,64}", args.probe_id):
        raise UsageError("--probe-id: 16 to 64 characters of A-Z a-z 0-9 _ -")
    if bool(args.keys) == bool(args.root_keys):
        raise UsageError("give --root-key (the feed keys then come from the key documents) or --key, not both and "
                         "not neither")  # fmt: skip
    required = auditors_required(args)
    return ClientConfig(
        mirrors=mirrors,
        trust=TrustAnchors(
            keys=tuple(keys.load_public(path) for path in args.keys),
            root_keys=tuple(keydoc.Key.of(keys.load_public(path)) for path in args.root_keys),
            auditors=tuple(keys.load_public(path) for path in args.auditors),
            auditors_required=required,
        ),
        country=country,
        network=network,
        platform=platform,
        claims=tuple(_urls("--claims", args.claims, err)),
        probe_id=args.probe_id,
        state_dir=args.state,
        defaults=_defaults(args.defaults) if args.defaults else dict(plan.DEFAULT_SCHEDULE),
        limits=Limits(
            args.connect_timeout,
            args.timeout,
            min(args.timeout, args.connect_timeout),
            args.head_limit,
            args.feed_limit,
        ),
        clock_skew=dt.timedelta(seconds=args.clock_skew),
        max_delay=args.max_delay,
    )


def _defaults(path: Any) -> dict[str, int]:
    try:
        loaded = load(path.read_bytes(), str(path), 64 * 1024).value
    except OSError as err:
        raise UsageError(f"--defaults: cannot read {path}: {err.strerror}") from None
    except YamlProblem as err:
        raise UsageError(f"--defaults: {err.problem}") from None
    if not isinstance(loaded, dict):
        raise UsageError(f"--defaults: {path} should map tests to intervals (web_connectivity: 1h)")
    try:
        return {str(test): parse_duration(str(every)) for test, every in loaded.items()}
    except ValueError as err:
        raise UsageError(f"--defaults: {err}") from None


def claim_reasons(config: ClientConfig) -> dict[str, str]:
    """Why each refused claim was refused, as the claims service said it (kept in the probe's state)."""
    return {ident: str(c["reason"]) for ident, c in ProbeState(config.state_dir).claims().items()
            if not c.get("granted") and c.get("reason")}  # fmt: skip


def describe(result: plan.Plan, reasons: Mapping[str, str] | None = None) -> str:
    """The plan for people."""
    document = result.to_json()
    lines = [f"Plan for probe {result.probe_id} at {document['time']}"]
    if result.source == "none":
        why = "no mirror answered" if not result.rejected else "no mirror gave an acceptable answer (see rejected)"
        lines.append(f"feed: none ({why}, and nothing is cached): the default schedule only")
    else:
        where = "the cache (no mirror gave an acceptable answer)" if result.source == "cache" else result.source
        lines.append(f"feed: commit {result.commit}, sequence {result.sequence}, from {where}")
    if result.runs:
        lines.append("runs:")
    elif result.reported:
        lines.append(f"runs: none new (already run at their current revision: {', '.join(result.reported)})")
    else:
        lines.append("runs: none")
    for run in result.runs:
        said = f" ({(reasons or {})[run.instruction]})" if run.claim == "refused" and run.instruction in (
            reasons or {}) else ""  # fmt: skip
        claim = {None: "uncapped", "granted": "claim granted"}.get(run.claim, f"claim {run.claim}{said}: do not run")
        lines.append(f"  {run.instruction} ({run.revision[:12]}): {run.test} in {run.delay} s, {claim}")
        lines.extend(f"      {item}" for item in run.inputs)
    lines.append("schedule:")
    for entry in result.schedule:
        why = entry.instruction or "default"
        lines.append(f"  {entry.test:32} every {format_duration(entry.every):>5}  ({why})")
    if result.upcoming:
        lines.append("upcoming:")
        lines.extend(f"  {u.instruction}: {u.kind} {u.test} from {format_time(u.starts)}" for u in result.upcoming)
    if result.skipped:
        lines.append("skipped (this probe cannot follow them):")
        lines.extend(f"  {item.instruction}: {item.reason}" for item in result.skipped)
    if result.rejected:
        lines.append("rejected:")
        lines.extend(f"  {item.mirror}: {item.reason}" for item in result.rejected)
    return "\n".join(for_terminal(line) for line in lines)  # reasons quote what mirrors sent


def changes(before: plan.Plan, after: plan.Plan) -> list[str]:
    """What a new plan changes, for people watching."""
    said = []
    if after.commit != before.commit:
        said.append(f"new feed: commit {after.commit}, sequence {after.sequence}")
    new_runs = [r.instruction for r in after.runs if r.instruction not in {b.instruction for b in before.runs}]
    if new_runs:
        said.append(f"new runs: {', '.join(new_runs)}")
    was = {e.test: e for e in before.schedule}
    for entry in after.schedule:
        old = was.get(entry.test)
        if old is None or (old.every, old.instruction) != (entry.every, entry.instruction):
            since = f"{format_duration(old.every)} → " if old else ""
            said.append(f"schedule: {entry.test} every {since}{format_duration(entry.every)} "
                        f"({entry.instruction or 'default'})")  # fmt: skip
    if after.source != before.source:
        said.append(f"source: {after.source}")
    return said or ["the plan changed"]


def fixed_now(text: str | None) -> dt.datetime | None:
    """--now as a time with a zone (2026-12-03T12:00:00Z); None without one. Raises UsageError."""
    if text is None:
        return None
    try:
        return parse_timestamp(text)
    except ValueError as error:
        raise UsageError(f"--now: {error} (a time with its zone, like 2026-12-03T12:00:00Z)") from None


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    config = config_from(args, err)
    now = fixed_now(args.now)
    if now is not None and args.watch:
        raise UsageError("--now fixes the clock for one poll: it cannot be used with --watch")
    result = poll(config, now=now)
    if not args.watch:
        print(json.dumps(result.to_json(), indent=2) if args.json else describe(result, claim_reasons(config)),
              file=out, flush=True)  # fmt: skip
        return 0
    # watching: JSON Lines (one plan a line) for programs, or the plan for people, then each change
    print(json.dumps(result.to_json()) if args.json else describe(result, claim_reasons(config)), file=out, flush=True)
    seen = _essence(result)
    previous = result
    try:
        while True:
            time.sleep(args.watch)
            result = poll(config)
            if _essence(result) != seen:
                seen = _essence(result)
                if args.json:
                    print(json.dumps({"noticed": result.to_json()["time"], **result.to_json()}), file=out, flush=True)
                else:
                    noticed = result.to_json()["time"]
                    what = "".join(f"\n  {line}" for line in changes(previous, result))
                    described = describe(result, claim_reasons(config))
                    print(f"\nchanged, noticed at {noticed}:{what}\n{described}", file=out, flush=True)
            previous = result
    except KeyboardInterrupt:
        return 0


def _essence(result: plan.Plan) -> tuple[Any, ...]:
    return (result.commit, [r.instruction for r in result.runs], result.schedule, result.source)
