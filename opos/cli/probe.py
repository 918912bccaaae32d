"""`opos probe`: the client as a command, and the reference output for other implementations."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import time
from typing import Any, TextIO

from opos.client import ClientConfig, Limits, Mirror, poll
from opos.errors import UsageError
from opos.feed import keys, plan
from opos.instructions.rules import format_duration, parse_duration
from opos.instructions.yamlfile import YamlProblem, load


def config_from(args: argparse.Namespace) -> ClientConfig:
    try:
        mirrors = [Mirror.parse(text) for text in args.mirrors]
    except ValueError as err:
        raise UsageError(f"--mirror: {err}") from None
    if not re.fullmatch(r"[A-Za-z]{2}", args.country):
        raise UsageError(f"--country {args.country!r}: a two-letter country code, like IR")
    if not re.fullmatch(r"(?i:as)?[0-9]{1,10}", args.network):
        raise UsageError(f"--network {args.network!r}: a network like AS197207")
    if args.probe_id and not re.fullmatch(r"[A-Za-z0-9_-]{16,64}", args.probe_id):
        raise UsageError("--probe-id: 16 to 64 characters of A-Z a-z 0-9 _ -")
    network = "AS" + args.network.upper().removeprefix("AS")
    return ClientConfig(
        mirrors=mirrors,
        keys=[keys.load_public(path) for path in args.keys],
        country=args.country.upper(),
        network=network,
        platform=args.platform,
        claims_url=args.claims,
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


def describe(result: dict[str, Any]) -> str:
    """The plan for people."""
    lines = [f"Plan for probe {result['probe_id']} at {result['time']}"]
    if result["source"] == "none":
        lines.append("feed: none (no mirror answered and nothing is cached): the default schedule only")
    else:
        where = "the cache (no mirror gave an acceptable answer)" if result["source"] == "cache" else result["source"]
        lines.append(f"feed: commit {result['commit']}, sequence {result['sequence']}, from {where}")
    lines.append("runs:" if result["runs"] else "runs: none")
    for run in result["runs"]:
        claim = {None: "uncapped", "granted": "claim granted"}.get(run["claim"], f"claim {run['claim']}: do not run")
        lines.append(f"  {run['instruction']} ({run['revision'][:12]}): {run['test']} in {run['delay']} s, {claim}")
        lines.extend(f"      {item}" for item in run["inputs"])
    lines.append("schedule:")
    for entry in result["schedule"]:
        why = entry["instruction"] or "default"
        lines.append(f"  {entry['test']:32} every {format_duration(entry['every']):>5}  ({why})")
    if result["rejected"]:
        lines.append("rejected:")
        lines.extend(f"  {item['mirror']}: {item['reason']}" for item in result["rejected"])
    return "\n".join(lines)


def run(args: argparse.Namespace, out: TextIO) -> int:
    config = config_from(args)
    result = poll(config)
    if not args.watch:
        print(json.dumps(result, indent=2) if args.json else describe(result), file=out, flush=True)
        return 0
    # watching: JSON Lines (one plan a line) for programs, or the plan for people, then each change
    print(json.dumps(result) if args.json else describe(result), file=out, flush=True)
    seen = _essence(result)
    try:
        while True:
            time.sleep(args.watch)
            result = poll(config)
            if _essence(result) != seen:
                seen = _essence(result)
                if args.json:
                    print(json.dumps({"noticed": result["time"], **result}), file=out, flush=True)
                else:
                    print(f"\nchanged, noticed at {result['time']}\n{describe(result)}", file=out, flush=True)
    except KeyboardInterrupt:
        return 0


def _essence(result: dict[str, Any]) -> tuple[Any, ...]:
    return (result["commit"], [r["instruction"] for r in result["runs"]], result["schedule"], result["source"])
