"""What each `opos` command does, given parsed arguments: call the library, format the answer."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
from pathlib import Path
from typing import TextIO

from opos.atomic import write_atomically
from opos.errors import KeyInvalid, LedgerInvalid, Problem, RepositoryError, UsageError
from opos.feed import keys
from opos.feed.site import publish
from opos.instructions import resources, rules
from opos.instructions.worktree import read_ledger_dir
from opos.trust import sshsig
from opos.trust.gitrepo import GitLedger, init_repository, normalise_ledger_dir, set_config
from opos.trust.verification import Verification


def _ledger_path(repo: Path, ledger_dir: str) -> tuple[Path, str]:
    parts = normalise_ledger_dir(ledger_dir)
    return repo.joinpath(*parts), "".join(f"{p}/" for p in parts)


def collect_problems(repo: Path, ledger_dir: str) -> tuple[list[Problem], int]:
    """Every problem of the working tree's ledger, and how many instructions are valid."""
    folder, shown = _ledger_path(repo, ledger_dir)
    if not folder.is_dir():
        hint = "" if ledger_dir != "ledger" else " (use --ledger-dir, or `opos init` to start a ledger)"
        raise UsageError(f"there is no ledger directory {folder}{hint}")
    result = rules.check_ledger(read_ledger_dir(folder, shown))
    signers_path = folder / "allowed_signers"
    if signers_path.is_file():
        signers, problems = sshsig.parse_allowed_signers(signers_path.read_bytes(), f"{shown}allowed_signers")
        result.problems.extend(problems)
        if not signers and not problems:
            result.problems.append(
                Problem(f"{shown}allowed_signers", None, "", "no signer is allowed: nobody could sign a change")
            )
    else:
        message = "missing: list the staff keys that may sign (principal ssh-ed25519 AAAA…)"
        result.problems.append(Problem(f"{shown}allowed_signers", None, "", message))
    return result.problems, len(result.instructions)


