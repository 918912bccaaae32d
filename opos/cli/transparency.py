"""For the public: read the event log from a clone (log), check a published feed against the history (audit)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import TextIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from opos.audit import bridge
from opos.audit.auditing import check_feed_key, difference, receive
from opos.audit.errors import AuditRefused
from opos.cli._common import Commands, add_command, add_repo, add_trust, moment, open_ledger, pinned_keys
from opos.errors import FetchFailed, OposError, RepositoryError, UsageError
from opos.eventlog.logindex import LogIndex, LogQuery, log_document, select
from opos.instructions import resources
from opos.model import format_time, parse_network
from opos.publish.site import feed_at
from opos.signing.documents import Head, verify_envelope
from opos.text import for_terminal
from opos.transport import HttpFetcher, Limits, Mirror
from opos.trust.ancestry import first_parent_steps
from opos.trust.verification import Verification

HEAD_WARNING = dt.timedelta(hours=6)


def register(commands: Commands) -> None:
    log_parser = add_command(
        commands, "log", log,
        help="the public event log of the ledger, from a clone",
        description="Print the ledger's event log (added, changed, removed, expired instructions), newest first, "
        "straight from a clone, after verifying its history. With --country and --network: the instructions that "
        "targeted that probe; with --since/--until, those whose window overlapped that period (--period window) or "
        "the events of that period (--period time).",
    )  # fmt: skip
    add_repo(log_parser)
    log_parser.add_argument("--rev", default="HEAD", help="the revision to read (default: HEAD)")
    add_trust(log_parser)
    log_parser.add_argument("--country", help="only instructions that target this country (e.g. IR)")
    log_parser.add_argument("--network", help="only instructions that target this network (e.g. AS197207)")
    log_parser.add_argument("--test", help="only instructions of this test")
    log_parser.add_argument("--instruction", help="only this instruction's history")
    log_parser.add_argument("--since", help="the start of the period (2026-11-01 or 2026-11-01T00:00:00Z)")
    log_parser.add_argument("--until", help="the end of the period (exclusive)")
    log_parser.add_argument(
        "--period", choices=("window", "time"), default="window",
        help="window: the instruction's window overlaps the period (default); time: the event's time",
    )  # fmt: skip
    log_parser.add_argument("--json", action="store_true", help="print {events, next} as /v1/log.json does")

    _register_audit(commands)


def _register_audit(commands: Commands) -> None:
    audit_parser = add_command(
        commands, "audit", audit,
        help="check that a published feed says exactly what the signed history says",
        description="Verify a feed envelope (a file or an http(s) URL) with the key, verify the clone's history up to "
        "the feed's commit, re-render the feed payload from the clone and compare byte for byte. Exit 0 when they "
        "match (saying how far the feed is behind the clone's HEAD, and, for a mirror's base URL, warning when its "
        "head expires within 6 hours), 1 (showing the difference) when they do not: the service signed something "
        "staff did not commit; 2 when no verdict could be had (an unreadable key or feed, a clone without the "
        "feed's commit). With --oonirun URL instead of a feed: check the OONI Run bridge's answer (a link or an engine "
        "descriptor URL) against the signed feed it names (docs/oonirun.md); no clone is needed.",
    )  # fmt: skip
    audit_parser.add_argument("feed", nargs="?", help="a feed file or URL (v1/feed.json or v1/feed/<commit>.json)")
    audit_parser.add_argument(
        "--oonirun", metavar="URL",
        help="the full URL of the bridge's link (…/api/v2/oonirun/links/<id>) or of an engine descriptor "
        "(…/engine-descriptor/<revision>): exit 0 when the answer is what its signed feed says, 1 (with the "
        "difference) when it is not, 2 when it could not be fetched or read",
    )  # fmt: skip
    audit_parser.add_argument("--meta", metavar="JSON", help="with --oonirun: the metadata to POST to an engine "
                              "descriptor (default: an unknown probe, as the engine sends it)")  # fmt: skip
    audit_parser.add_argument("--mirror", metavar="BASE", help="with --oonirun: where to fetch the signed feed "
                              "(BASE/v1/feed/<commit>.json; default: the URL's own origin)")  # fmt: skip
    audit_parser.add_argument("--key", action="append", default=[], type=Path, help="the feed public key (repeat)")
    audit_parser.add_argument(
        "--root-key", action="append", default=[], type=Path, dest="root_keys",
        help="a root key (.pub; repeat): accept the feed keys the ledger's key documents list at the feed's commit, "
        "their chain checked from these (give --key, --root-key or both)",
    )  # fmt: skip
    audit_parser.add_argument(
        "--since", metavar="COMMIT",
        help="the commit this monitor accepted before: the feed's commit must build on it (be on its first-parent "
        "chain's end); a feed that leaves it is history rewritten (exit 1)",
    )  # fmt: skip
    add_repo(audit_parser)
    add_trust(audit_parser)


def log(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:  # as the service's /v1/log.json reads them
        country = resources.parse_known_country(args.country) if args.country else None
        network = parse_network(args.network) if args.network else None
    except ValueError as error:
        raise UsageError(f"--country/--network: {error}") from None
    query = LogQuery(
        country=country, network=network, test=args.test, instruction=args.instruction,
        since=moment("--since", args.since), until=moment("--until", args.until), period=args.period, limit=10**9,
    )  # fmt: skip
    with open_ledger(args) as ledger:
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
        if not event.about_instruction:
            line = (
                f"{event.time}  {event.action:8} {event.summary}  sequence {event.sequence}, {event.revision[:12]} "
                f"{event.attribution}"
            )
            print(for_terminal(line), file=out)
            continue
        subject = event.subject
        target = subject["target"]
        where = " ".join(target["countries"] + target["networks"])
        line = (f"{event.time}  {event.action:8} {event.instruction}  ({subject['test']} in {where})  "
                f"sequence {event.sequence}, {event.revision[:12]} {event.attribution}: {event.message}")  # fmt: skip
        print(for_terminal(line), file=out)  # a commit message could carry escape sequences
    print(f"{len(events)} event(s)", file=err)
    return 0


def feed_bytes(location: str) -> bytes:
    """A feed from a file, a feed's URL, or a mirror's base URL (as `opos probe --mirror` takes it)."""
    if location.startswith(("http://", "https://")):
        try:
            mirror = Mirror.parse(location)
        except ValueError as error:
            raise UsageError(f"{location}: {error}") from None
        if mirror.url.endswith(".json"):
            base, _, name = mirror.url.rpartition("/")
            mirror = Mirror(base, mirror.host)
        else:
            name = "v1/feed.json"
        try:
            return HttpFetcher().get(mirror, name, Limits().feed_bytes).body
        except FetchFailed as error:
            raise UsageError(f"cannot fetch {location}: {error}") from None
    try:
        return Path(location).read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {location}: {error.strerror}") from None


def audit(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Exit 0: the feed is the ledger; 1: it is not (a forgery signed with the key); 2: no verdict could be had."""
    if args.oonirun:
        return _audit_bridge(args, out)
    if not args.feed:
        raise UsageError("give the feed to audit (a file or URL), or --oonirun URL")
    trusted, roots = pinned_keys(args.key, args.root_keys, "--key")
    try:
        verified = receive(feed_bytes(args.feed), trusted, roots)
    except AuditRefused as error:
        raise UsageError(f"{args.feed}: {error} (give the feed, v1/feed.json or v1/feed/<commit>.json, and the key "
                         "that signed it)") from None  # fmt: skip
    commit = verified.feed.commit
    with open_ledger(args) as ledger:
        try:
            ledger.commit(commit)
        except RepositoryError:
            raise UsageError(f"the clone {args.repo} does not have {commit}: fetch the ledger first") from None
        if not verified.signed:
            try:
                trusted = check_feed_key(verified, ledger)  # the feed keys of its commit, from the roots
            except AuditRefused as refused:
                print(f"REFUSED: {refused}", file=out)
                return 1
        since = ledger.resolve(args.since) if args.since else None
        rendered = feed_at(Verification.open(ledger, commit, args.trust_root), commit, since)
        behind = first_parent_steps(ledger, ledger.resolve("HEAD"), commit)
    if rendered == verified.payload:
        print(f"ok: the feed at {commit} (sequence {verified.feed.sequence}) is exactly what the signed "
              f"history says, byte for byte", file=out)  # fmt: skip
        if behind:
            print(f"behind by {behind} commit(s): the clone's HEAD is further along the ledger than this feed; a "
                  "mirror that stays behind is not being updated", file=out)  # fmt: skip
        _warn_if_head_expires(args.feed, trusted, err)
        return 0
    print(f"MISMATCH: the feed signed for {commit} differs from the signed history:", file=out)
    print(difference(rendered, verified.payload), file=out)
    return 1


