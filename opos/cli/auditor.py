"""`opos auditor`: cosign feeds that are exactly the public ledger (one-shot), or run the auditor service.

opos auditor cosign FEED_FILE_OR_URL --key AUDITOR_KEY (--feed-key FEED_KEY.pub | --root-key ROOT.pub)… --repo CLONE
                    --state DIR
    exit 0: the cosignature envelope on standard output (the same feed again: cosigned again)
    exit 1: not a feed signed by a pinned key, the history does not verify, or the feed differs
    exit 3: it conflicts with what DIR has cosigned (names the latest (sequence, commit))
    exit 2: usage errors and unreadable inputs, DIR's log among them (damaged: it cosigns nothing)
opos auditor serve --key … --remote URL (--feed-key … | --root-key …) --state DIR [--bind 127.0.0.1:8090]
    the same checks behind POST /v1/cosign, under gunicorn (webhook/auditor/app.py)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import TextIO

from opos.audit.auditing import AuditLog, audit, receive
from opos.audit.errors import AuditConflict, AuditLogDamaged, AuditRefused
from opos.cli._common import Commands, add_group, add_repo, add_trust, open_ledger, pinned_keys
from opos.cli.transparency import feed_bytes
from opos.errors import OposError, UsageError
from opos.signing import keys
from opos.trust.verification import Verification


def register(commands: Commands) -> None:
    sub = add_group(
        commands, "auditor",
        help="an independent auditor: cosign feeds that are exactly the public ledger",
        description="An auditor re-renders a feed from the public, staff-signed git history and cosigns it only "
        "when it is the same bytes, at a commit that extends everything it cosigned before. Probes that pin k "
        "auditors accept only feeds that k of them cosigned. `cosign` checks one feed against a clone; `serve` "
        "runs the auditor service (POST /v1/cosign) under gunicorn.",
    )  # fmt: skip
    cosign = sub.add_parser("cosign", help="check one feed against a clone and cosign it",
                            description=__doc__.split("\n\n")[1] if __doc__ else None,
                            formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    cosign.set_defaults(handler=cosign_command)
    cosign.add_argument("feed", help="a feed file, or its URL (v1/feed/<commit>.json, or a mirror's base URL)")
    _common(cosign)
    add_repo(cosign)
    add_trust(cosign)
    cosign.add_argument("--branch", default="HEAD", help="the public branch in the clone (default: HEAD)")

    serve = sub.add_parser("serve", help="run the auditor service under gunicorn",
                           description="Run the auditor service (webhook/auditor/app.py) under gunicorn: POST "
                           "/v1/cosign, GET /v1/cosigned.json, /v1/cosigned/<commit>.json, /v1/public_key, /healthz. "
                           "It fetches the ledger from --remote, never from the requester.")  # fmt: skip
    serve.set_defaults(handler=serve_command)
    _common(serve)
    serve.add_argument(
        "--remote", required=True, action="append", dest="remotes",
        help="the public ledger's git URL (or path); repeat for mirrors of it, tried in turn",
    )  # fmt: skip
    serve.add_argument("--branch", default="main", help="its public branch (default: main)")
    serve.add_argument("--ledger-dir", default=os.environ.get("OPOS_LEDGER_DIR", "ledger"))
    add_trust(serve)
    serve.add_argument("--bind", default="127.0.0.1:8090", help="where to listen (default: 127.0.0.1:8090)")
    serve.add_argument("--workers", type=int, default=2, help="gunicorn workers (default: 2)")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", type=Path, required=True, help="this auditor's private key (from `opos keygen`)")
    parser.add_argument("--feed-key", type=Path, action="append", default=[], dest="feed_keys",
                        help="a pinned feed public key (.pub); repeat for several")  # fmt: skip
    parser.add_argument("--root-key", type=Path, action="append", default=[], dest="root_keys",
                        help="a root key (.pub; repeat): accept the feed keys that the ledger's key documents list "
                        "at the audited commit, their chain checked from these, so a feed-key rotation needs no "
                        "restart (give --feed-key, --root-key or both)")  # fmt: skip
    parser.add_argument("--state", type=Path, required=True, help="the auditor's state directory (its log)")


def cosign_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        key = keys.load_private(args.key)
    except OposError as error:
        raise UsageError(error.diagnostics()) from None
    feed_keys, roots = pinned_keys(args.feed_keys, args.root_keys, "--feed-key")
    envelope = feed_bytes(args.feed)
    log = AuditLog(args.state)
    try:
        request = receive(envelope, feed_keys, roots)
        with open_ledger(args) as ledger, log.locked():
            try:
                tip = ledger.resolve(args.branch)
            except OposError as error:
                raise UsageError(f"--branch {args.branch}: {error}") from None
            done = audit(request, key, log, lambda: (Verification.open(ledger, tip, args.trust_root), tip),
                         dt.datetime.now(dt.UTC))  # fmt: skip
    except AuditConflict as conflict:
        latest = conflict.latest
        print(f"opos: CONFLICT: {conflict}; the latest cosigned is sequence {latest.sequence}, commit "
              f"{latest.commit}", file=err)  # fmt: skip
        return 3
    except AuditRefused as refused:
        print(f"opos: refused: {refused}", file=err)
        return 1
    except AuditLogDamaged as damaged:
        print(f"opos: {damaged}", file=err)
        return 2
    out.write(done.envelope.decode() + "\n")
    said = "cosigned" if done.appended else "cosigned again (already in the log)"
    print(f"{said}: sequence {done.entry.sequence}, commit {done.entry.commit}", file=err)
    return 0


def serve_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    pinned_keys(args.feed_keys, args.root_keys, "--feed-key")
    for path in (args.key, *args.feed_keys, *args.root_keys):
        if not path.is_file():
            raise UsageError(f"cannot read {path}")
    env = {
        **os.environ,
        "OPOS_AUDITOR_KEY": str(args.key.resolve()),
        "OPOS_AUDITOR_FEED_KEYS": ",".join(str(p.resolve()) for p in args.feed_keys),
        "OPOS_AUDITOR_ROOT_KEYS": ",".join(str(p.resolve()) for p in args.root_keys),
        "OPOS_AUDITOR_STATE": str(args.state.resolve()),
        "OPOS_AUDITOR_REMOTE": ",".join(args.remotes),
        "OPOS_AUDITOR_BRANCH": args.branch,
        "OPOS_AUDITOR_LEDGER_DIR": args.ledger_dir,
        **({"OPOS_AUDITOR_TRUST_ROOT": args.trust_root} if args.trust_root else {}),
    }
    import webhook

    config = Path(webhook.__file__).parent / "auditor.conf.py"
    command = [sys.executable, "-m", "gunicorn", "-c", str(config), "--bind", args.bind, "--workers",
               str(args.workers), "webhook.auditor:create_app()"]  # fmt: skip
    print(f"auditor on http://{args.bind}/ ({json.dumps(command[3:])})", file=out, flush=True)
    os.execve(sys.executable, command, env)  # nosec B606: our own interpreter, fixed arguments
    return 0  # not reached
