"""Staff's commands: start a ledger (init), write an instruction (new), check it (check), preview a change (diff)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import TextIO

from opos.atomic import write_atomically
from opos.cli._common import (
    Commands,
    add_command,
    add_repo,
    add_trust,
    ledger_path,
    moment,
    open_ledger,
)
from opos.errors import OposError, UsageError
from opos.eventlog import governance, impact
from opos.eventlog.preview import approvals_of, changes_between, governance_between
from opos.instructions import resources, rules
from opos.model import format_time
from opos.trust.tree_check import collect_problems, ended_windows, shared_keys


def register(commands: Commands) -> None:
    _register_new(commands)
    _register_check(commands)
    _register_diff(commands)


def _register_new(commands: Commands) -> None:
    new_parser = add_command(
        commands, "new", new,
        help="scaffold an instruction file",
        description="Write <ledger>/instructions/<id>.yaml from the flags, checked before it is written. "
        "Then commit it with `git commit -S` and open a pull request.",
    )  # fmt: skip
    add_repo(new_parser)
    new_parser.add_argument("--id", required=True, help="lowercase letters, digits and -, 3 to 80 characters")
    new_parser.add_argument("--kind", choices=("run", "schedule"), required=True)
    new_parser.add_argument("--test", required=True, help="the nettest, like web_connectivity")
    new_parser.add_argument("--title", required=True, help="one line: the public summary")
    new_parser.add_argument("--reason", required=True, help="the public justification")
    new_parser.add_argument("--input", action="append", default=[], dest="inputs", help="an input (repeat)")
    new_parser.add_argument("--every", help="schedule only: the new interval (30m, 6h, 1d, PT6H)")
    new_parser.add_argument(
        "--country", action="append", default=[], dest="countries", required=True,
        help="a country code, or '*' for all (repeat)",
    )  # fmt: skip
    new_parser.add_argument(
        "--network", action="append", default=[], dest="networks", help="an ASN like AS1234 (repeat)"
    )
    new_parser.add_argument("--platform", action="append", default=[], dest="platforms", help="a platform (repeat)")
    new_parser.add_argument(
        "--allow-ended", action="store_true", help="write it even when its window has ended already (for the record)"
    )
    new_parser.add_argument("--max-probes", type=int, help="at most this many probes")
    new_parser.add_argument("--max-probes-per", choices=("target", "country", "network"))
    new_parser.add_argument("--sample", type=float, help="the fraction of matching probes (0 < f <= 1)")
    new_parser.add_argument("--start", help="window start (default: now), like 2026-12-01T00:00:00Z")
    new_parser.add_argument("--end", help="window end (default: start + 7 days)")


def _register_check(commands: Commands) -> None:
    check_parser = add_command(
        commands, "check", check,
        help="validate the ledger's files in the working tree",
        description="Validate every instruction file, policy.yaml and allowed_signers in the working tree: "
        "schema, meaning, policy, id and file name, duplicate ids. One `path:line: field: message` line per "
        "problem; exit 1 if there is any.",
    )  # fmt: skip
    add_repo(check_parser)
    check_parser.add_argument(
        "--format", choices=("text", "json", "github"), default="text",
        help="text (default), json, or github (GitHub Actions ::error annotations)",
    )  # fmt: skip


def _register_diff(commands: Commands) -> None:
    diff_parser = add_command(
        commands, "diff", diff,
        help="the impact preview of a change to the ledger",
        description="Compare the ledger at BASE and HEAD: signers added and removed, policy.yaml before and after "
        "(its review rules in words), key-document changes by fingerprint, headed by a warning when the change "
        "lowers the review, adds a signer or changes keys; then each instruction added, changed or removed, "
        "with its test, inputs, countries, networks, cap, window and interval, and warnings (a very large target, "
        "a very short interval, a window that starts in the past, an overlap with another instruction on the same "
        "test and target), and the approvals that landing it needs under policy.yaml's review and has so far. "
        "Exit 1 when a file at HEAD is not valid.",
    )  # fmt: skip
    diff_parser.add_argument("base", help="the base revision (the branch merged into)")
    diff_parser.add_argument("head", help="the revision with the change")
    add_repo(diff_parser)
    add_trust(diff_parser)
    diff_parser.add_argument("--format", choices=("text", "markdown", "json"), default="text")


def _github_escape(text: str, property_value: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if property_value else text


def check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    folder, shown = ledger_path(args.repo, args.ledger_dir)
    if not folder.is_dir():
        hint = "" if args.ledger_dir != "ledger" else " (use --ledger-dir, or `opos init` to start a ledger)"
        raise UsageError(f"there is no ledger directory {folder}{hint}")
    problems, instructions = collect_problems(args.repo, folder, shown)
    valid = len(instructions)
    if args.format == "json":
        listed = [{"path": p.path, "line": p.line, "field": p.field, "message": p.message} for p in problems]
        print(json.dumps({"ok": not problems, "instructions": valid, "problems": listed}, indent=2), file=out)
    elif args.format == "github":
        for p in problems:
            props = f"file={_github_escape(p.path, True)}" + (f",line={p.line}" if p.line else "")
            text = f"{p.field}: {p.message}" if p.field else p.message
            print(f"::error {props},title=opos check::{_github_escape(text)}", file=out)
    else:
        for p in problems:
            print(p, file=out)
        for warning in shared_keys(folder, shown) + ended_windows(instructions, shown):
            print(f"warning: {warning}", file=err)
        summary = f"{len(problems)} problem(s)" if problems else f"ok: {valid} instruction(s), no problems"
        print(summary, file=err)
    return 1 if problems else 0


NEW_FLAGS = {
    "id": "--id", "kind": "--kind", "test": "--test", "title": "--title", "reason": "--reason", "inputs": "--input",
    "every": "--every", "target.countries": "--country", "target.networks": "--network",
    "target.platforms": "--platform", "target.max_probes": "--max-probes", "target.max_probes_per": "--max-probes-per",
    "target.sample": "--sample", "window.start": "--start", "window.end": "--end",
}  # fmt: skip


def _schema_line(target: Path, repo: Path) -> str:
    schema = repo / "schemas" / "instruction.schema.json"
    relative = Path(*[".."] * len(target.parent.relative_to(repo).parts)) / "schemas" / "instruction.schema.json"
    reference = relative.as_posix() if schema.exists() else resources.schema_document("instruction.schema")["$id"]
    return f"# yaml-language-server: $schema={reference}\n"


def _yaml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def new(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    folder, shown = ledger_path(args.repo, args.ledger_dir)
    target = folder / "instructions" / f"{args.id}.yaml"
    if target.exists():
        raise UsageError(f"{target} exists already: edit it, or choose another --id")
    next_hour = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    starts = moment("--start", args.start) or next_hour  # by default the next full hour: never in the past
    ends = moment("--end", args.end) or starts + dt.timedelta(days=7)
    if ends <= dt.datetime.now(dt.UTC) and not args.allow_ended:
        raise UsageError(f"--end {format_time(ends)} has passed: no probe would ever run it. Give a later --end, "
                         "or --allow-ended to write it for the record")  # fmt: skip
    start, end = format_time(starts), format_time(ends)
    lines = [
        _schema_line(target, args.repo),
        f"id: {args.id}\n",
        f"kind: {args.kind}\n",
        f"title: {json.dumps(args.title, ensure_ascii=False)}\n",
        "reason: |-\n" + "".join(f"  {line}\n" for line in args.reason.splitlines() or [""]),
        f"test: {args.test}\n",
    ]
    if args.inputs:
        lines.append("inputs:\n" + "".join(f"  - {json.dumps(i, ensure_ascii=False)}\n" for i in args.inputs))
    if args.every:
        lines.append(f"every: {json.dumps(args.every)}\n")
    lines.append(f"target:\n  countries: {_yaml_list(args.countries)}\n")
    if args.networks:
        lines.append(f"  networks: {_yaml_list(args.networks)}\n")
    if args.platforms:
        lines.append(f"  platforms: {_yaml_list(args.platforms)}\n")
    for name in ("max_probes", "max_probes_per", "sample"):
        if getattr(args, name) is not None:
            lines.append(f"  {name}: {getattr(args, name)}\n")
    lines.append(f"window:\n  start: {json.dumps(start)}\n  end: {json.dumps(end)}\n")
    data = "".join(lines).encode()
    policy_path = folder / "policy.yaml"
    policy, _ = rules.load_policy(policy_path.read_bytes() if policy_path.is_file() else None, "policy.yaml")
    _, problems = rules.check_instruction(data, f"{shown}instructions/{args.id}.yaml", policy)
    if problems:  # name the flag that gave the value: the file was never written
        said = []
        for problem in problems:
            field = problem.field.split("[")[0]
            flag = NEW_FLAGS.get(field, f"--{field.split('.')[-1].replace('_', '-')}" if field else "")
            said.append(f"{flag}: {problem.message}" if flag else problem.message)
        raise OposError("opos new: nothing was written:\n" + "\n".join(dict.fromkeys(said)))
    write_atomically(target, data)
    print(target, file=out)
    print("Next: git add it, git commit -S, and open a pull request.", file=err)
    return 0


def diff(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    with open_ledger(args) as ledger:
        base, head = ledger.resolve(args.base), ledger.resolve(args.head)
        changes = changes_between(ledger, base, head, strict=True)
        ruled = governance_between(ledger, base, head)
        approvals = approvals_of(ledger, base, head, args.trust_root)
    if args.format == "json":
        document = {"changes": [c.to_json() for c in changes], **governance.to_json(ruled),
                    "approvals": approvals.to_json()}  # fmt: skip
        print(json.dumps(document, indent=2, ensure_ascii=False), file=out)
    elif args.format == "markdown":
        parts = [governance.as_markdown(ruled), impact.as_markdown(changes),
                 f"**{approvals.describe().replace(':', ':**', 1)}"]  # fmt: skip
        print("\n\n".join(part for part in parts if part), file=out)
    else:
        parts = [governance.as_text(ruled), impact.as_text(changes), approvals.describe()]
        print("\n\n".join(part for part in parts if part), file=out)
    return 0