def _audit_bridge(args: argparse.Namespace, out: TextIO) -> int:
    if args.feed or args.root_keys or not args.key:
        raise UsageError("--oonirun takes the bridge's URL and --key FEED.pub (the feed keys); no feed, no --root-key")
    trusted, _ = pinned_keys(args.key, [], "--key")
    try:
        asked = bridge.Asked.parse(args.oonirun, args.meta, args.mirror)
    except ValueError as error:
        raise UsageError(str(error)) from None
    try:
        verdict = bridge.audit(asked, trusted, HttpFetcher())
    except FetchFailed as error:
        raise UsageError(f"no verdict: {error}") from None
    except AuditRefused as refused:
        print(f"REFUSED: {refused}", file=out)
        return 1
    if verdict.difference:
        print(f"MISMATCH: the bridge's answer is not what the signed feed of {verdict.commit} (sequence "
              f"{verdict.sequence}) says:\n{verdict.difference}", file=out)  # fmt: skip
        return 1
    print(f"ok: the bridge's answer is what the signed feed of {verdict.commit} (sequence {verdict.sequence}) says",
          file=out)  # fmt: skip
    return 0


def _warn_if_head_expires(location: str, trusted: list[Ed25519PublicKey], err: TextIO) -> None:
    """For a mirror's base URL: a warning when its head expires within HEAD_WARNING (it is not being re-issued)."""
    if not location.startswith(("http://", "https://")) or location.endswith(".json"):
        return
    try:
        mirror = Mirror.parse(location)
        data = HttpFetcher().get(mirror, "v1/head.json", Limits().head_bytes).body
        head = verify_envelope(data, trusted).document
    except (ValueError, OposError) as error:
        print(f"warning: the mirror's head could not be checked: {error}", file=err)
        return
    if isinstance(head, Head):
        left = head.expires - dt.datetime.now(dt.UTC)
        if left < HEAD_WARNING:
            hours = max(0.0, left.total_seconds() / 3600)
            print(f"warning: the mirror's head expires at {format_time(head.expires)} (in {hours:.1f} h): it is "
                  "not being re-issued; probes that see only this mirror fall back to their cache after that",
                  file=err)  # fmt: skip
