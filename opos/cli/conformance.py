"""`opos conformance-client`: the client protocol of the conformance kit (docs/conformance.md), spoken by OPOS's probe.

    opos conformance-client init --state DIR (--root-key FILE… | --key FILE…) [--auditor FILE… --auditors-required K]
    opos conformance-client poll --state DIR --mirror URL… [--claims URL…] --country CC --network ASN
                                 [--platform P] [--probe-id ID] --now RFC3339

`init` keeps the trust anchors in DIR (copies of the keys and conformance.json), so that a poll
needs nothing else; `poll` is `opos probe --json` with those anchors and a fixed clock: it prints
one JSON plan (schemas/plan.schema.json) and exits 0 whenever it produced one, whatever the mirrors
did; 2 for usage errors, an uninitialised DIR among them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import tempfile
from pathlib import Path
from typing import TextIO

from opos.cli import probe
from opos.cli._common import Commands, add_group
from opos.errors import OposError, UsageError
from opos.probe import ClientConfig, Limits, poll
from opos.signing import keys

ANCHORS = "conformance.json"


def register(commands: Commands) -> None:
    kit = add_group(
        commands, "conformance",
        help="run the conformance kit against a probe client (docs/conformance.md)",
        description="Play every scenario of the conformance kit against a client that speaks its protocol: "
        "scripted mirrors and a claims service on 127.0.0.1, real signatures. Exit 0 when every scenario not "
        "declared in the xfail file passes.",
    )  # fmt: skip
    run_parser = kit.add_parser("run", help="play the scenarios")
    run_parser.set_defaults(handler=run_command)
    run_parser.add_argument("--client", required=True, help="the client's command, e.g. 'opos conformance-client'")
    run_parser.add_argument("--only", metavar="PATTERN", help="only the scenarios whose name matches (trust/*)")
    run_parser.add_argument("--xfail", type=Path, metavar="FILE", help="scenario names expected to fail, one a line")
    run_parser.add_argument("--report", type=Path, metavar="FILE", help="write the report as JSON here too")
    run_parser.add_argument("--list", action="store_true", help="list the scenarios and what each protects")
    run_parser.add_argument("--jobs", type=int, default=2, help="scenarios played at once (default: 2)")
    sub = add_group(
        commands, "conformance-client",
        help="the conformance kit's client protocol, for OPOS's own probe (docs/conformance.md)",
        description=(__doc__ or "").split("\n\n")[2],
    )  # fmt: skip
    init = sub.add_parser("init", help="pin the trust anchors in a new state directory")
    init.set_defaults(handler=init_command)
    init.add_argument("--state", type=Path, required=True)
    init.add_argument("--root-key", action="append", default=[], dest="root_keys", type=Path, metavar="FILE")
    init.add_argument("--key", action="append", default=[], dest="keys", type=Path, metavar="FILE")
    init.add_argument("--auditor", action="append", default=[], dest="auditors", type=Path, metavar="FILE")
    init.add_argument("--auditors-required", type=int, default=None, metavar="K")
    poll_parser = sub.add_parser("poll", help="poll once at a fixed moment and print the plan as JSON")
    poll_parser.set_defaults(handler=poll_command)
    poll_parser.add_argument("--state", type=Path, required=True)
    poll_parser.add_argument("--mirror", action="append", required=True, dest="mirrors", metavar="URL")
    poll_parser.add_argument("--claims", action="append", default=[], metavar="URL")
    poll_parser.add_argument("--country", required=True)
    poll_parser.add_argument("--network", required=True)
    poll_parser.add_argument("--platform")
    poll_parser.add_argument("--probe-id")
    poll_parser.add_argument("--now", required=True, metavar="RFC3339")
    poll_parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds for a whole exchange (default 5, not a probe's 30)"
    )


def init_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if bool(args.keys) == bool(args.root_keys):
        raise UsageError("give --root-key FILE… or --key FILE…, not both and not neither")
    args.state.mkdir(parents=True, exist_ok=True)
    anchors: dict[str, list[str] | int | None] = {"auditors_required": args.auditors_required}
    for name in ("root_keys", "keys", "auditors"):
        kept = []
        for number, path in enumerate(getattr(args, name)):
            try:
                keys.load_public(path)
            except OposError as error:
                raise UsageError(f"--{name.rstrip('s').replace('_', '-')}: {error}") from None
            copy = args.state / f"{name}-{number}.pub"
            shutil.copyfile(path, copy)
            kept.append(copy.name)
        anchors[name] = kept
    (args.state / ANCHORS).write_text(json.dumps(anchors, indent=2) + "\n", encoding="utf-8")
    print(f"initialised {args.state}", file=err)
    return 0


def poll_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        anchors = json.loads((args.state / ANCHORS).read_text(encoding="utf-8"))
        pinned = {name: [args.state / file for file in anchors[name]] for name in ("root_keys", "keys", "auditors")}
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(
            f"{args.state} is not initialised: run `opos conformance-client init --state DIR …` first"
        ) from None
    settings = argparse.Namespace(
        **pinned, auditors_required=anchors.get("auditors_required"), mirrors=args.mirrors, claims=args.claims,
        country=args.country, network=args.network, platform=args.platform, probe_id=args.probe_id, state=args.state,
        defaults=None, connect_timeout=min(args.timeout, Limits.connect_seconds), timeout=args.timeout,
        head_limit=Limits.head_bytes, feed_limit=Limits.feed_bytes,
        clock_skew=ClientConfig.clock_skew.total_seconds(), max_delay=ClientConfig.max_delay,
    )  # fmt: skip
    config = probe.config_from(settings, err)
    result = poll(config, now=probe.fixed_now(args.now))
    print(json.dumps(result.to_json()), file=out)
    return 0


def run_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from opos.conformance import runner
    from opos.conformance.scenarios import build

    if args.list:
        for name in runner.selected(args.only):
            print(f"{name}: {build(name).protects}", file=out)
        return 0
    client = shlex.split(args.client)
    if not client:
        raise UsageError("--client: give the client's command")
    declared: frozenset[str] = frozenset()
    if args.xfail:
        try:
            lines = args.xfail.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise UsageError(f"--xfail {args.xfail}: {error.strerror}") from None
        declared = frozenset(line.split("#")[0].strip() for line in lines if line.split("#")[0].strip())
    with tempfile.TemporaryDirectory(prefix="opos-conformance-") as work:
        results = runner.run(client, Path(work), args.only, declared, args.jobs)
    print(runner.table(results), file=out)
    if args.report:
        args.report.write_text(json.dumps(runner.report(results, client), indent=2) + "\n", encoding="utf-8")
    return 1 if any(r.outcome in ("fail", "xpass") for r in results) else 0
