"""The `opos` command: argument parsing and output only; the library does the work.

`run(argv, stdout, stderr)` returns the exit code, so tests call it in-process. Errors raised on
purpose (OposError) print their diagnosis; nothing a user can type produces a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from opos import __version__
from opos.cli import commands
from opos.errors import OposError, UsageError

LEDGER_DIR_HELP = "the ledger directory inside the repository (default: $OPOS_LEDGER_DIR or 'ledger'; '.' for the top)"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}\n{self.format_usage().strip()}\nSee `{self.prog} --help`.")


def _add_repo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", type=Path, default=Path("."), help="the ledger's git repository (default: .)")
    parser.add_argument("--ledger-dir", default=os.environ.get("OPOS_LEDGER_DIR", "ledger"), help=LEDGER_DIR_HELP)


def _add_trust(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust-root",
        default=os.environ.get("OPOS_TRUST_ROOT"),
        metavar="C",
        help="the pinned trust-root commit (default: $OPOS_TRUST_ROOT, else the history's single root commit)",
    )


def _default_state() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "opos-probe"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="opos",
        description="OPOS, the OONI Probe Orchestration System: instructions for OONI probes, kept as YAML in a "
        "git repository with signed commits, published as a signed feed.",
        epilog="Run `opos COMMAND --help` for each command.",
    )
    parser.add_argument("--version", action="version", version=f"opos {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    check = sub.add_parser(
        "check",
        help="validate the ledger's files in the working tree",
        description="Validate every instruction file, policy.yaml and allowed_signers in the working tree: "
        "schema, meaning, policy, id and file name, duplicate ids. One `path:line: field: message` line per "
        "problem; exit 1 if there is any.",
    )
    _add_repo(check)
    check.add_argument(
        "--format",
        choices=("text", "json", "github"),
        default="text",
        help="text (default), json, or github (GitHub Actions ::error annotations)",
    )

    verify = sub.add_parser(
        "verify",
        help="verify the signatures of the ledger's history",
        description="Verify that every commit from the trust root to REV that changes the ledger is signed by "
        "an allowed signer (ledger/allowed_signers as it stands in the commit's first parent). Prints one line "
        "per failing commit (hash, then the reason) and exits 1; exits 0 when all pass. Verdicts are cached in "
        ".git/opos, so only new commits are checked again.",
    )
    _add_repo(verify)
    verify.add_argument("--rev", default="HEAD", help="the revision to verify (default: HEAD)")
    _add_trust(verify)
    verify.add_argument("--since", metavar="C", help="a previously accepted commit: REV must descend from it")

    render = sub.add_parser(
        "render",
        help="render the verified ledger at a commit into a signed static site",
        description="Verify history up to REV, then write OUT/v1/feed/<commit>.json, OUT/v1/feed.json and "
        "OUT/v1/head.json (DSSE envelopes signed with the Ed25519 feed key). Any web server or CDN can "
        "serve OUT as a mirror. A REV older than the published head only adds its pinned feed file; a REV "
        "that does not descend from it is refused (history rewritten).",
    )
    _add_repo(render)
    render.add_argument("--rev", default="HEAD", help="the revision to render (default: HEAD)")
    render.add_argument("--key", type=Path, required=True, help="the feed's private key (from `opos keygen`)")
    render.add_argument("--out", type=Path, required=True, help="the site directory to write")
    render.add_argument("--head-ttl", default="24h", help="how long the head is valid (default: 24h)")
    _add_trust(render)

    verify_feed = sub.add_parser(
        "verify-feed",
        help="check a feed or head envelope and print its payload",
        description="Check a feed or head file (signature by one of the keys, payload type, schema) and print "
        "its payload. Exit 1 with the reason on any failure.",
    )
    verify_feed.add_argument("file", type=Path, help="v1/feed.json, v1/feed/<commit>.json or v1/head.json")
    verify_feed.add_argument(
        "--key", type=Path, action="append", required=True, help="a trusted public key (.pub); repeat for several"
    )

    keygen = sub.add_parser(
        "keygen",
        help="make an Ed25519 feed signing key",
        description="Write an Ed25519 private key in OpenSSH format to FILE (mode 0600) and its public key to "
        "FILE.pub. Its id everywhere is the OpenSSH fingerprint (ssh-keygen -lf FILE.pub).",
    )
    keygen.add_argument("--out", type=Path, required=True, help="where to write the private key")

    new = sub.add_parser(
        "new",
        help="scaffold an instruction file",
        description="Write <ledger>/instructions/<id>.yaml from the flags, checked before it is written. "
        "Then commit it with `git commit -S` and open a pull request.",
    )
    _add_repo(new)
    new.add_argument("--id", required=True, help="lowercase letters, digits and -, 3 to 80 characters")
    new.add_argument("--kind", choices=("run", "schedule"), required=True)
    new.add_argument("--test", required=True, help="the nettest, like web_connectivity")
    new.add_argument("--title", required=True, help="one line: the public summary")
    new.add_argument("--reason", required=True, help="the public justification")
    new.add_argument("--input", action="append", default=[], dest="inputs", help="an input (repeat)")
    new.add_argument("--every", help="schedule only: the new interval (30m, 6h, 1d, PT6H)")
    new.add_argument(
        "--country",
        action="append",
        default=[],
        dest="countries",
        required=True,
        help="a country code, or '*' for all (repeat)",
    )
    new.add_argument("--network", action="append", default=[], dest="networks", help="an ASN like AS1234 (repeat)")
    new.add_argument("--platform", action="append", default=[], dest="platforms", help="a platform (repeat)")
    new.add_argument("--max-probes", type=int, help="at most this many probes")
    new.add_argument("--max-probes-per", choices=("target", "country", "network"))
    new.add_argument("--sample", type=float, help="the fraction of matching probes (0 < f <= 1)")
    new.add_argument("--start", help="window start (default: now), like 2026-12-01T00:00:00Z")
    new.add_argument("--end", help="window end (default: start + 7 days)")

    init = sub.add_parser(
        "init",
        help="create a new ledger repository",
        description="Create a git repository at DIR with the template ledger and one allowed signer, and print "
        "the `git commit -S` command that makes the signed trust-root commit (pin its hash).",
    )
    init.add_argument("dir", type=Path)
    init.add_argument("--signer", required=True, help="the signer's principal, usually an e-mail address")
    init.add_argument("--key", type=Path, required=True, help="the signer's SSH public key file (.pub)")
    init.add_argument("--ledger-dir", default=os.environ.get("OPOS_LEDGER_DIR", "ledger"), help=LEDGER_DIR_HELP)
    init.add_argument("--examples", action="store_true", help="also copy the example instructions")

    serve = sub.add_parser(
        "serve",
        help="run the feed service for development",
        description="Run the feed service (follow the ledger, serve the signed feed, grant claims) with Flask's "
        "development server. Configuration: OPOS_* environment variables and an optional file (--config or "
        "OPOS_CONFIG); at least OPOS_REMOTE, OPOS_DATA_DIR and OPOS_FEED_KEY. In production run gunicorn: "
        "gunicorn -c webhook/gunicorn.conf.py 'webhook:create_app()'.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="the port (default: 8080)")
    serve.add_argument("--config", type=Path, default=os.environ.get("OPOS_CONFIG"), help="a YAML or TOML file")

    log = sub.add_parser(
        "log",
        help="the public event log of the ledger, from a clone",
        description="Print the ledger's event log (added, changed, removed, expired instructions), newest first, "
        "straight from a clone, after verifying its history. With --country and --network: the instructions that "
        "targeted that probe; with --since/--until, those whose window overlapped that period (--period window) or "
        "the events of that period (--period time).",
    )
    _add_repo(log)
    log.add_argument("--rev", default="HEAD", help="the revision to read (default: HEAD)")
    _add_trust(log)
    log.add_argument("--country", help="only instructions that target this country (e.g. IR)")
    log.add_argument("--network", help="only instructions that target this network (e.g. AS197207)")
    log.add_argument("--test", help="only instructions of this test")
    log.add_argument("--instruction", help="only this instruction's history")
    log.add_argument("--since", help="the start of the period (2026-11-01 or 2026-11-01T00:00:00Z)")
    log.add_argument("--until", help="the end of the period (exclusive)")
    log.add_argument(
        "--period",
        choices=("window", "time"),
        default="window",
        help="window: the instruction's window overlaps the period (default); time: the event's time",
    )
    log.add_argument("--json", action="store_true", help="print {events, next} as /v1/log.json does")

    diff = sub.add_parser(
        "diff",
        help="the impact preview of a change to the ledger",
        description="Compare the ledger's instructions at BASE and HEAD: each instruction added, changed or removed, "
        "with its test, inputs, countries, networks, cap, window and interval, and warnings (a very large target, "
        "a very short interval, a window that starts in the past, an overlap with another instruction on the same "
        "test and target). Exit 1 when a file at HEAD is not valid.",
    )
    diff.add_argument("base", help="the base revision (the branch merged into)")
    diff.add_argument("head", help="the revision with the change")
    _add_repo(diff)
    diff.add_argument("--format", choices=("text", "markdown", "json"), default="text")

    audit = sub.add_parser(
        "audit",
        help="check that a published feed says exactly what the signed history says",
        description="Verify a feed envelope (a file or an http(s) URL) with the key, verify the clone's history up to "
        "the feed's commit, re-render the feed payload from the clone and compare byte for byte. Exit 0 when they "
        "match, 1 (showing the difference) when they do not: the service signed something staff did not commit.",
    )
    audit.add_argument("feed", help="a feed file or URL (v1/feed.json or v1/feed/<commit>.json)")
    audit.add_argument("--key", action="append", required=True, type=Path, help="the feed public key (repeat)")
    _add_repo(audit)
    _add_trust(audit)

    probe = sub.add_parser(
        "probe",
        help="poll the feed as a probe would and print its plan",
        description="Ask the mirrors (in a random order) for the signed head and feed, verify them with the pinned "
        "key(s), keep the state in --state, and print the plan for this probe: the runs to make and the schedule to "
        "keep. Without a usable mirror it plans from the cached feed; without a cache, from the default schedule. "
        "Exit 0 whenever it produced a plan.",
    )
    probe.add_argument(
        "--mirror",
        action="append",
        required=True,
        dest="mirrors",
        metavar="URL",
        help="a mirror's base URL (repeat); URL#host=NAME sends Host: NAME (a fronted domain)",
    )
    probe.add_argument(
        "--key",
        action="append",
        required=True,
        dest="keys",
        type=Path,
        metavar="PUBFILE",
        help="a pinned feed public key (repeat, for rotation)",
    )
    probe.add_argument("--country", required=True, help="this probe's country code, like IR")
    probe.add_argument("--network", required=True, help="this probe's network, like AS197207")
    probe.add_argument("--platform", help="android, ios, linux, macos or windows")
    probe.add_argument("--claims", metavar="URL", help="the service's base URL for claims (capped instructions)")
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

    demo = sub.add_parser(
        "demo",
        help="build a demo ledger with signed commits, render and verify its feed, serve it",
        description="Make a demo ledger repository with real SSH-signed commits, verify it, render its signed "
        "feed and verify that, printing each step. With --serve, then run the feed service (gunicorn on "
        "127.0.0.1) on the demo ledger, push one more signed commit through a webhook, and keep serving.",
    )
    demo.add_argument("--dir", type=Path, default=Path(".demo"), help="where to build it (default: .demo)")
    demo.add_argument("--serve", action="store_true", help="then run the feed service on it until Ctrl-C")
    demo.add_argument("--port", type=int, default=8080, help="the service's port with --serve (default: 8080)")
    return parser


def run(argv: Sequence[str], stdout: TextIO, stderr: TextIO) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv))
        if args.command is None:
            parser.print_help(stdout)
            return 2
        handler = getattr(commands, args.command.replace("-", "_"))
        return int(handler(args, stdout, stderr))
    except UsageError as err:
        print(err.diagnostics(), file=stderr)
        return 2
    except OposError as err:
        print(err.diagnostics(), file=stderr)
        return 1
    except OSError as err:
        where = f" {err.filename}" if err.filename else ""
        print(f"opos: cannot access{where}: {err.strerror or err}", file=stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # a bug: say so plainly, keep the traceback for those who ask
        print(f"opos: internal error: {type(err).__name__}: {err}. Please report it.", file=stderr)
        if os.environ.get("OPOS_DEBUG"):
            traceback.print_exc(file=stderr)
        else:
            print("Set OPOS_DEBUG=1 to see the traceback.", file=stderr)
        return 70


def main() -> None:
    sys.exit(run(sys.argv[1:], sys.stdout, sys.stderr))
