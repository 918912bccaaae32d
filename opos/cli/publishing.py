"""Trust and publication: verify the signed history, render the signed feed, check a feed, make a feed key."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
from pathlib import Path
from typing import TextIO

from opos.cli._common import Commands, add_command, add_repo, add_trust, auditors_required, open_ledger
from opos.errors import UsageError
from opos.instructions.oonirun import LinkSettings
from opos.model import parse_duration
from opos.publish.bridge import LINK
from opos.publish.cosigning import asking
from opos.publish.site import Auditors, publish
from opos.signing import keys
from opos.signing.documents import Head, verify_envelope
from opos.trust.verification import Verification

CLOCK_SKEW = dt.timedelta(minutes=5)  # the allowance probes give a head's expiry (opos probe --clock-skew)


def register(commands: Commands) -> None:
    _register_verify(commands)
    _register_render(commands)
    _register_verify_feed(commands)
    _register_keygen(commands)


def _register_verify(commands: Commands) -> None:
    verify_parser = add_command(
        commands, "verify", verify,
        help="verify the signatures of the ledger's history",
        description="Verify that every commit from the trust root to REV that changes the ledger is signed by "
        "an allowed signer (ledger/allowed_signers as it stands in the commit's first parent). Prints one line "
        "per failing commit (hash, then the reason) and exits 1; exits 0 when all pass. When policy.yaml's review "
        "asks more than one signer, each first-parent step must also carry that many distinct staff's signatures. "
        "Verdicts are cached in .git/opos, so only new commits are checked again.",
    )  # fmt: skip
    add_repo(verify_parser)
    verify_parser.add_argument("--rev", default="HEAD", help="the revision to verify (default: HEAD)")
    add_trust(verify_parser)
    verify_parser.add_argument("--since", metavar="C", help="a previously accepted commit: REV must descend from it")
    verify_parser.add_argument(
        "--proposal", action="store_true",
        help="REV is a pull request's branch: its commits need good signatures, while the review's count is for the "
        "merge that lands it (`opos diff` says where the approvals stand)",
    )  # fmt: skip


def _register_render(commands: Commands) -> None:
    render_parser = add_command(
        commands, "render", render,
        help="render the verified ledger at a commit into a signed static site",
        description="Verify history up to REV, then write OUT/v1/feed/<commit>.json, OUT/v1/feed.json and "
        "OUT/v1/head.json (DSSE envelopes signed with the Ed25519 feed key), and with OPOS_OONIRUN_AUTHOR set, the "
        "OONI Run link OUT/v1/oonirun/link.json (docs/oonirun.md). Any web server or CDN can serve OUT as a mirror. "
        "A REV older than the published head only adds its pinned feed file; a REV that does not descend from it is "
        "refused (history rewritten).",
    )  # fmt: skip
    add_repo(render_parser)
    render_parser.add_argument("--rev", default="HEAD", help="the revision to render (default: HEAD)")
    render_parser.add_argument("--key", type=Path, required=True, help="the feed's private key (from `opos keygen`)")
    render_parser.add_argument("--out", type=Path, required=True, help="the site directory to write")
    render_parser.add_argument("--head-ttl", default="24h", help="how long the head is valid (default: 24h)")
    render_parser.add_argument(
        "--auditor", action="append", default=[], dest="auditors", metavar="URL",
        help="an auditor to ask for a cosignature of a new commit (repeat); the head names the commit only when "
        "--auditors-required of them cosigned, into OUT/v1/cosignatures/<commit>.json",
    )  # fmt: skip
    render_parser.add_argument(
        "--auditors-required", type=int, default=None, metavar="K", help="default: every --auditor given"
    )
    render_parser.add_argument(
        "--auditor-key", action="append", default=[], dest="auditor_keys", type=Path, metavar="FILE",
        help="an auditor's public key (.pub; repeat): cosignatures count once per distinct key among these, never "
        "per URL; with key documents in the ledger, the newest one's auditors and count apply instead",
    )  # fmt: skip
    add_trust(render_parser)


def _register_verify_feed(commands: Commands) -> None:
    verify_feed_parser = add_command(
        commands, "verify-feed", verify_feed,
        help="check a feed or head envelope and print its payload",
        description="Check a feed or head file (signature by one of the keys, payload type, schema, and for a "
        "head its expiry, with the clock-skew allowance that probes give) and print its payload. Exit 1 with the "
        "reason on any failure.",
    )  # fmt: skip
    verify_feed_parser.add_argument("file", type=Path, help="v1/feed.json, v1/feed/<commit>.json or v1/head.json")
    verify_feed_parser.add_argument(
        "--key", type=Path, action="append", required=True, help="a trusted public key (.pub); repeat for several"
    )


def _register_keygen(commands: Commands) -> None:
    keygen_parser = add_command(
        commands, "keygen", keygen,
        help="make an Ed25519 key: a feed key, a root key or an auditor's key",
        description="Write an Ed25519 private key in OpenSSH format to FILE (mode 0600) and its public key to "
        "FILE.pub. Its id everywhere is the OpenSSH fingerprint (ssh-keygen -lf FILE.pub). The same command makes "
        "the feed key (the service's), root keys (kept offline; they sign the key documents, `opos keys`) and an "
        "auditor's key (`opos auditor`).",
    )  # fmt: skip
    keygen_parser.add_argument("--out", type=Path, required=True, help="where to write the private key")


def verify(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    with open_ledger(args) as ledger:
        revision = ledger.resolve(args.rev)
        since = ledger.resolve(args.since) if args.since else None
        verification = Verification.open(ledger, revision, args.trust_root)
        verdict = verification.verdict(revision, since, proposal=args.proposal)
        last = verification.last_accepted(revision, since) if not verdict.ok else None
    for line in verdict.lines():
        print(line, file=out)
    if not verdict.ok or verdict.accepted is None:
        advice = verification.recovery(verdict, last, "the branch", proposal=args.proposal)
        if advice:
            print(f"{advice} See ledger/README.md, 'A way back'.", file=err)
        return 1
    print(f"ok: {revision} (sequence {verdict.accepted.sequence}) from trust root {verification.trust_root}", file=err)
    return 0


def render(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        ttl = dt.timedelta(seconds=parse_duration(args.head_ttl))
    except ValueError as error:
        raise UsageError(f"--head-ttl: {error}") from None
    required = auditors_required(args)
    pinned = tuple(keys.load_public(path) for path in args.auditor_keys)
    cosigning = Auditors(asking(list(args.auditors)), pinned, required) if args.auditors else None
    key = keys.load_private(args.key)
    bridge = _oonirun_link(err)
    with open_ledger(args) as ledger:
        revision = ledger.resolve(args.rev)
        verification = Verification.open(ledger, revision, args.trust_root)
        published = publish(verification, revision, key, args.out, dt.datetime.now(dt.UTC), ttl, cosigning, bridge)
        verification.save_checked()
    print(f"{published.feed_path} (sequence {published.sequence}): {published.note}", file=out)
    return 0


def _oonirun_link(err: TextIO) -> LinkSettings | None:
    """The OONI Run link to write beside the head, from the service's OPOS_OONIRUN_* settings (docs/oonirun.md).

    Without OPOS_OONIRUN_AUTHOR the feed is rendered all the same and the link is not written: said, not fatal.
    """
    try:
        return LinkSettings.from_environment(os.environ)
    except ValueError as error:
        print(f"note: {LINK} is not written: {error}", file=err)
        return None


def verify_feed(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    trusted = [keys.load_public(path) for path in args.key]
    try:
        data = args.file.read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {args.file}: {error.strerror}") from None
    verified = verify_envelope(data, trusted)
    if isinstance(verified.document, Head) and verified.document.expired(dt.datetime.now(dt.UTC), CLOCK_SKEW):
        print(f"{args.file}: the head expired at {verified.document.to_json()['expires']}", file=err)
        return 1
    print(json.dumps(json.loads(verified.payload), indent=2, ensure_ascii=False), file=out)
    print(f"ok: {verified.kind} signed by {verified.keyid}", file=err)
    return 0


def keygen(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    public = keys.generate(args.out)
    print(f"{args.out} (private, keep it secret) and {args.out}.pub", file=out)
    print(f"key id: {keys.key_id(public)}", file=out)
    return 0