def _github_escape(text: str, property_value: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if property_value else text


def check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    problems, valid = collect_problems(args.repo, args.ledger_dir)
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
        summary = f"{len(problems)} problem(s)" if problems else f"ok: {valid} instruction(s), no problems"
        print(summary, file=err)
    return 1 if problems else 0


def verify(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    ledger = GitLedger(args.repo, args.ledger_dir)
    revision = ledger.resolve(args.rev)
    verification = Verification.open(ledger, revision, args.trust_root)
    report = verification.check(revision, args.since)
    for failure in report.failures:
        print(failure, file=out)
    if not report.ok:
        return 1
    assert report.accepted is not None
    print(f"ok: {revision} (sequence {report.accepted.sequence}) from trust root {verification.trust_root}", file=err)
    return 0


def render(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        ttl = dt.timedelta(seconds=rules.parse_duration(args.head_ttl))
    except ValueError as error:
        raise UsageError(f"--head-ttl: {error}") from None
    key = keys.load_private(args.key)
    ledger = GitLedger(args.repo, args.ledger_dir)
    revision = ledger.resolve(args.rev)
    verification = Verification.open(ledger, revision, args.trust_root)
    published = publish(verification, revision, key, args.out, dt.datetime.now(dt.UTC), ttl)
    print(f"{published.feed_path} (sequence {published.sequence}): {published.note}", file=out)
    return 0


def verify_feed(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from opos.feed.render import verify_envelope

    trusted = [keys.load_public(path) for path in args.key]
    try:
        data = args.file.read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {args.file}: {error.strerror}") from None
    document = verify_envelope(data, trusted)
    if document.kind == "head":
        expires = dt.datetime.strptime(document.payload["expires"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
        if expires < dt.datetime.now(dt.UTC):
            print(f"{args.file}: the head expired at {document.payload['expires']}", file=err)
            return 1
    print(json.dumps(document.payload, indent=2, ensure_ascii=False), file=out)
    print(f"ok: {document.kind} signed by {document.keyid}", file=err)
    return 0


def keygen(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    public = keys.generate(args.out)
    print(f"{args.out} (private, keep it secret) and {args.out}.pub", file=out)
    print(f"key id: {keys.key_id(public)}", file=out)
    return 0


def _schema_line(target: Path, repo: Path) -> str:
    schema = repo / "schemas" / "instruction.schema.json"
    relative = Path(*[".."] * len(target.parent.relative_to(repo).parts)) / "schemas" / "instruction.schema.json"
    reference = relative.as_posix() if schema.exists() else resources.schema_document("instruction.schema")["$id"]
    return f"# yaml-language-server: $schema={reference}\n"


def _yaml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def new(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    folder, shown = _ledger_path(args.repo, args.ledger_dir)
    target = folder / "instructions" / f"{args.id}.yaml"
    if target.exists():
        raise UsageError(f"{target} exists already: edit it, or choose another --id")
    now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    start = args.start or now.strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        end = args.end or (rules.parse_timestamp(start) + dt.timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        raise UsageError(f"--start {start!r} is not a timestamp with a time zone like 2026-12-01T00:00:00Z") from None
    lines = [
        _schema_line(target, args.repo),
        f"id: {args.id}\n",
        f"kind: {args.kind}\n",
        f"title: {json.dumps(args.title, ensure_ascii=False)}\n",
        "reason: |\n" + "".join(f"  {line}\n" for line in args.reason.splitlines() or [""]),
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
    if problems:
        raise LedgerInvalid(problems)
    write_atomically(target, data)
    print(target, file=out)
    print("Next: git add it, git commit -S, and open a pull request.", file=err)
    return 0


def init(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    target: Path = args.dir
    if target.exists() and any(target.iterdir()):
        raise UsageError(f"{target} exists and is not empty: choose a new directory")
    key_text = _read_signer_key(args.key)
    init_repository(target).close()
    folder, shown = _ledger_path(target, args.ledger_dir)
    template = resources.data_dir("ledger")
    for source in sorted(template.rglob("*")):
        relative = source.relative_to(template)
        if source.is_dir() or relative.name == "allowed_signers":
            continue
        if relative.parts[0] == "instructions" and not args.examples and relative.suffix == ".yaml":
            continue
        if relative.parts[0] == "templates":
            continue  # installed at the repository's top by _install_hosting_files
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, folder / relative)
    (folder / "instructions").mkdir(parents=True, exist_ok=True)
    (folder / "instructions" / ".gitkeep").touch()
    header = (template / "allowed_signers").read_text(encoding="utf-8").split("\n\n")[0]
    (folder / "allowed_signers").write_text(f"{header}\n\n{args.signer} {key_text}\n", encoding="utf-8")
    _install_hosting_files(target)
    schemas = target / "schemas"
    schemas.mkdir(exist_ok=True)
    for name in ("instruction.schema.json", "policy.schema.json"):
        shutil.copyfile(resources.data_dir("schemas") / name, schemas / name)
    private = args.key.with_suffix("") if args.key.suffix == ".pub" else args.key
    signing_key = private if private.exists() else args.key
    set_config(
        target,
        {
            "gpg.format": "ssh",
            "gpg.ssh.allowedSignersFile": str((folder / "allowed_signers").resolve()),
            "user.signingkey": str(signing_key.resolve()),
            "commit.gpgsign": "true",
        },
    )
    print(f"Created the ledger repository {target} with {args.signer} as its signer ({shown or './'}).", file=out)
    print("Make the signed trust-root commit, and pin its hash:", file=out)
    print(f"  cd {target}", file=out)
    print("  git add -A", file=out)
    print(f'  git commit -S -m "Start the ledger: trust root, signer {args.signer}"', file=out)
    print("  git rev-parse HEAD   # the trust root: give it as --trust-root / OPOS_TRUST_ROOT", file=out)
    return 0


def _install_hosting_files(target: Path) -> None:
    """The pull-request template, a CODEOWNERS example and the ledger workflow, where the hosting site reads them."""
    hosting = target / ".github"
    (hosting / "workflows").mkdir(parents=True, exist_ok=True)
    templates = resources.data_dir("ledger") / "templates"
    for name in ("pull_request_template.md", "CODEOWNERS"):
        shutil.copyfile(templates / name, hosting / name)
    workflow = (resources.data_dir(".github/workflows") / "ledger.yml").read_text(encoding="utf-8")
    workflow = workflow.replace('OPOS_INSTALL: "."', 'OPOS_INSTALL: "opos"  # pin the OPOS release you trust')
    (hosting / "workflows" / "ledger.yml").write_text(workflow, encoding="utf-8")


def _read_signer_key(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise KeyInvalid(f"cannot read the signer's public key {path}: {error}") from None
    parts = text.split()
    if "PRIVATE KEY" in text:
        raise KeyInvalid(f"{path} is a private key: give the public one ({path}.pub)")
    if len(parts) < 2 or parts[0] not in sshsig.KEY_TYPES:
        raise KeyInvalid(f"{path} is not an SSH public key (expected: {' | '.join(sshsig.KEY_TYPES)} AAAA…)")
    problems = sshsig.parse_allowed_signers(f"x {parts[0]} {parts[1]}".encode())[1]
    if problems:
        raise KeyInvalid(f"{path}: {problems[0].message.split(';')[0]}")
    return f"{parts[0]} {parts[1]}"


def serve(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from webhook import create_app
    from webhook.config import load_config

    app = create_app(load_config(args.config))
    print(f"OPOS service on http://{args.host}:{args.port}/ (Ctrl-C stops it)", file=out, flush=True)
    app.run(host=args.host, port=args.port, threaded=True, use_reloader=False)
    return 0


def log(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from opos.eventlog.logindex import LogIndex, LogQuery, log_document, select

    query = LogQuery(
        country=args.country, network=args.network, test=args.test, instruction=args.instruction,
        since=_moment("--since", args.since), until=_moment("--until", args.until), period=args.period, limit=10**9,
    )  # fmt: skip
    ledger = GitLedger(args.repo, args.ledger_dir)
    revision = ledger.resolve(args.rev)
    verification = Verification.open(ledger, revision, args.trust_root)
    verification.require(revision)
    index = LogIndex.for_verification(verification)
    index.update(verification, revision)
    events, _ = select(index.events(), dt.datetime.now(dt.UTC), query)
    if args.json:
        print(json.dumps(log_document(events, None), indent=2, ensure_ascii=False), file=out)
        return 0
    for event in events:
        subject = event.subject
        target = subject["target"]
        where = " ".join(target["countries"] + target["networks"])
        by = f"signed by {event.signer}" if event.signer else "unsigned"
        print(f"{event.time}  {event.action:8} {event.instruction}  ({subject['test']} in {where})  "
              f"sequence {event.sequence}, {event.revision[:12]} {by}: {event.message}", file=out)  # fmt: skip
    print(f"{len(events)} event(s)", file=err)
    return 0


def diff(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from opos.eventlog import impact

    ledger = GitLedger(args.repo, args.ledger_dir)
    sides = {}
    for name in ("base", "head"):
        checked = rules.check_ledger(ledger.ledger_files(ledger.commit(ledger.resolve(getattr(args, name)))))
        if checked.problems and name == "head":
            raise LedgerInvalid(checked.problems)
        sides[name] = {ident: i.to_json() for ident, i in checked.instructions.items()}
    changes = impact.compare(sides["base"], sides["head"], dt.datetime.now(dt.UTC))
    if args.format == "json":
        print(json.dumps({"changes": [c.to_json() for c in changes]}, indent=2, ensure_ascii=False), file=out)
    else:
        print(impact.as_markdown(changes) if args.format == "markdown" else impact.as_text(changes), file=out)
    return 0


def audit(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    import base64
    import difflib

    from opos.client.fetch import FetchFailed, Limits, Mirror, get
    from opos.feed.render import verify_envelope
    from opos.feed.site import feed_at

    trusted = [keys.load_public(path) for path in args.key]
    if args.feed.startswith(("http://", "https://")):
        base, _, name = args.feed.rpartition("/")
        try:
            data = get(Mirror(base), name, Limits().feed_bytes, Limits()).body
        except FetchFailed as error:
            raise UsageError(f"cannot fetch {args.feed}: {error}") from None
    else:
        try:
            data = Path(args.feed).read_bytes()
        except OSError as error:
            raise UsageError(f"cannot read {args.feed}: {error.strerror}") from None
    document = verify_envelope(data, trusted)
    if document.kind != "feed":
        raise UsageError(f"{args.feed} is a {document.kind}: give the feed (v1/feed.json or v1/feed/<commit>.json)")
    published = base64.b64decode(json.loads(data)["payload"])
    commit = document.payload["commit"]
    ledger = GitLedger(args.repo, args.ledger_dir)
    try:
        ledger.commit(commit)
    except RepositoryError:
        raise UsageError(f"the clone {args.repo} does not have {commit}: fetch the ledger first") from None
    verification = Verification.open(ledger, commit, args.trust_root)
    rendered = feed_at(verification, commit)
    if rendered == published:
        print(f"ok: the feed at {commit} (sequence {document.payload['sequence']}) is exactly what the signed "
              f"history says, byte for byte", file=out)  # fmt: skip
        return 0
    ours = json.dumps(json.loads(rendered), indent=1, sort_keys=True).splitlines()
    theirs = json.dumps(document.payload, indent=1, sort_keys=True).splitlines()
    print(f"MISMATCH: the feed signed by {document.keyid} for {commit} differs from the signed history:", file=out)
    for line in difflib.unified_diff(ours, theirs, "re-rendered from git", "published feed", lineterm=""):
        print(line, file=out)
    return 1


def _moment(flag: str, text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    try:
        return rules.parse_timestamp(text)
    except ValueError:
        raise UsageError(f"{flag} {text!r}: a date (2026-11-01) or a time with a zone (2026-11-01T00:00:00Z)") from None


def probe(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from opos.cli.probe import run

    return run(args, out)


def demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from opos.cli.demo import run_demo

    return run_demo(args.dir, out, serve=args.serve, port=args.port)
