"""Staff see and revoke the slots of capped instructions, in the service's claims database."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from opos.cli._common import Commands, add_command
from opos.errors import UsageError
from opos.text import for_terminal

if TYPE_CHECKING:
    from webhook.feed_service.claims_store import ClaimsStore


def register(commands: Commands) -> None:
    claims = add_command(
        commands, "claims", _no_action,
        help="list or revoke the slots of capped instructions (the service's claims database)",
        description="See who holds the slots of capped instructions (max_probes), and give slots back: those taken "
        "by made-up probe ids from one address, say. The database is the service's: --database (or "
        "$OPOS_CLAIMS_DATABASE, a sqlite:/// or postgresql:// URL), else claims.sqlite3 in --data-dir "
        "(or $OPOS_DATA_DIR).",
    )  # fmt: skip
    actions = claims.add_subparsers(dest="action", metavar="ACTION")
    listing = actions.add_parser("list", help="the slots held, per instruction")
    listing.set_defaults(handler=list_claims)
    revoking = actions.add_parser("revoke", help="give slots back, so that other probes may take them")
    revoking.set_defaults(handler=revoke_claims)
    for parser in (listing, revoking):
        parser.add_argument("--database", default=os.environ.get("OPOS_CLAIMS_DATABASE"), metavar="URL",
                            help="sqlite:///path or postgresql://… (default: $OPOS_CLAIMS_DATABASE)")  # fmt: skip
        parser.add_argument("--data-dir", type=Path, default=os.environ.get("OPOS_DATA_DIR"),
                            help="the service's data directory (default: $OPOS_DATA_DIR)")  # fmt: skip
    listing.add_argument("--instruction", metavar="ID", help="only this instruction's slots")
    listing.add_argument("--json", action="store_true", help="print a JSON list")
    revoking.add_argument("--instruction", metavar="ID", required=True, help="the instruction whose slots to give back")
    which = revoking.add_mutually_exclusive_group(required=True)
    which.add_argument("--probe-id", help="the slot of this probe")
    which.add_argument("--address", help="every slot taken from this address (as listed: an IPv4 address or IPv6 /64)")
    which.add_argument("--all", action="store_true", help="every slot of the instruction")


def _no_action(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    raise UsageError("opos claims: say what to do: `opos claims list` or `opos claims revoke` (see --help)")


def _store(args: argparse.Namespace) -> ClaimsStore:
    from webhook.feed_service.claims_store import open_store  # psycopg loads only for the commands that use it

    if args.database:
        return open_store(args.database, timeout_seconds=60)  # staff at a terminal: no probe waits
    if args.data_dir:
        path = Path(args.data_dir) / "claims.sqlite3"
        if not path.exists():
            raise UsageError(f"there is no claims database in {args.data_dir} (expected {path})")
        return open_store(f"sqlite:///{path}")
    raise UsageError("opos claims: give --database URL or --data-dir DIR (or set OPOS_CLAIMS_DATABASE)")


def list_claims(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    store = _store(args)
    try:
        held = store.held(args.instruction)
    finally:
        store.close()
    if args.json:
        rows = [{"instruction": c.instruction, "probe_id": c.probe_id, "scope": c.scope, "address": c.address,
                 "claimed_at": c.claimed_at} for c in held]  # fmt: skip
        print(json.dumps(rows, indent=2), file=out)
        return 0
    for c in held:
        line = f"{c.instruction}  {c.probe_id}  scope={c.scope or 'target'}  from={c.address or '?'}  {c.claimed_at}"
        print(for_terminal(line), file=out)
    print(f"{len(held)} slot(s)", file=err)
    return 0


def revoke_claims(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    store = _store(args)
    try:
        count = store.revoke(args.instruction, args.probe_id, args.address)
    finally:
        store.close()
    print(f"revoked {count} slot(s) of {args.instruction}", file=out)
    return 0
