"""The main job on an embedded default: a demo ledger with real SSH-signed commits, rendered and checked.

The commits carry genuine SSHSIG signatures (namespace git) that `git verify-commit` accepts; they
are made in-process so the demo needs no git binary and no ssh-agent.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
from pathlib import Path
from typing import TextIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from opos.audit.auditing import AuditLog, audit, receive
from opos.cli._common import Commands, add_command
from opos.cli._demo_ledger import build_demo_ledger
from opos.cli._demo_service import serve_demo
from opos.eventlog.events import join_and
from opos.model import CommitHash, format_time
from opos.publish.site import Auditors, publish
from opos.signing import cosignature, keydoc, keys
from opos.signing.documents import Feed, Head, verify_envelope
from opos.trust.gitrepo import GitLedger
from opos.trust.verification import Verification


def register(commands: Commands) -> None:
    demo = add_command(
        commands, "demo", _demo,
        help="build a demo ledger with signed commits, render and verify its feed, serve it",
        description="Make a demo ledger repository with real SSH-signed commits, verify it, render its signed "
        "feed and verify that, printing each step. With --serve, then run the feed service (gunicorn on "
        "127.0.0.1) on the demo ledger, push one more signed commit through a webhook, and keep serving.",
    )  # fmt: skip
    demo.add_argument("--dir", type=Path, default=Path(".demo"), help="where to build it (default: .demo)")
    demo.add_argument("--serve", action="store_true", help="then run the feed service on it until Ctrl-C")
    demo.add_argument("--port", type=int, default=8080, help="the service's port with --serve (default: 8080)")


def _demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    return run_demo(args.dir, out, serve=args.serve, port=args.port)


def _demo_auditor(
    folder: Path, verification: Verification, head: CommitHash, feed_key: Ed25519PublicKey, now: dt.datetime
) -> Auditors:
    """The auditor the demo's key document names, cosigning in this process (as `opos auditor cosign` does) into
    the state directory its service shares later."""
    key = keys.load_private(folder / "auditor-key")
    log = AuditLog(folder / "auditor-state")

    def cosign(statement: cosignature.Statement, envelope: bytes, pinned: object, required: int) -> bytes:
        with log.locked():
            done = audit(receive(envelope, [feed_key]), key, log, lambda: (verification, head), now)
        return cosignature.combine(statement, [done.envelope])

    return Auditors(cosign)


def run_demo(folder: Path, out: TextIO, serve: bool = False, port: int = 8080) -> int:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    now = dt.datetime.now(dt.UTC)
    repo_path, log = build_demo_ledger(folder, now)
    print(f"1. Demo ledger with signed commits: {repo_path}", file=out)
    for line in log:
        print(f"     {line}", file=out)
    feed_key_path = folder / "feed-key"
    public = keys.load_public(Path(f"{feed_key_path}.pub"))
    site = folder / "site"
    with GitLedger(repo_path) as ledger:
        head = ledger.resolve("HEAD")
        verification = Verification.open(ledger, head, None)
        verification.require(head)
        print(f"2. Verified every commit from the trust root {verification.trust_root[:12]} to {head[:12]}", file=out)
        auditor = _demo_auditor(folder, verification, head, public, now)
        published = publish(verification, head, keys.load_private(feed_key_path), site, now, auditors=auditor)
    print(f"3. Rendered the signed feed into {site} (key {keys.key_id(public)}), cosigned by the demo's auditor "
          "(the key document asks for its cosignature):", file=out)  # fmt: skip
    for path in sorted(site.rglob("*.json")):
        print(f"     {path.relative_to(site)}  {path.stat().st_size} bytes", file=out)
    feed = verify_envelope(published.feed_path.read_bytes(), [public])
    head_document = verify_envelope((site / "v1" / "head.json").read_bytes(), [public]).document
    if not isinstance(feed.document, Feed) or not isinstance(head_document, Head):
        raise RuntimeError("the demo's site holds the wrong documents")
    chain = keydoc.chain([(site / "v1" / "keys" / f"{n}.json").read_bytes() for n in (1, 2)],
                         [keydoc.Key.of(keys.load_public(folder / "root-key.pub"))])  # fmt: skip
    print(f"4. Walked the key documents from the root key {folder / 'root-key.pub'}: version 1 names "
          f"feed-key-old, version {chain.version} rotates it to {chain.feed_keys[0].keyid}. Verified the feed and "
          f"the head with it:", file=out)  # fmt: skip
    print(
        f"     head: commit {head_document.commit[:12]}, sequence {head_document.sequence}, "
        f"expires {format_time(head_document.expires)}",
        file=out,
    )
    for entry in feed.document.entries:
        target = entry.instruction.target
        where = ",".join(target.countries + target.networks)
        print(
            f"     {entry.id}: {entry.instruction.kind} {entry.instruction.test} in {where}, "
            f"revision {entry.revision[:12]} signed by {entry.signer}"
            + (f", approved by {join_and(entry.approvers)}" if entry.approvers else ""),
            file=out,
        )
    if not serve:
        print("\nThe feed payload:", file=out)
        print(json.dumps(json.loads(feed.payload), indent=2, ensure_ascii=False), file=out)
        return 0

    return serve_demo(folder, repo_path, feed_key_path, port, out)
